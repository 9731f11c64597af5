"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV), L∞ and L2.

Black-box: it only calls ``predict(x) -> logits`` on numpy arrays, so it attacks ONNX models as well as
torch ones. Random search on the margin loss z_y - max_{j != y} z_j: each iteration proposes, for every
sample not yet fooled, a change of one random square window (side shrinking with the schedule of
``p``), queries the model once, and keeps the proposal when it lowers the margin. Fooled samples are
never queried again.

Re-implemented from the paper and the authors' code (max-andr/square-attack, BSD-3-Clause; and its port
in fra31/auto-attack, ``autoattack/square.py``, MIT licence); no code copied. Defaults follow
AutoAttack's setting (p_init = 0.8 for both norms, margin loss). As in the paper (and unlike
AutoAttack's port, which shares one window position across the batch) every sample draws its own
window, and an L∞ proposal that would not change the window is re-drawn (up to a few times) instead of
spending a query on it. The p schedule is stretched to the query budget (``rescale_schedule``, the
reference's default); AutoAttack's 5,000-query standard run uses the unstretched schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from assay.attacks.common import check_attack_inputs, check_positive_int, check_threat_model, np_rng
from assay.errors import UserError

__all__ = ["p_schedule", "square", "square_window_pattern"]

Predict = Callable[[np.ndarray], np.ndarray]

#: (upper bound of the iteration, on a 10,000-iteration scale; divisor of p_init) — the paper's schedule.
_P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))
_REDRAWS = 10


def p_schedule(iteration: int, p_init: float, queries: int, rescale: bool = True) -> float:
    """Fraction of the image the square covers at ``iteration`` (0-based), halved at fixed iterations
    of a 10,000-query run (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000); ``rescale`` maps the
    budget ``queries`` onto that run."""
    it = int(iteration / queries * 10_000) if rescale else iteration
    for bound, divisor in _P_SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def _concentric(rows: int, cols: int) -> np.ndarray:
    """Sum of 1/(k+1)^2 over the centred rectangles k = 0, 1, ... that contain each cell."""
    if rows == 0:
        return np.zeros((0, cols))
    cr, cc = rows // 2, cols // 2
    layers = max(cr, cc) + 1
    dist = np.maximum(np.abs(np.arange(rows)[:, None] - cr), np.abs(np.arange(cols)[None, :] - cc))
    tail = np.cumsum((1.0 / np.arange(1, layers + 1) ** 2)[::-1])[::-1]  # tail[d] = sum_{k>=d} 1/(k+1)^2
    return tail[dist]


def square_window_pattern(size: int) -> np.ndarray:
    """The L2 attack's window update eta (paper, Sec. 3.2): concentric rectangles, positive in the top
    half and negative in the bottom half, unit L2 norm; shape (size, size)."""
    half = size // 2
    eta = np.concatenate([_concentric(half, size), -_concentric(size - half, size)], axis=0)
    return (eta / np.sqrt((eta**2).sum())).astype(np.float32)


