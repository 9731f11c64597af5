"""OOD detector scores over cached logits and features.

Every score here is **higher = more in-distribution** (the sign OpenOOD uses for its ``conf``);
``assay.stats.ranking`` turns them into AUROC/AUPR/FPR@95TPR with OOD as the positive class.
pytorch-ood returns *outlier* scores (higher = OOD): ours are their negatives, up to the scale noted
per detector.

Logit-based, pure functions of ``(n, C)`` logits:

* :func:`msp` — maximum softmax probability (Hendrycks & Gimpel 2017);
* :func:`max_logit` — maximum logit (Hendrycks et al. 2022);
* :func:`energy` — ``T * logsumexp(logits / T)``, the negative free energy (Liu et al. 2020, T = 1);
* :func:`neg_entropy` — ``sum_k p_k log p_k``, the negative predictive entropy.

Feature-based, with the scikit-learn contract (``fit`` learns ``*_`` attributes and returns self):

* :class:`MahalanobisDetector` — class means, shared covariance (Lee et al. 2018);
* :class:`KNNDetector` — distance to the k-th nearest L2-normalized training feature (Sun et al. 2022);
* :class:`ViMDetector` — virtual-logit matching with the last layer's weights (Wang et al. 2022).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import logsumexp

from assay.errors import UserError
from assay.stats.probabilities import log_softmax

__all__ = [
    "LOGIT_SCORES",
    "KNNDetector",
    "MahalanobisDetector",
    "ViMDetector",
    "energy",
    "max_logit",
    "msp",
    "neg_entropy",
]


def _as_matrix(values: np.ndarray, name: str, *, min_cols: int = 1) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < min_cols:
        raise UserError(f"{name} must be a 2-D array (samples x dims) with at least {min_cols} column(s), "
                        f"got shape {array.shape}", where=name, fix="flatten per-sample outputs to one row each")
    if not np.all(np.isfinite(array)):
        raise UserError(f"{name} contains NaN or infinite values", where=name,
                        fix="check the model's outputs for overflow or NaN inputs")
    return array


def msp(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax probability (Hendrycks & Gimpel 2017). Higher = more in-distribution."""
    z = _as_matrix(logits, "logits")
    return np.exp(log_softmax(z).max(axis=1))


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Maximum logit (Hendrycks et al. 2022, "Scaling OOD detection"). Higher = more in-distribution."""
    return _as_matrix(logits, "logits").max(axis=1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T * logsumexp(logits / T)`` (Liu et al. 2020). Higher = more in-distribution."""
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature}", where="energy(temperature=...)")
    z = _as_matrix(logits, "logits")
    return temperature * logsumexp(z / temperature, axis=1)


def neg_entropy(logits: np.ndarray) -> np.ndarray:
    """Negative Shannon entropy of the softmax, ``sum_k p_k log p_k`` (nats). Higher = more in-distribution."""
    log_p = log_softmax(_as_matrix(logits, "logits"))
    return (np.exp(log_p) * log_p).sum(axis=1)


LOGIT_SCORES = {"msp": msp, "max_logit": max_logit, "energy": energy, "neg_entropy": neg_entropy}


def _check_fitted(detector: object, attribute: str) -> None:
    if not hasattr(detector, attribute):
        raise UserError(f"{type(detector).__name__} is not fitted", where=f"{type(detector).__name__}.score",
                        fix="call .fit(...) on in-distribution training features first")


def _check_dims(features: np.ndarray, expected: int, name: str) -> None:
    if features.shape[1] != expected:
        raise UserError(f"features have {features.shape[1]} dimensions but the detector was fitted on {expected}",
                        where=f"{name}.score", fix="score features from the same layer the detector was fitted on")


# Feature detectors convert features to float64 a block of rows at a time (features are usually float32,
# and a float64 copy of 1M x 2048 features alone is 16 GB); KNN holds one block of float32 similarities.
_FLOAT64_BLOCK_BYTES = 32 * 2**20
_SIMILARITY_BLOCK_BYTES = 256 * 2**20


def _as_feature_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """``_as_matrix`` that keeps valid float32 input as float32 (no full float64 copy)."""
    array = np.asarray(values)
    if array.dtype == np.float32 and array.ndim == 2 and array.size and np.isfinite(array).all():
        return array
    return _as_matrix(array, name)  # float64 passes through uncopied; anything else converted or rejected


