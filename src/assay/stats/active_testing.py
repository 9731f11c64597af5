"""Label-efficient accuracy estimation ("active testing"): which items of an unlabelled pool to label, and an
unbiased estimate of the model's accuracy on the whole pool, with a valid interval, from those labels.

**Proposal** (:func:`proposal`). Items are drawn with probabilities ``q`` that favour the items whose label is
most informative about the pool's accuracy. Sawade, Landwehr, Bickel & Scheffer (2010, "Active Risk
Estimation", ICML) show that the variance-optimal proposal for estimating a risk ``R`` puts
``q_i ∝ sqrt(E[(loss_i - R)^2])``, which for the 0-1 loss is ``sqrt(e_i (1 - R)^2 + (1 - e_i) R^2)`` with
``e_i`` the probability that the model is wrong on item ``i`` (``1 - p(the model's predicted class)`` under the
model's own, or a surrogate's, probabilities) and ``R`` the expected error rate (the mean of ``e_i``). Kossen,
Farquhar, Gal & Rainforth (2021, "Active Testing", ICML) use ``q_i ∝ e_i`` (the expected loss;
``rule="expected-loss"``).
Either is mixed with the uniform distribution, ``q = (1 - λ) q* + λ / N`` with ``λ =``
:data:`DEFENSIVE_SHARE` (Hesterberg 1995, "defensive" importance sampling): every item keeps at least ``λ / N``,
so the weight ``1 / (N q_i)`` of any draw is at most ``1 / λ`` even where the surrogate is confidently wrong.

**Design** (:func:`draw`): ``m`` independent draws *with replacement* from ``q``, ``m`` fixed before any label is
seen (the label budget). A repeated draw reuses its label, so the labels paid for are the distinct items drawn
(at most ``m``; :func:`draw` reports both). Why this design: with a fixed number of independent draws the
Hansen–Hurwitz (1943) estimator below is exactly unbiased and its variance has an exactly unbiased estimator,
with no second-order inclusion probabilities (which a fixed-size without-replacement design such as Sampford's
would need, and which LURE's variance lacks in closed form). The price is the duplicates: a few per cent of the
budget at the proposal's usual spread (measured in ``bench/bench_active_testing.py``); stopping at the
budget-th distinct item instead would make the number of draws depend on the draws and bias the mean.

**Estimator** (:func:`accuracy_estimate`). Hansen–Hurwitz on the difference from a centre fixed before any
label is seen: each draw of item ``i`` gives ``z = T + (c_i - a_i) / (N q_i)`` with ``c_i`` 1 when the model
is right, ``a_i`` the centre and ``T`` the mean of the centres over the pool; the estimate is the mean of the
``m`` values ``z``. ``E[z] = T + sum_i (c_i - a_i) / N`` = the pool's accuracy for *any* ``q > 0`` and any fixed
centres, so a badly calibrated surrogate costs precision, never validity. With Sawade's rule the centre is the
constant ``a0 = 1 - R`` (then ``Var z`` is what the proposal minimises); with ``rule="difference"`` it is each
item's expected correctness ``1 - e_i`` (the difference estimator of model-assisted survey sampling, Särndal,
Swensson & Wretman 1992, 6.3: the surrogate is a control variate and the proposal ``sqrt(e_i (1 - e_i))`` is
Sawade's optimum for that centre). With ``q`` uniform, ``z = c_i``: the plain mean of the labels. The variance
of the mean is estimated by ``s^2 / m`` (unbiased); the interval is Korn & Graubard's (see below) at that
variance, since a symmetric normal interval undercovers when the accuracy is near 1 and the few errors carry
the weight. The estimate is clipped to [0, 1] (it can leave it when a rare draw carries a large weight); the
unclipped mean is kept in :attr:`AccuracyEstimate.unclipped`.

**When it does not help.** Errors the surrogate is confidently sure are right (``e_i`` near 0) are drawn at
about ``λ / N`` each: when they hold a share of the pool comparable to the interval's width, most runs see none
of them and the interval is too high (simulated in ``tests/test_active_testing.py``; docs/metrics.md gives the
numbers). A surrogate whose ``e_i`` carry no information gives about the width of uniform labelling, not less.

**Per-class accuracy** (:func:`class_accuracy_estimates`): the accuracy among items whose *true* label is ``c``
is a ratio of two pool totals, estimated by the ratio of their Hansen–Hurwitz estimates (Cochran 1977, 6.2;
consistent, bias O(1/m)) with the delta-method variance. The interval is Korn & Graubard's (1998): Clopper–Pearson
at the effective sample size ``n* = p (1 - p) / Var`` (at most the class's draws), so that a class whose sampled
items are all correct still gets an interval below 1 rather than a point.

**Baseline** (:func:`uniform_interval`, :func:`uniform_width`): ``n`` items labelled uniformly at random without
replacement: the Wilson score interval with the finite-population correction (``n`` scaled to
``n (N - 1) / (N - n)``), the width active testing must beat at the same number of labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from assay.errors import DataError, OptionError

__all__ = [
    "DEFENSIVE_SHARE",
    "PROPOSAL_RULES",
    "AccuracyEstimate",
    "Draws",
    "Selection",
    "accuracy_estimate",
    "centres",
    "class_accuracy_estimates",
    "draw",
    "estimate_from_labels",
    "expected_error",
    "korn_graubard_interval",
    "proposal",
    "select_items",
    "uniform_interval",
    "uniform_width",
]

#: λ of the defensive mixture ``q = (1 - λ) q* + λ / N``: every draw's weight ``1 / (N q)`` is at most 1 / λ = 10.
DEFENSIVE_SHARE = 0.1
#: Proposal rules: Sawade et al. 2010 (variance-optimal for the risk), its per-item-centre form for the difference
#: estimator, Kossen et al. 2021 (expected loss), uniform.
PROPOSAL_RULES = ("sawade", "difference", "expected-loss", "uniform")
#: Expected errors are capped here for the difference rule: a surrogate sure it is wrong (e = 1) would give an item
#: q = λ / N and, when the model is right after all, a weight of 1 / λ on a value of 1.
_MAX_DIFFERENCE_ERROR = 0.9


def expected_error(probabilities: np.ndarray, predicted: np.ndarray | None = None) -> np.ndarray:
    """``e_i = 1 - p_i(predicted_i)``: the probability the model's predicted class is wrong on each row of
    ``probabilities`` (N, C), if those probabilities are calibrated. Without ``predicted`` they are the model's own
    softmax and the prediction is their arg max (``e = 1 - max_c p_ic``); with it, they are a surrogate's
    (Kossen et al. 2021: the model's expected loss under the surrogate's predictive distribution)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or len(p) == 0:
        raise DataError(f"probabilities of shape {p.shape} are not (N, C) with C >= 2", where="probabilities",
                        fix="pass one row of class probabilities per pool item")
    if not np.isfinite(p).all() or (p < 0).any():
        raise DataError("probabilities hold negative, NaN or infinite values", where="probabilities",
                        fix="pass softmax outputs (assay.stats.probabilities.softmax of the logits)")
    if predicted is None:
        return np.clip(1.0 - p.max(axis=1), 0.0, 1.0)
    pred = np.asarray(predicted)
    if pred.shape != (len(p),) or (pred < 0).any() or (pred >= p.shape[1]).any():
        raise DataError("predicted must hold one class index per row of probabilities", where="predicted",
                        fix="pass the model's arg max per pool item")
    return np.clip(1.0 - p[np.arange(len(p)), pred.astype(np.int64)], 0.0, 1.0)


