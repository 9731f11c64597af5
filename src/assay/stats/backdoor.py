"""Backdoor and data-poisoning statistics over arrays: spectral signatures, activation clustering, the MAD
anomaly index and STRIP's entropy statistics.

- Spectral signatures (Tran et al. 2018, "Spectral Signatures in Backdoor Attacks"): within one class, the
  squared projection of the centred features on their top right singular vector; the top ``1.5 * eps`` of
  the class (eps = the poisoned share one guards against) are flagged.
- Activation clustering (Chen et al. 2018, "Detecting Backdoor Attacks on Deep Neural Networks by Activation
  Clustering"): within one class, the features reduced to about 10 dimensions and split by 2-means; a
  poisoned class splits into a clear (high silhouette) minority cluster of the poisoned items.
- MAD anomaly index (Wang et al. 2019, "Neural Cleanse", sec. IV): ``|x - median| / (1.4826 * MAD)``;
  a class whose index exceeds 2 on the suspicious side is an outlier (1.4826 makes the MAD a consistent
  estimate of a normal standard deviation).
- STRIP (Gao et al. 2019, "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks"): an input
  superimposed with many clean inputs keeps a low prediction entropy when a trigger dominates; the
  threshold is the FRR quantile of a normal fitted to clean inputs' entropies.

Class-level decisions compare each class's statistic with the other classes' by the MAD anomaly index, so a
feature space that is merely anisotropic in every class does not flag every class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAD_CONSISTENCY", "ActivationClusters", "SpectralSignatures", "activation_clustering",
           "beyond_reference_p_value", "entropy_bits", "kmeans2", "mad_anomaly_index", "reduce_features",
           "silhouette_two_clusters", "spectral_scores", "spectral_signatures", "strip_blend", "strip_entropy",
           "strip_threshold"]

#: 1 / Phi^-1(3/4): scales the MAD to a consistent estimate of a normal standard deviation.
MAD_CONSISTENCY = 1.4826
#: Entropies (bits) below this count as this much on the log scale of :func:`strip_threshold`.
ENTROPY_FLOOR = 1e-6


def mad_anomaly_index(values: np.ndarray) -> np.ndarray:
    """Neural Cleanse's anomaly index of each value: ``|x - median| / (1.4826 * MAD)``.

    With a zero MAD (half the values equal the median) values at the median score 0 and the others inf."""
    x = np.asarray(values, dtype=np.float64)
    median = np.median(x)
    deviation = np.abs(x - median)
    mad = MAD_CONSISTENCY * np.median(deviation)
    if mad == 0:
        return np.where(deviation == 0, 0.0, np.inf)
    return deviation / mad


def spectral_scores(features: np.ndarray) -> np.ndarray:
    """Tran et al.'s outlier score of each row: the squared projection of the centred features on their top
    right singular vector."""
    centred = np.asarray(features, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    if centred.shape[0] < 2 or not np.any(centred):
        return np.zeros(centred.shape[0])
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[0]) ** 2


@dataclass
class SpectralSignatures:
    """Per-sample scores and flags (Tran et al.'s top ``multiplier * eps`` of each class), and per class, when a
    clean reference set (the evaluation data) is given: the share of training items scoring above every
    reference item of the class (projected on the training direction), the share expected of exchangeable
    clean data, ``1 / (m + 1)`` for m reference items, and the one-sided binomial p-value of the excess.
    ``suspect``: classes whose excess is significant at ``alpha`` Bonferroni-corrected over the classes."""

    scores: np.ndarray
    flagged: np.ndarray
    classes: np.ndarray
    beyond_share: np.ndarray
    expected_share: np.ndarray
    p_value: np.ndarray
    suspect: np.ndarray
    settings: dict[str, float | int]


def spectral_signatures(features: np.ndarray, labels: np.ndarray, *, eps: float = 0.05, multiplier: float = 1.5,
                        reference_features: np.ndarray | None = None, reference_labels: np.ndarray | None = None,
                        alpha: float = 0.01, seed: int = 0, min_class_size: int = 10) -> SpectralSignatures:
    """Spectral signatures per class (Tran et al. 2018): flag the ``ceil(multiplier * eps * n_k)`` highest
    scores of each class with at least ``min_class_size`` items (the paper removes 1.5 eps of each class).

    The paper has no class-level test (it removes items from every class); with a clean reference set this
    adds one: poisoned items lie further out along the top direction than any clean item of the class. The
    direction is fitted on one seeded half of the class and scores the other half and the reference, so a clean
    held item is exchangeable with a reference item; the count ``c`` of the ``n`` held items beyond all ``m``
    reference items then has the exact tail ``P(C >= c) = C(n, c) / C(n + m, c)`` (the top ``c`` of the pooled
    ranking all held). The two halves' p-values are combined by Bonferroni (``2 * min``). (A binomial test
    against 1/(m+1) per item, used first, ignored that every item is compared with the same maximum: on clean
    simulated classes it gave p < 0.01 in 15 % of runs.)"""

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if not 0 < eps < 1 or multiplier <= 0:
        raise ValueError("eps must lie in (0, 1) and multiplier be positive")
    scores = np.zeros(len(labels))
    flagged = np.zeros(len(labels), dtype=bool)
    classes = np.unique(labels)
    beyond = np.full(len(classes), np.nan)
    expected = np.full(len(classes), np.nan)
    p_value = np.full(len(classes), np.nan)
    for j, k in enumerate(classes):
        rows = np.flatnonzero(labels == k)
        if rows.size < min_class_size:
            continue
        centre = features[rows].mean(axis=0)
        centred = features[rows] - centre
        if not np.any(centred):
            continue
        direction = np.linalg.svd(centred, full_matrices=False)[2][0]
        s = (centred @ direction) ** 2
        scores[rows] = s
        top = min(rows.size - 1, math.ceil(multiplier * eps * rows.size))
        flagged[rows[np.argsort(-s, kind="stable")[:top]]] = True
        if reference_features is None or reference_labels is None:
            continue
        ref = np.asarray(reference_features, dtype=np.float64)[np.asarray(reference_labels) == k]
        if len(ref) == 0:
            continue
        # Cross-fitted: the direction fitted on one half scores the other half and the reference, so a clean
        # training item is exchangeable with a reference item (a direction fitted on the items it scores
        # overstates their spread along it).
        fold = np.random.default_rng(seed + int(j)).permutation(rows.size) % 2
        count, half_p = 0, []
        for f in (0, 1):
            fit, held = features[rows[fold != f]], features[rows[fold == f]]
            fit_centre = fit.mean(axis=0)
            fit_dir = np.linalg.svd(fit - fit_centre, full_matrices=False)[2][0]
            held_scores = ((held - fit_centre) @ fit_dir) ** 2
            c = int((held_scores > (((ref - fit_centre) @ fit_dir) ** 2).max()).sum())
            count += c
            half_p.append(beyond_reference_p_value(c, len(held), len(ref)))
        beyond[j], expected[j] = count / rows.size, 1.0 / (len(ref) + 1)
        p_value[j] = min(1.0, 2.0 * min(half_p))
    with np.errstate(invalid="ignore"):
        suspect = p_value < alpha / max(1, int(np.isfinite(p_value).sum()))
    return SpectralSignatures(scores, flagged, classes, beyond, expected, p_value, suspect,
                              {"eps": eps, "multiplier": multiplier, "alpha": alpha, "seed": seed})


def beyond_reference_p_value(count: int, n: int, m: int) -> float:
    """P(at least ``count`` of ``n`` items exceed the maximum of ``m`` exchangeable reference items) =
    C(n, count) / C(n + m, count): the top ``count`` of the pooled ranking are all among the ``n``."""
    if count <= 0:
        return 1.0
    if count > n:
        return 0.0
    log_p = (math.lgamma(n + 1) - math.lgamma(n - count + 1)
             - math.lgamma(n + m + 1) + math.lgamma(n + m - count + 1))
    return float(math.exp(log_p))


def reduce_features(features: np.ndarray, n_components: int = 10, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Features reduced to ``n_components`` dimensions (PCA, or FastICA as Chen et al. do) for clustering."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    k = min(n_components, x.shape[0] - 1, x.shape[1])
    if k < 1:
        return x
    if method == "ica":
        import warnings

        from sklearn.decomposition import FastICA

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA's convergence warnings on near-degenerate classes
            return np.asarray(FastICA(n_components=k, random_state=seed, whiten="unit-variance").fit_transform(x))
    if method != "pca":
        raise ValueError(f"unknown reduction {method!r}")
    return x @ _pca_basis(x, k)


def kmeans2(x: np.ndarray, *, seed: int = 0, restarts: int = 10, iterations: int = 100) -> np.ndarray:
    """2-means (Lloyd's algorithm, k-means++ seeding, best of ``restarts`` by inertia): labels 0/1."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    best, best_inertia = np.zeros(n, dtype=np.int64), np.inf
    if n < 2:
        return best
    for _ in range(restarts):
        first = x[rng.integers(n)]
        d2 = ((x - first) ** 2).sum(axis=1)
        if d2.sum() == 0:
            return best
        second = x[rng.choice(n, p=d2 / d2.sum())]
        centres = np.stack([first, second])
        assign = np.zeros(n, dtype=np.int64)
        for step in range(iterations):
            dist = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
            new = dist.argmin(axis=1)
            if step and np.array_equal(new, assign):
                break
            assign = new
            for c in (0, 1):
                if np.any(assign == c):
                    centres[c] = x[assign == c].mean(axis=0)
        inertia = ((x - centres[assign]) ** 2).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = assign.copy(), inertia
    return best


def silhouette_two_clusters(x: np.ndarray, assign: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw 1987) of a two-cluster partition, Euclidean; 0 when a cluster is empty.
    Items alone in their cluster score 0, as scikit-learn's ``silhouette_score`` does."""
    x = np.asarray(x, dtype=np.float64)
    assign = np.asarray(assign)
    if np.unique(assign).size < 2:
        return 0.0
    from scipy.spatial.distance import cdist

    dist = cdist(x, x)
    sizes = np.array([(assign == c).sum() for c in (0, 1)])
    sums = np.stack([dist[:, assign == c].sum(axis=1) for c in (0, 1)], axis=1)
    own = assign.astype(np.int64)
    own_size = sizes[own]
    a = sums[np.arange(len(x)), own] / np.maximum(own_size - 1, 1)
    b = sums[np.arange(len(x)), 1 - own] / sizes[1 - own]
    s = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


@dataclass
class ActivationClusters:
    """Per class: the smaller cluster's share of the training items and its silhouette; with a clean reference
    set, the share of reference items nearer the smaller cluster's centre and the one-sided Fisher exact
    p-value that training items fall there more often. ``minority``: each class's smaller-cluster items;
    ``suspect``: the classes whose split looks like poison."""

    classes: np.ndarray
    minority_share: np.ndarray
    silhouette: np.ndarray
    reference_share: np.ndarray
    p_value: np.ndarray
    anomaly_index: np.ndarray
    suspect: np.ndarray
    minority: np.ndarray
    settings: dict[str, float | int | str] = field(default_factory=dict)


def activation_clustering(features: np.ndarray, labels: np.ndarray, *, n_components: int = 10,
                          method: str = "pca", seed: int = 0, reference_features: np.ndarray | None = None,
                          reference_labels: np.ndarray | None = None, alpha: float = 0.01, max_share: float = 0.35,
                          min_share: float = 0.01, min_silhouette: float = 0.15, min_index: float = 2.0,
                          max_items: int = 2000, min_class_size: int = 10) -> ActivationClusters:
    """Activation clustering per class (Chen et al. 2018): reduce (PCA fitted on the class's training
    features), 2-means, and call a class suspect when its smaller cluster holds between ``min_share`` and
    ``max_share`` of the class (Chen et al.'s relative-size test, 0.35 as in ART), its silhouette is at least
    ``min_silhouette``, and

    - with a clean reference set (the evaluation data, assigned to the nearer centre): reference items fall
      in the smaller cluster less often than training items (Fisher exact, one-sided, ``alpha``
      Bonferroni-corrected over classes) -- a natural sub-population (two ways to write a 9) is split alike in
      both sets, a cluster of poisoned items has no clean counterpart;
    - without one: the silhouette is an outlier among the classes (MAD anomaly index above ``min_index``).

    Classes above ``max_items`` are clustered on a seeded subsample (the silhouette is quadratic in size) and
    every item is then assigned to its nearer centre."""
    from scipy.stats import fisher_exact

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    share = np.full(len(classes), np.nan)
    silhouette = np.full(len(classes), np.nan)
    ref_share = np.full(len(classes), np.nan)
    p_value = np.full(len(classes), np.nan)
    minority = np.zeros(len(labels), dtype=bool)
    rng = np.random.default_rng(seed)
    for j, k in enumerate(classes):
        rows = np.flatnonzero(labels == k)
        if rows.size < min_class_size:
            continue
        centre = features[rows].mean(axis=0)
        basis = _pca_basis(features[rows] - centre, n_components)
        reduced = (features[rows] - centre) @ basis
        if method == "ica":
            reduced = reduce_features(features[rows], n_components, method="ica", seed=seed)
        fit = (np.sort(rng.choice(rows.size, max_items, replace=False)) if rows.size > max_items
               else np.arange(rows.size))
        assign_fit = kmeans2(reduced[fit], seed=seed)
        silhouette[j] = silhouette_two_clusters(reduced[fit], assign_fit)
        centres = np.stack([reduced[fit][assign_fit == c].mean(axis=0) if np.any(assign_fit == c)
                            else np.full(reduced.shape[1], np.inf) for c in (0, 1)])
        assign = assign_fit if fit.size == rows.size else _nearest(reduced, centres)
        counts = np.bincount(assign, minlength=2)
        small = int(counts.argmin())
        share[j] = counts[small] / rows.size
        minority[rows[assign == small]] = True
        if reference_features is None or reference_labels is None or method != "pca":
            continue
        ref = np.asarray(reference_features, dtype=np.float64)[np.asarray(reference_labels) == k]
        if len(ref) == 0:
            continue
        ref_small = int((_nearest((ref - centre) @ basis, centres) == small).sum())
        ref_share[j] = ref_small / len(ref)
        table = np.array([[counts[small], rows.size - counts[small]], [ref_small, len(ref) - ref_small]])
        p_value[j] = fisher_exact(table, alternative="greater")[1]
    index = np.full(len(classes), np.nan)
    finite = np.isfinite(silhouette)
    if finite.sum() >= 3:
        index[finite] = mad_anomaly_index(silhouette[finite])
        index[finite & (silhouette < np.nanmedian(silhouette))] *= -1
    with np.errstate(invalid="ignore"):
        shaped = (share >= min_share) & (share <= max_share) & (silhouette >= min_silhouette)
        if np.isfinite(p_value).any():
            suspect = shaped & (p_value < alpha / int(np.isfinite(p_value).sum()))
        else:
            suspect = shaped & (index > min_index)
    return ActivationClusters(classes, share, silhouette, ref_share, p_value, index, suspect, minority,
                              {"n_components": n_components, "method": method, "max_share": max_share,
                               "min_share": min_share, "min_silhouette": min_silhouette, "min_index": min_index,
                               "alpha": alpha, "seed": seed})


def _pca_basis(centred: np.ndarray, n_components: int) -> np.ndarray:
    """The top ``n_components`` principal directions (D, k) of centred rows."""
    k = max(1, min(n_components, centred.shape[0] - 1, centred.shape[1]))
    return np.linalg.svd(centred, full_matrices=False)[2][:k].T


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.asarray(((x[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1))


def strip_blend(x: np.ndarray, overlays: np.ndarray) -> np.ndarray:
    """STRIP's superimposition: pixel-wise sum clipped to [0, 1] (Gao et al. add the images with OpenCV's
    saturating ``addWeighted(x, 1, overlay, 1, 0)``)."""
    return np.clip(np.asarray(x, dtype=np.float32) + np.asarray(overlays, dtype=np.float32), 0.0, 1.0)


def entropy_bits(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row of probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(p), 0.0)
    return terms.sum(axis=-1)


def strip_entropy(probabilities: np.ndarray) -> np.ndarray:
    """STRIP's entropy of each input: the mean entropy (bits) of its ``N`` superimposed copies' predictions,
    ``probabilities`` shaped (inputs, N, classes) (Gao et al., eq. 3-4: the sum over N divided by N)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError("probabilities must be shaped (inputs, overlays, classes)")
    return entropy_bits(p).mean(axis=1)


def strip_threshold(clean_entropy: np.ndarray, frr: float = 0.01, *, robust: bool = False,
                    log_scale: bool = False) -> float:
    """The entropy below which an input is called trojaned: the ``frr`` quantile of a normal fitted to clean
    inputs' entropies (Gao et al. sec. V-B), and at least their empirical ``frr`` quantile. ``robust``: median
    and 1.4826 MAD instead of mean and SD, so a minority of trojaned inputs among them barely moves the
    threshold. ``log_scale``: the normal is fitted to log-entropies (floored at 1e-6 bits), for the skewed,
    zero-bounded entropies of few overlays or confident models (small images: measured on digits 8x8)."""
    from scipy.stats import norm

    h = np.asarray(clean_entropy, dtype=np.float64)
    if not 0 < frr < 1 or h.size < 2:
        raise ValueError("frr must lie in (0, 1) and at least two clean entropies are needed")
    v = np.log(np.maximum(h, ENTROPY_FLOOR)) if log_scale else h
    if robust:
        centre, scale = float(np.median(v)), MAD_CONSISTENCY * float(np.median(np.abs(v - np.median(v))))
    else:
        centre, scale = float(v.mean()), float(v.std(ddof=1))
    fitted = float(norm.ppf(frr, loc=centre, scale=scale)) if scale > 0 else centre
    if log_scale:
        fitted = float(np.exp(fitted))
    # Entropy is bounded below by 0 and skewed when few overlays are used: a normal quantile below the clean
    # data's own frr quantile would reject nothing, so the empirical quantile is the floor.
    return max(fitted, float(np.quantile(h, frr)))
