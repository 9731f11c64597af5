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

import numpy as np
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


class MahalanobisDetector:
    """Class-conditional Gaussians with a shared covariance (Lee et al. 2018), on penultimate features.

    ``fit`` learns ``classes_``, ``means_`` (C, D) and ``precision_`` (D, D): the pseudo-inverse of the
    maximum-likelihood within-class covariance ``sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T / N``
    (the reference code's ``EmpiricalCovariance`` on class-centred features). ``score`` is
    ``max_c -(x - mu_c)^T precision (x - mu_c)``, higher = more in-distribution. pytorch-ood's
    ``Mahalanobis`` omits the ``/ N`` and a factor 2: its outlier score equals ``-score / (2 N)``.
    No input preprocessing (the ODIN-style perturbation needs gradients).
    """

    def fit(self, features: np.ndarray, labels: np.ndarray) -> MahalanobisDetector:
        x = _as_matrix(features, "features")
        y = np.asarray(labels)
        if y.shape != (x.shape[0],):
            raise UserError(f"labels have shape {y.shape}, expected ({x.shape[0]},)",
                            where="MahalanobisDetector.fit", fix="pass one class label per feature row")
        self.classes_, index = np.unique(y, return_inverse=True)
        counts = np.bincount(index, minlength=len(self.classes_)).astype(np.float64)
        sums = np.zeros((len(self.classes_), x.shape[1]))
        np.add.at(sums, index, x)
        self.means_ = sums / counts[:, None]
        centred = x - self.means_[index]
        covariance = centred.T @ centred / x.shape[0]
        self.precision_ = np.linalg.pinv(covariance, hermitian=True)
        self.n_features_in_ = x.shape[1]
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """``-min_c`` squared Mahalanobis distance to the class means; higher = more in-distribution."""
        _check_fitted(self, "precision_")
        x = _as_matrix(features, "features")
        _check_dims(x, self.n_features_in_, "MahalanobisDetector")
        # d2[i, c] = x P x - 2 x P mu_c + mu_c P mu_c, without an (n, C, D) intermediate.
        xp = x @ self.precision_
        quad_x = np.einsum("ij,ij->i", xp, x)
        quad_mu = np.einsum("cj,jk,ck->c", self.means_, self.precision_, self.means_)
        d2 = quad_x[:, None] - 2.0 * xp @ self.means_.T + quad_mu[None, :]
        return -d2.min(axis=1)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class KNNDetector:
    """Deep nearest neighbours (Sun et al. 2022): distance from the L2-normalized feature to its k-th
    nearest L2-normalized training feature; ``score`` is that distance negated (higher = more ID).

    ``k=50`` is the paper's CIFAR-10 choice (200 for CIFAR-100, 1000 for ImageNet). Scoring the fitted
    samples themselves counts each as its own nearest neighbour, as in the reference code.
    """

    def __init__(self, k: int = 50) -> None:
        self.k = k

    def fit(self, features: np.ndarray) -> KNNDetector:
        from sklearn.neighbors import NearestNeighbors

        x = _as_matrix(features, "features")
        if not isinstance(self.k, (int, np.integer)) or not 1 <= self.k <= x.shape[0]:
            raise UserError(f"k={self.k} must be an integer between 1 and the number of fitted samples ({x.shape[0]})",
                            where="KNNDetector(k=...)", fix="lower k or fit on more in-distribution features")
        self.n_features_in_ = x.shape[1]
        self.index_ = NearestNeighbors(n_neighbors=self.k).fit(_l2_normalize(x))
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """Negative distance to the k-th nearest normalized training feature; higher = more ID."""
        _check_fitted(self, "index_")
        x = _as_matrix(features, "features")
        _check_dims(x, self.n_features_in_, "KNNDetector")
        distances, _ = self.index_.kneighbors(_l2_normalize(x), n_neighbors=self.k)
        return -distances[:, -1]


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