def proposal(error: np.ndarray, *, rule: str = "sawade", defensive: float = DEFENSIVE_SHARE,
             risk: float | None = None) -> np.ndarray:
    """Sampling probabilities ``q`` (sum 1, each at least ``defensive / N``) from the per-item expected errors
    ``error`` (see the module docstring): ``sawade`` ``sqrt(e (1 - R)^2 + (1 - e) R^2)``, ``difference``
    ``sqrt(e (1 - e))`` (e capped at 0.9), ``expected-loss`` ``e``, ``uniform``. ``risk``: the expected error rate
    ``R`` of Sawade's rule (default: the mean of ``error``)."""
    e = np.asarray(error, dtype=np.float64)
    if e.ndim != 1 or len(e) == 0 or not np.isfinite(e).all() or (e < 0).any() or (e > 1).any():
        raise DataError("expected errors must be a non-empty 1-D array of values in [0, 1]", where="error",
                        fix="pass 1 - max probability per item (expected_error)")
    if rule not in PROPOSAL_RULES:
        raise OptionError(f"unknown proposal rule {rule!r}", where="rule", fix=f"use one of {list(PROPOSAL_RULES)}")
    if not (isinstance(defensive, (int, float)) and 0.0 < defensive <= 1.0):
        raise OptionError(f"the defensive share must lie in (0, 1], got {defensive!r}", where="defensive",
                          fix=f"use e.g. {DEFENSIVE_SHARE} (1 is uniform sampling)")
    n = len(e)
    if rule == "uniform":
        return np.full(n, 1.0 / n)
    if rule == "sawade":
        r = float(e.mean()) if risk is None else float(risk)
        if not 0.0 <= r <= 1.0:
            raise OptionError(f"the expected error rate must lie in [0, 1], got {risk!r}", where="risk",
                              fix="leave it out: the mean expected error is used")
        score = np.sqrt(e * (1.0 - r) ** 2 + (1.0 - e) * r**2)
    elif rule == "difference":
        capped = np.minimum(e, _MAX_DIFFERENCE_ERROR)
        score = np.sqrt(capped * (1.0 - capped))
    else:
        score = e
    total = score.sum()
    best = score / total if total > 0 else np.full(n, 1.0 / n)  # nothing to favour: uniform
    q = (1.0 - defensive) * best + defensive / n
    return q / q.sum()