def _margin_and_wrong(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(len(y))
    true = logits[rows, y].copy()
    others = logits.copy()
    others[rows, y] = -np.inf
    return true - others.max(axis=1), logits.argmax(axis=1) != y


def _query(predict: Predict, x: np.ndarray, y: np.ndarray, sample_shape: tuple[int, ...]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Margins and misclassification of ``x``, given to ``predict`` in the caller's sample shape."""
    logits = np.asarray(predict(np.ascontiguousarray(x, dtype=np.float32).reshape((len(x),) + sample_shape)))
    if logits.ndim != 2 or logits.shape[0] != len(x) or logits.shape[1] < 2:
        raise UserError(f"predict returned shape {logits.shape}, expected ({len(x)}, num_classes)",
                        where="square", fix="pass a function returning one row of logits per input")
    return _margin_and_wrong(logits.astype(np.float64), y)


def _windows(rng: np.random.Generator, n: int, h: int, w: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices (n, s) of one random s x s window per sample."""
    top = rng.integers(0, h - s + 1, size=n)
    left = rng.integers(0, w - s + 1, size=n)
    offsets = np.arange(s)
    return top[:, None] + offsets, left[:, None] + offsets


def _window_mask(rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> np.ndarray:
    in_rows = (np.arange(h)[None, :] >= rows[:, :1]) & (np.arange(h)[None, :] <= rows[:, -1:])
    in_cols = (np.arange(w)[None, :] >= cols[:, :1]) & (np.arange(w)[None, :] <= cols[:, -1:])
    return in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (n, 1, h, w)


def _signs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=shape)


def _l2_normalize(t: np.ndarray) -> np.ndarray:
    norms = np.sqrt((t.astype(np.float64) ** 2).reshape(len(t), -1).sum(axis=1))
    return (t / (norms.reshape((-1,) + (1,) * (t.ndim - 1)) + 1e-12)).astype(np.float32)


def _l2_init(rng: np.random.Generator, x: np.ndarray, eps: float) -> np.ndarray:
    """A grid of eta-patterned squares (side h // 5) with random signs per sample and channel, scaled
    to norm eps, clipped to [0, 1]."""
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    pattern = square_window_pattern(s)
    delta = np.zeros_like(x)
    start_h, start_w = max((h - 5 * s) // 2, 0), max((w - 5 * s) // 2, 0)
    for top in range(start_h, h - s + 1, s):
        for left in range(start_w, w - s + 1, s):
            delta[:, :, top:top + s, left:left + s] += pattern * _signs(rng, (n, c, 1, 1))
    return np.clip(x + eps * _l2_normalize(delta), 0.0, 1.0)


def _linf_proposal(rng: np.random.Generator, x: np.ndarray, x_best: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   eps: float, s: int) -> np.ndarray:
    """Set one random window per sample to x ± eps (one sign per channel), clipped to the ball and box."""
    n, c, h, w = x.shape
    rows, cols = _windows(rng, n, h, w, s)
    mask = _window_mask(rows, cols, h, w)
    proposal = np.empty_like(x_best)
    pending = np.ones(n, dtype=bool)
    for _ in range(_REDRAWS):
        signs = _signs(rng, (int(pending.sum()), c, 1, 1))
        candidate = np.where(mask[pending], np.clip(x_best[pending] + 2 * eps * signs, lo[pending], hi[pending]),
                             x_best[pending])
        proposal[pending] = candidate
        unchanged = np.all(np.abs(candidate - x_best[pending]) < 1e-7, axis=(1, 2, 3))
        pending[np.flatnonzero(pending)[~unchanged]] = False
        if not pending.any():
            break
    return proposal


def _l2_proposal(rng: np.random.Generator, x: np.ndarray, x_best: np.ndarray, eps: float, s: int) -> np.ndarray:
    """Move the perturbation's mass from a second random window into a first one, re-shaped along the
    eta pattern (paper, Algorithm 3); the result has norm eps before clipping to [0, 1]."""
    n, c, h, w = x.shape
    delta = (x_best - x).astype(np.float32)
    rows1, cols1 = _windows(rng, n, h, w, s)
    rows2, cols2 = _windows(rng, n, h, w, s)
    sample = np.arange(n)[:, None, None, None]
    channel = np.arange(c)[None, :, None, None]

    def window(r: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, ...]:
        return sample, channel, r[:, None, :, None], q[:, None, None, :]

    w1 = delta[window(rows1, cols1)]  # (n, c, s, s)
    norm_w1 = np.sqrt((w1.astype(np.float64) ** 2).sum(axis=(2, 3), keepdims=True))
    norm_image = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
    both = _window_mask(rows1, cols1, h, w) | _window_mask(rows2, cols2, h, w)
    norm_windows = np.sqrt(((delta * both).astype(np.float64) ** 2).sum(axis=(1, 2, 3)))

    eta = square_window_pattern(s)
    flip = rng.random((n,)) < 0.5  # the pattern is transposed for half of the proposals
    etas = np.where(flip[:, None, None], eta.T[None], eta[None])[:, None]  # (n, 1, s, s)
    new = etas * _signs(rng, (n, c, 1, 1)) + w1 / (norm_w1 + 1e-12)
    budget = np.maximum(eps**2 - norm_image**2, 0.0) / c + norm_windows**2
    new = new / (np.sqrt((new.astype(np.float64) ** 2).sum(axis=(2, 3), keepdims=True)) + 1e-12) \
        * np.sqrt(budget)[:, None, None, None]
    delta[window(rows2, cols2)] = 0.0
    delta[window(rows1, cols1)] = new.astype(np.float32)
    return np.clip(x + eps * _l2_normalize(delta), 0.0, 1.0)


def square(predict: Predict, x: np.ndarray, y: np.ndarray, *, eps: float, norm: str = "linf", queries: int = 1000,
           p_init: float = 0.8, seed: int = 0, rescale_schedule: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Square Attack on the margin loss, at most ``queries`` model queries per sample (the initial one
    included). ``x``: float (N, C, H, W) or (N, H, W) in [0, 1]; ``y``: int labels.

    Returns the adversarial inputs (float32, x's shape; for samples never fooled, the lowest-margin
    point found) and the number of queries each sample used (int64; a sample stops being queried once
    misclassified, so the count is its queries-to-success).
    """
    where = "square"
    check_threat_model(eps, norm, where)
    check_positive_int(queries, "queries", where)
    if not 0.0 < p_init <= 1.0:
        raise UserError(f"p_init must be in (0, 1], got {p_init!r}", where=where, fix="use the default 0.8")
    x = np.asarray(x)
    y = np.asarray(y)
    check_attack_inputs(x, y, where)
    shape = x.shape
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise UserError(f"the Square attack needs images (N, C, H, W) or (N, H, W), got shape {shape}",
                        where=where, fix="attack image inputs")
    x = np.clip(x.astype(np.float32), 0.0, 1.0)
    y = y.astype(np.int64)
    n, c, h, w = x.shape
    used = np.zeros(n, dtype=np.int64)
    if n == 0:
        return x.reshape(shape), used
    rng = np_rng(seed)

    if norm == "linf":
        lo, hi = np.clip(x - eps, 0.0, 1.0), np.clip(x + eps, 0.0, 1.0)
        x_best = np.clip(x + eps * _signs(rng, (n, c, 1, w)), lo, hi)  # vertical stripes
    else:
        x_best = _l2_init(rng, x, eps)
    margin_min, fooled = _query(predict, x_best, y, shape[1:])
    used += 1

    n_features = c * h * w
    for it in range(queries - 1):
        active = np.flatnonzero(~fooled)
        if active.size == 0:
            break
        p = p_schedule(it, p_init, queries, rescale_schedule)
        side = int(round(math.sqrt(p * n_features / c)))
        xa, best_a = x[active], x_best[active]
        if norm == "linf":
            s = min(max(side, 1), h, w)
            proposal = _linf_proposal(rng, xa, best_a, lo[active], hi[active], eps, s)
        else:
            s = max(side, 3)
            s = min(s + (s % 2 == 0), h, w)  # odd, as the reference, and no larger than the image
            proposal = _l2_proposal(rng, xa, best_a, eps, s)
        m, wrong = _query(predict, proposal, y[active], shape[1:])
        used[active] += 1
        better = (m < margin_min[active]) | wrong
        x_best[active[better]] = proposal[better]
        margin_min[active[better]] = m[better]
        fooled[active[wrong]] = True
    return x_best.reshape(shape), used
