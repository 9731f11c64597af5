"""Tabular corruptions: measurement noise, missing values and unit/gain drift at five severities.

Feature statistics (``feature_mean``, ``feature_std``) must be those of the whole evaluation set: taking
them from the batch at hand would make a sample's corruption depend on which batch it arrived in. They
are required for the corruptions that use them.

======================  ======  ======  ======  ======  ======
severity                  1       2       3       4       5
======================  ======  ======  ======  ======  ======
gaussian_noise (s)       0.10    0.20    0.30    0.50    0.80    sigma = s * feature_std
missing_values (p)       0.05    0.10    0.20    0.30    0.50    then imputed with feature_mean
scaling (s)              0.05    0.10    0.20    0.30    0.50    x * (1 + s) or x * (1 - s), per sample
quantization (q)         0.10    0.25    0.50    1.00    2.00    grid step = q * feature_std
======================  ======  ======  ======  ======  ======

Missing values never reach the model as NaN: they are imputed with the feature mean
(:data:`TABULAR_IMPUTATION`), the usual baseline imputer (scikit-learn's ``SimpleImputer`` default).
Randomness for row ``i`` comes only from ``(seed, name, severity, index[i])`` (counter-based draws, see
:mod:`assay.corruptions.base`), so batching never changes a result.
"""

from __future__ import annotations

import numpy as np

from assay.corruptions.base import (
    CorruptionInfo,
    check_index,
    check_severity,
    sample_normals,
    sample_uniforms,
    unknown_corruption,
)
from assay.errors import UserError

__all__ = ["TABULAR_CORRUPTIONS", "TABULAR_IMPUTATION", "TABULAR_SEVERITY", "corrupt_table"]

#: How missing values are filled before the model sees them.
TABULAR_IMPUTATION = "mean"

#: The per-corruption parameter for severities 1..5 (meaning in the module docstring).
TABULAR_SEVERITY: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.10, 0.20, 0.30, 0.50, 0.80),
    "missing_values": (0.05, 0.10, 0.20, 0.30, 0.50),
    "scaling": (0.05, 0.10, 0.20, 0.30, 0.50),
    "quantization": (0.10, 0.25, 0.50, 1.00, 2.00),
}

TABULAR_CORRUPTIONS: dict[str, CorruptionInfo] = {
    info.name: info
    for info in (
        CorruptionInfo("gaussian_noise", "noise",
                       description="adds gaussian noise to every value, sigma = s * the feature's standard "
                                   "deviation over the evaluation set (s = 0.1, 0.2, 0.3, 0.5, 0.8)"),
        CorruptionInfo("missing_values", "missing",
                       description="each value goes missing with probability p (0.05, 0.1, 0.2, 0.3, 0.5) and "
                                   "is imputed with the feature's mean over the evaluation set (mean imputation)"),
        CorruptionInfo("scaling", "drift",
                       description="multiplies all features of a sample by 1 + s or 1 - s (random sign per "
                                   "sample; s = 0.05, 0.1, 0.2, 0.3, 0.5), as a gain or unit drift"),
        CorruptionInfo("quantization", "precision",
                       description="rounds each value to a grid around the feature mean with step q * the "
                                   "feature's standard deviation (q = 0.1, 0.25, 0.5, 1, 2), as a "
                                   "low-resolution sensor"),
    )
}

_NEEDS_STATISTICS = {"gaussian_noise": ("feature_std",), "missing_values": ("feature_mean",),
                     "quantization": ("feature_mean", "feature_std")}


def _check_table(x: object) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or not (np.issubdtype(x.dtype, np.floating)
                                                          or np.issubdtype(x.dtype, np.integer)):
        what = f"a {x.ndim}-D {x.dtype} array" if isinstance(x, np.ndarray) else f"a {type(x).__name__}"
        raise UserError(f"tabular inputs must be a 2-D numeric array (samples, features), got {what}",
                        where="x", fix="pass a float32 array of shape (N, F)")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise UserError(f"{int(bad.sum())} row(s) contain NaN or infinite values (first at rows "
                        f"{np.flatnonzero(bad)[:5].tolist()})", where="x", fix="impute the inputs before corrupting")
    return x


def _check_statistic(value: np.ndarray | None, what: str, name: str, n_features: int) -> np.ndarray:
    if value is None:
        raise UserError(f"the {name} corruption needs {what} of the whole evaluation set", where=what,
                        fix=f"pass {what}=x_all.{what.split('_')[1]}(axis=0) computed once over every sample, "
                            "not per batch")
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n_features,) or not np.isfinite(arr).all() or (what == "feature_std" and (arr < 0).any()):
        raise UserError(f"{what} must hold one finite value per feature ({n_features})"
                        + (", non-negative" if what == "feature_std" else "") + f", got shape {arr.shape}",
                        where=what, fix="pass the per-feature statistic over the whole evaluation set")
    return arr


def corrupt_table(x: np.ndarray, name: str, severity: int, *, seed: int = 0, index: np.ndarray | None = None,
                  feature_std: np.ndarray | None = None, feature_mean: np.ndarray | None = None) -> np.ndarray:
    """Corrupt the rows of ``x`` (N, F) with corruption ``name`` at ``severity`` (1..5); float32 (N, F).

    ``index``: each row's position in the whole evaluation set (default ``0..N-1``).
    ``feature_std`` / ``feature_mean``: per-feature statistics of the whole evaluation set (required by
    gaussian_noise, missing_values and quantization).
    """
    if name not in TABULAR_CORRUPTIONS:
        raise unknown_corruption(name, TABULAR_CORRUPTIONS, "tabular")
    check_severity(severity)
    x = _check_table(x)
    n, f = x.shape
    rows = check_index(index, n)
    stats = {what: _check_statistic({"feature_std": feature_std, "feature_mean": feature_mean}[what], what, name, f)
             for what in _NEEDS_STATISTICS.get(name, ())}
    level = TABULAR_SEVERITY[name][int(severity) - 1]
    values = x.astype(np.float64)

    if name == "gaussian_noise":
        out = values + sample_normals(seed, name, severity, rows, f) * (level * stats["feature_std"])
    elif name == "missing_values":
        missing = sample_uniforms(seed, name, severity, rows, f) < level
        out = np.where(missing, stats["feature_mean"], values)
    elif name == "scaling":
        sign = np.where(sample_uniforms(seed, name, severity, rows, 1) < 0.5, -1.0, 1.0)
        out = values * (1.0 + level * sign)
    else:  # quantization: deterministic, no randomness
        step = level * stats["feature_std"]
        safe = np.where(step > 0, step, 1.0)
        grid = stats["feature_mean"] + np.round((values - stats["feature_mean"]) / safe) * safe
        out = np.where(step > 0, grid, values)
    return out.astype(np.float32)