@dataclass(frozen=True)
class Draws:
    """``m`` draws with replacement: the distinct ``items`` drawn (pool indices, ascending), how many times each
    was drawn (``counts``, summing to ``m``) and the order of the draws (``sequence``)."""

    items: np.ndarray
    counts: np.ndarray
    sequence: np.ndarray

    @property
    def draws(self) -> int:
        return int(self.counts.sum())

    @property
    def labels(self) -> int:
        """Labels to pay for: the distinct items."""
        return len(self.items)


def draw(q: np.ndarray, draws: int, seed: int | np.random.SeedSequence = 0) -> Draws:
    """``draws`` independent draws from ``q`` with replacement (seeded; see the module docstring for why)."""
    p = _probabilities(q)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise OptionError(f"the number of draws must be a positive integer, got {draws!r}", where="draws",
                          fix="ask for e.g. 200")
    rng = np.random.default_rng(seed)
    sequence = rng.choice(len(p), size=int(draws), replace=True, p=p)
    items, counts = np.unique(sequence, return_counts=True)
    return Draws(items=items, counts=counts, sequence=sequence)


def centres(error: np.ndarray, rule: str) -> np.ndarray:
    """The centre of each pool item for the estimator that goes with ``rule``: ``1 - e_i`` for ``difference``,
    the constant ``1 - mean(e)`` otherwise (see the module docstring). Fixed before any label is seen."""
    e = np.asarray(error, dtype=np.float64)
    if rule == "difference":
        return 1.0 - e
    return np.full(len(e), 1.0 - float(e.mean()))