def _float64_blocks(x: np.ndarray, rows: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """Consecutive row blocks of ``x`` as float64 (views when ``x`` is float64: never write to them)."""
    rows = rows or max(1, _FLOAT64_BLOCK_BYTES // (8 * x.shape[1]))
    for start in range(0, x.shape[0], rows):
        block = slice(start, min(start + rows, x.shape[0]))
        yield block, np.asarray(x[block], dtype=np.float64)


class MahalanobisDetector:
    """Class-conditional Gaussians with a shared covariance (Lee et al. 2018), on penultimate features.

    ``fit`` learns ``classes_``, ``means_`` (C, D) and ``precision_`` (D, D): the pseudo-inverse of the
    maximum-likelihood within-class covariance ``sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T / N``
    (the reference code's ``EmpiricalCovariance`` on class-centred features). ``score`` is
    ``max_c -(x - mu_c)^T precision (x - mu_c)``, higher = more in-distribution. pytorch-ood's
    ``Mahalanobis`` omits the ``/ N`` and a factor 2: its outlier score equals ``-score / (2 N)``.
    No input preprocessing (the ODIN-style perturbation needs gradients). Arithmetic is float64, done a
    block of rows at a time, so float32 features are never copied whole.
    """

    def fit(self, features: np.ndarray, labels: np.ndarray) -> MahalanobisDetector:
        x = _as_feature_matrix(features, "features")
        y = np.asarray(labels)
        if y.shape != (x.shape[0],):
            raise UserError(f"labels have shape {y.shape}, expected ({x.shape[0]},)",
                            where="MahalanobisDetector.fit", fix="pass one class label per feature row")
        self.classes_, index = np.unique(y, return_inverse=True)
        index = index.ravel()
        n_classes = len(self.classes_)
        counts = np.bincount(index, minlength=n_classes).astype(np.float64)
        sums = np.zeros((n_classes, x.shape[1]))
        for block, rows in _float64_blocks(x):
            # Class sums as a sparse one-hot product (np.add.at is ~7x slower).
            one_hot = csr_matrix((np.ones(len(rows)), (index[block], np.arange(len(rows)))),
                                 shape=(n_classes, len(rows)))
            sums += one_hot @ rows
        self.means_ = sums / counts[:, None]
        scatter = np.zeros((x.shape[1], x.shape[1]))
        for block, rows in _float64_blocks(x):
            centred = rows - self.means_[index[block]]
            scatter += centred.T @ centred
        self.precision_ = np.linalg.pinv(scatter / x.shape[0], hermitian=True)
        self.n_features_in_ = x.shape[1]
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """``-min_c`` squared Mahalanobis distance to the class means; higher = more in-distribution."""
        _check_fitted(self, "precision_")
        x = _as_feature_matrix(features, "features")
        _check_dims(x, self.n_features_in_, "MahalanobisDetector")
        # d2[i, c] = x P x - 2 x P mu_c + mu_c P mu_c, without an (n, C, D) intermediate.
        quad_mu = np.einsum("cj,jk,ck->c", self.means_, self.precision_, self.means_)
        scores = np.empty(x.shape[0])
        for block, rows in _float64_blocks(x):
            xp = rows @ self.precision_
            quad_x = np.einsum("ij,ij->i", xp, rows)
            d2 = quad_x[:, None] - 2.0 * xp @ self.means_.T + quad_mu[None, :]
            scores[block] = -d2.min(axis=1)
        return scores


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


_FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def _float32_dot_error_bound(n_dims: int) -> float:
    """Bound on |float32 dot product - exact| for vectors of norm <= 1 rounded to float32: the classic
    ``gamma_n = n u / (1 - n u)`` for any summation order (Higham 2002, Sec. 3.1), plus the input and
    offset roundings; generous by a few units of u."""
    nu = (n_dims + 8) * _FLOAT32_UNIT_ROUNDOFF
    return nu / (1.0 - nu)


class KNNDetector:
    """Deep nearest neighbours (Sun et al. 2022): distance from the L2-normalized feature to its k-th
    nearest L2-normalized training feature; ``score`` is that distance negated (higher = more ID).

    ``k=50`` is the paper's CIFAR-10 choice (200 for CIFAR-100, 1000 for ImageNet). Scoring the fitted
    samples themselves counts each as its own nearest neighbour, as in the reference code.

    Exact search, at float32 matrix-product speed: for unit vectors the distance falls as the dot
    product rises, so queries are compared with all training rows in float32 blocks, and only the few
    similarities within float32's rounding bound of each row's k-th largest are recomputed in float64.
    Scores therefore equal float64 brute force (scikit-learn ``NearestNeighbors``) up to float64
    rounding; ``fit`` keeps the normalized training features (``train_features_``, float64) and a
    float32 copy, and ``score`` holds one block of similarities (<= 256 MB) at a time.
    """

    # Rows whose k-th neighbour is ambiguous among this many near-ties (duplicated training features)
    # are recomputed densely in float64 instead of candidate by candidate.
    _MAX_TIES = 64

    def __init__(self, k: int = 50) -> None:
        self.k = k

    def _check_k(self, n_train: int) -> None:
        if not isinstance(self.k, (int, np.integer)) or not 1 <= self.k <= n_train:
            raise UserError(f"k={self.k} must be an integer between 1 and the number of fitted samples ({n_train})",
                            where="KNNDetector(k=...)", fix="lower k or fit on more in-distribution features")

    def fit(self, features: np.ndarray) -> KNNDetector:
        x = _as_feature_matrix(features, "features")
        self._check_k(x.shape[0])
        train: np.ndarray = np.empty(x.shape)  # (numpy's stubs infer a 0-d shape from x.shape's tuple[Any, ...])
        for block, rows in _float64_blocks(x):
            train[block] = _l2_normalize(rows)
        self.train_features_ = train
        # Squared distance = |q|^2 + |t|^2 - 2 q.t = |q|^2 + 1 - 2 (q.t + offset), offset = (1 - |t|^2) / 2:
        # 0 up to rounding for unit rows, 1/2 for all-zero rows, which normalization leaves at zero.
        self._offsets = (1.0 - np.einsum("ij,ij->i", train, train)) / 2.0
        self._train32 = train.astype(np.float32)
        self._short_rows = np.flatnonzero(self._offsets > _FLOAT32_UNIT_ROUNDOFF)
        self.n_features_in_ = x.shape[1]
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """Negative distance to the k-th nearest normalized training feature; higher = more ID."""
        _check_fitted(self, "train_features_")
        x = _as_feature_matrix(features, "features")
        _check_dims(x, self.n_features_in_, "KNNDetector")
        n_train = self.train_features_.shape[0]
        self._check_k(n_train)
        rows = max(1, min(x.shape[0], _SIMILARITY_BLOCK_BYTES // (4 * n_train)))
        similarities = np.empty((rows, n_train), dtype=np.float32)  # reused by every block
        distances = np.empty(x.shape[0])
        for block, raw in _float64_blocks(x, rows):
            queries = _l2_normalize(raw)
            kth = self._kth_largest_similarity(queries, similarities[: len(queries)])
            squared = np.einsum("ij,ij->i", queries, queries) + 1.0 - 2.0 * kth
            distances[block] = np.sqrt(np.maximum(squared, 0.0))
        return -distances

    def _kth_largest_similarity(self, queries: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Per query row, the exact (float64) k-th largest of ``q . t_j + offset_j`` over training rows."""
        k, train, offsets = self.k, self.train_features_, self._offsets
        n_rows, n_train = sims.shape
        np.matmul(queries.astype(np.float32), self._train32.T, out=sims)
        if self._short_rows.size:
            sims[:, self._short_rows] += offsets[self._short_rows].astype(np.float32)
        # Two float32 similarities whose exact values are in the other order differ by at most this.
        margin = 2.0 * _float32_dot_error_bound(train.shape[1])

        # 1. A lower bound on each row's k-th largest float32 similarity: the k-th largest of the maxima
        #    of disjoint column groups (k groups hold k distinct elements). ~8 groups per neighbour make
        #    the bound nearly tight, so ~k candidates clear it.
        width = max(1, n_train // (8 * k))
        n_groups = n_train // width
        grouped = sims[:, : n_groups * width].reshape(n_rows, n_groups, width)
        if width == 1:
            group_max = sims
        else:
            group_max = np.concatenate([grouped.max(axis=2), sims[:, n_groups * width:]], axis=1)
        threshold = np.partition(group_max, -k, axis=1)[:, -k].astype(np.float64) - margin  # float64: no round-up

        # 2. Candidates: all similarities >= threshold, looked for only in groups whose maximum reaches it
        #    (the remainder columns past the last full group are groups of one).
        row_of, group = np.nonzero(group_max >= threshold[:, None])
        dense = np.bincount(row_of, minlength=n_rows) > 2 * k + 32  # expected ~k; ties everywhere: step 5
        keep = ~dense[row_of]
        row_of, group = row_of[keep], group[keep]
        full = group < n_groups
        values = grouped[row_of[full], group[full]]
        pair, member = np.nonzero(values >= threshold[row_of[full], None])
        tail_rows, tail_cols = row_of[~full], n_groups * width + group[~full] - n_groups
        rows = np.concatenate([row_of[full][pair], tail_rows])
        cols = np.concatenate([group[full][pair] * width + member, tail_cols])
        vals = np.concatenate([values[pair, member], sims[tail_rows, tail_cols]]).astype(np.float64)

        # 3. Each row's float32 k-th largest; elements more than `margin` above it are exactly above the
        #    true k-th, elements more than `margin` below exactly below, so the true k-th is the
        #    (k - n_above)-th largest exact value among the near-ties in between.
        order = np.lexsort((-vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        first = np.searchsorted(rows, np.arange(n_rows))
        easy = np.flatnonzero(~dense)
        kth32 = np.full(n_rows, np.nan)
        kth32[easy] = vals[first[easy] + k - 1]
        n_above = np.bincount(rows[vals > kth32[rows] + margin], minlength=n_rows)
        tied = np.abs(vals - kth32[rows]) <= margin

        # 4. The near-ties (usually one or two per row) in float64.
        dense |= np.bincount(rows[tied], minlength=n_rows) > self._MAX_TIES
        tied &= ~dense[rows]
        tie_rows, tie_cols = rows[tied], cols[tied]
        exact = np.empty(tie_rows.size)
        for start in range(0, tie_rows.size, 4096):
            part = slice(start, start + 4096)
            exact[part] = (np.einsum("ij,ij->i", queries[tie_rows[part]], train[tie_cols[part]])
                           + offsets[tie_cols[part]])
        order = np.lexsort((-exact, tie_rows))
        tie_rows, exact = tie_rows[order], exact[order]
        result = np.empty(n_rows)
        easy = np.flatnonzero(~dense)
        result[easy] = exact[np.searchsorted(tie_rows, easy) + k - 1 - n_above[easy]]

        # 5. Rows with heavy ties: all similarities in float64, as brute force does.
        hard = np.flatnonzero(dense)
        step = max(1, _SIMILARITY_BLOCK_BYTES // (8 * n_train))
        for start in range(0, hard.size, step):
            chunk = hard[start:start + step]
            exact_rows = queries[chunk] @ train.T + offsets
            result[chunk] = np.partition(exact_rows, -k, axis=1)[:, -k]
        return result


class ViMDetector:
    """Virtual-logit matching (Wang et al. 2022): energy minus the scaled norm of the feature's residual
    outside the principal subspace of the training features; higher = more in-distribution.

    Needs the classifier's last layer ``logits = features @ weight.T + bias``. Features are centred at
    ``u = -pinv(weight) @ bias``; the principal subspace is the top ``dim`` eigenvectors of the
    uncentred covariance ``X^T X / N`` of ``features - u``; ``alpha_`` = mean max-logit / mean residual
    norm on the fitted data. ``dim=None`` follows the reference code: 1000 for D >= 2048, 512 for
    D >= 768, else D // 2. Equals minus pytorch-ood's ``ViM`` outlier score.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim

    def fit(self, features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> ViMDetector:
        x = _as_matrix(features, "features", min_cols=2)
        w = _as_matrix(weight, "weight")
        b = np.asarray(bias, dtype=np.float64)
        n_dims = x.shape[1]
        if w.shape[1] != n_dims or b.shape != (w.shape[0],):
            raise UserError(f"last layer weight {w.shape} / bias {b.shape} do not match features with {n_dims} dims",
                            where="ViMDetector.fit", fix="pass the final linear layer as weight (C, D) and bias (C,)")
        dim = self.dim
        if dim is None:
            dim = 1000 if n_dims >= 2048 else 512 if n_dims >= 768 else n_dims // 2
        if not 1 <= dim < n_dims:
            raise UserError(f"dim={dim} must lie in [1, {n_dims - 1}] for {n_dims}-dimensional features",
                            where="ViMDetector(dim=...)", fix="pass a principal-subspace size below the feature size")
        self.dim_, self.weight_, self.bias_ = dim, w, b
        self.origin_ = -np.linalg.pinv(w) @ b
        centred = x - self.origin_
        eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / x.shape[0])  # ascending
        self.null_space_ = eigenvectors[:, : n_dims - dim]
        residual = np.linalg.norm(centred @ self.null_space_, axis=1)
        self.alpha_ = float((x @ w.T + b).max(axis=1).mean() / residual.mean())
        self.n_features_in_ = n_dims
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """``logsumexp(logits) - alpha * ||(x - u) projected on the null space||``; higher = more ID."""
        _check_fitted(self, "alpha_")
        x = _as_matrix(features, "features")
        _check_dims(x, self.n_features_in_, "ViMDetector")
        logits = x @ self.weight_.T + self.bias_
        virtual_logit = self.alpha_ * np.linalg.norm((x - self.origin_) @ self.null_space_, axis=1)
        return logsumexp(logits, axis=1) - virtual_logit