@dataclass(frozen=True)
class Selection:
    """A labelling design over a pool of ``len(q)`` items: the sampling probabilities ``q``, each item's
    ``centre`` (see :func:`centres`), the proposal ``rule``, the ``defensive`` share and the ``draws``."""

    q: np.ndarray
    centre: np.ndarray
    rule: str
    defensive: float
    draws: Draws

    @property
    def population(self) -> int:
        return len(self.q)


def select_items(error: np.ndarray, draws: int, *, rule: str = "sawade", defensive: float = DEFENSIVE_SHARE,
                 seed: int | np.random.SeedSequence = 0) -> Selection:
    """Which pool items to label: the proposal of ``rule`` over the per-item expected errors, and ``draws``
    seeded draws with replacement from it (at most ``draws`` distinct items to label)."""
    q = proposal(error, rule=rule, defensive=defensive)
    return Selection(q=q, centre=centres(error, rule), rule=rule, defensive=float(defensive),
                     draws=draw(q, draws, seed))


def estimate_from_labels(q: np.ndarray, centre: np.ndarray, items: np.ndarray, counts: np.ndarray,
                         correct: np.ndarray, confidence: float = 0.95) -> AccuracyEstimate:
    """:func:`accuracy_estimate` for labelled ``items`` (pool indices, drawn ``counts`` times, ``correct`` 0/1) of
    a design given by the pool's ``q`` and ``centre`` arrays."""
    items = np.asarray(items, dtype=np.int64)
    a = np.asarray(centre, dtype=np.float64)
    constant = bool(np.ptp(a) == 0)
    return accuracy_estimate(correct, np.asarray(q)[items], len(q), counts=counts,
                             centre=float(a[0]) if constant else a[items],
                             centre_mean=None if constant else float(a.mean()), confidence=confidence)


def _probabilities(q: np.ndarray) -> np.ndarray:
    p = np.asarray(q, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0 or not np.isfinite(p).all() or (p <= 0).any() or abs(p.sum() - 1.0) > 1e-6:
        raise DataError("sampling probabilities must be a 1-D array of positive values summing to 1", where="q",
                        fix="build them with proposal()")
    return p / p.sum()


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy with its interval: ``value`` (None when nothing was sampled), ``ci_low``/``ci_high``,
    ``std_error``, the ``draws`` and distinct ``labels`` behind it, ``method`` in words, and ``unclipped`` (the
    mean before clipping to [0, 1])."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    draws: int
    labels: int
    method: str
    unclipped: float | None = None

    @property
    def width(self) -> float | None:
        return None if self.ci_low is None or self.ci_high is None else self.ci_high - self.ci_low


def _check_labelled(correct: np.ndarray, q: np.ndarray, counts: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.asarray(correct, dtype=np.float64)
    p = np.asarray(q, dtype=np.float64)
    k = np.ones(len(c)) if counts is None else np.asarray(counts, dtype=np.float64)
    if not (c.ndim == p.ndim == k.ndim == 1 and len(c) == len(p) == len(k)) or len(c) == 0:
        raise DataError("correct, q and counts must be non-empty 1-D arrays of the same length", where="correct",
                        fix="pass one entry per distinct labelled item")
    if not np.isin(c, (0.0, 1.0)).all():
        raise DataError("correct must hold 0/1 values", where="correct", fix="pass predicted == label per item")
    if not np.isfinite(p).all() or (p <= 0).any() or (p > 1).any():
        raise DataError("sampling probabilities must lie in (0, 1]", where="q",
                        fix="pass the probabilities the items were drawn with")
    if not np.isfinite(k).all() or (k < 1).any() or (k != np.round(k)).any():
        raise DataError("draw counts must be positive integers", where="counts",
                        fix="pass how many times each item was drawn")
    return c, p, k


def _normal_quantile(confidence: float) -> float:
    from scipy.special import ndtri  # without importing scipy.stats

    return float(ndtri(1.0 - (1.0 - confidence) / 2.0))


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, float | int) and 0.0 < confidence < 1.0):
        raise OptionError(f"confidence must lie in (0, 1), got {confidence!r}", where="confidence",
                          fix="use e.g. 0.95")


def accuracy_estimate(correct: np.ndarray, q: np.ndarray, population: int, *, counts: np.ndarray | None = None,
                      centre: float | np.ndarray = 0.0, centre_mean: float | None = None,
                      confidence: float = 0.95) -> AccuracyEstimate:
    """The pool's accuracy from labelled draws (see the module docstring): ``correct`` (0/1), ``q`` (each item's
    sampling probability) and ``counts`` (times drawn; default 1) per distinct labelled item, ``population`` N
    (the pool size ``q`` is over). ``centre``: fixed before labelling; a number a0 (the expected accuracy
    ``1 - R``; 0 gives the plain Hansen–Hurwitz estimator) or, for the difference estimator, each labelled item's
    expected correctness ``1 - e_i`` with ``centre_mean`` their mean over the whole pool. Unbiased for any
    ``q > 0``; Korn–Graubard interval (Clopper–Pearson at the effective sample size)."""
    c, p, k = _check_labelled(correct, q, counts)
    _check_confidence(confidence)
    if isinstance(population, bool) or not isinstance(population, (int, np.integer)) or population < len(c):
        raise DataError(f"the population ({population!r}) must be an integer at least the number of labelled items",
                        where="population", fix="pass the size of the pool q was computed over")
    a = np.broadcast_to(np.asarray(centre, dtype=np.float64), c.shape)
    total = float(a[0]) if np.ndim(centre) == 0 else centre_mean
    if total is None or not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all() and 0.0 <= total <= 1.0):
        raise OptionError("the centre must be a number in [0, 1], or per-item values in [0, 1] with their pool mean "
                          "centre_mean", where="centre", fix="pass the expected accuracy 1 - mean(expected_error)")
    m = float(k.sum())
    z = total + (c - a) / (population * p)
    mean = float((k * z).sum() / m)
    kind = "difference estimator" if np.ptp(a) > 0 else f"centre {total:.4f}"
    method = (f"hansen-hurwitz importance sampling ({kind}, m={int(m)} draws with replacement), "
              f"korn-graubard({confidence:g})")
    variance = float((k * (z - mean) ** 2).sum() / (m - 1.0)) / m if m >= 2 else 0.0
    if m < 2:
        lo, hi = 0.0, 1.0
    else:  # a census-sized effective sample at most; the draws themselves when every draw gave the same value
        lo, hi = korn_graubard_interval(mean, variance, int(m), confidence, cap=int(population))
    value = min(max(mean, 0.0), 1.0)
    return AccuracyEstimate(value=value, ci_low=min(lo, value), ci_high=max(hi, value), std_error=math.sqrt(variance),
                            draws=int(m), labels=len(c), method=method, unclipped=mean)


def korn_graubard_interval(estimate: float, variance: float, n: int, confidence: float = 0.95, *,
                           cap: int | None = None) -> tuple[float, float]:
    """Clopper–Pearson at the effective sample size ``n* = p (1 - p) / variance`` (capped at ``cap``, default
    ``n``; ``n`` when the variance is 0 or ``p`` is 0 or 1), with ``x* = n* p`` successes (Korn & Graubard 1998,
    for proportions from weighted samples; its asymmetry keeps the interval honest near 0 and 1, where a normal
    interval undercovers). Non-integer ``x*``/``n*`` go through the Beta quantiles directly."""
    from scipy.special import betaincinv

    p = min(max(float(estimate), 0.0), 1.0)
    limit = float(n if cap is None else cap)
    n_eff = float(n) if variance <= 0 or p in (0.0, 1.0) else min(p * (1.0 - p) / variance, limit)
    n_eff = max(n_eff, 1.0)
    x = p * n_eff
    alpha = 1.0 - confidence
    lo = 0.0 if x <= 0 else float(betaincinv(x, n_eff - x + 1.0, alpha / 2.0))
    hi = 1.0 if x >= n_eff else float(betaincinv(x + 1.0, n_eff - x, 1.0 - alpha / 2.0))
    return lo, hi


def class_accuracy_estimates(correct: np.ndarray, labels: np.ndarray, q: np.ndarray, num_classes: int, *,
                             counts: np.ndarray | None = None, confidence: float = 0.95) -> list[AccuracyEstimate]:
    """Per true class ``c`` (0..num_classes-1): the accuracy among the pool's items of class ``c``, as the ratio of
    the Hansen–Hurwitz estimates of ``sum [y=c] correct`` and ``sum [y=c]`` (delta-method variance, Korn–Graubard
    interval; see the module docstring). A class with no labelled item gets ``value=None``."""
    c, p, k = _check_labelled(correct, q, counts)
    _check_confidence(confidence)
    y = np.asarray(labels)
    if y.shape != c.shape or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise DataError(f"labels must be one class index in [0, {num_classes}) per labelled item", where="labels",
                        fix="pass the true label of each distinct labelled item")
    m = float(k.sum())
    w = 1.0 / p
    out = []
    for cls in range(int(num_classes)):
        member = y == cls
        draws_c = int(k[member].sum())
        method = f"ratio of hansen-hurwitz estimates, delta-method variance, korn-graubard({confidence:g})"
        if not member.any():
            out.append(AccuracyEstimate(value=None, ci_low=None, ci_high=None, std_error=None, draws=0, labels=0,
                                        method=method))
            continue
        a = np.where(member, w * c, 0.0)
        b = np.where(member, w, 0.0)
        ratio = float((k * a).sum() / (k * b).sum())
        if m >= 2:
            d = a - ratio * b
            b_mean = float((k * b).sum() / m)
            variance = float((k * (d - (k * d).sum() / m) ** 2).sum() / (m - 1.0)) / m / b_mean**2
        else:
            variance = 0.0
        lo, hi = korn_graubard_interval(ratio, variance, int(member.sum()), confidence)
        out.append(AccuracyEstimate(value=ratio, ci_low=min(lo, ratio), ci_high=max(hi, ratio),
                                    std_error=math.sqrt(variance), draws=draws_c, labels=int(member.sum()),
                                    method=method, unclipped=ratio))
    return out


def uniform_interval(successes: int, n: int, population: int | None = None, confidence: float = 0.95
                     ) -> tuple[float, float]:
    """Wilson score interval for ``successes`` of ``n`` items labelled uniformly at random, without replacement
    from ``population`` items when given (finite-population correction: ``n`` counts as ``n (N - 1) / (N - n)``;
    the whole population labelled gives the point)."""
    _check_confidence(confidence)
    if n < 1 or not 0 <= successes <= n or (population is not None and population < n):
        raise DataError(f"{successes} successes of {n} labels (population {population}) is not a sample",
                        where="n", fix="pass 0 <= successes <= n <= population")
    p = successes / n
    if population is not None and n >= population:
        return p, p
    n_eff = float(n) if population is None or population <= 1 else n * (population - 1.0) / (population - n)
    z = _normal_quantile(confidence)
    denom = 1.0 + z * z / n_eff
    centre = (p + z * z / (2.0 * n_eff)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n_eff + z * z / (4.0 * n_eff * n_eff)) / denom
    return max(centre - half, 0.0), min(centre + half, 1.0)


def uniform_width(accuracy: float, n: int, population: int | None = None, confidence: float = 0.95) -> float:
    """The width of :func:`uniform_interval` when ``n`` uniformly drawn labels show the accuracy ``accuracy``
    (rounded to a whole count): what uniform random labelling would have bought with the same labels."""
    successes = int(round(min(max(accuracy, 0.0), 1.0) * n))
    lo, hi = uniform_interval(successes, n, population, confidence)
    return hi - lo
