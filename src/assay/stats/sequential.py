"""Always-valid inference for rollout decisions: a confidence sequence for the mean of bounded observations.

A monitor looks at a canary after every window and acts the first time the evidence is strong enough. A
confidence interval recomputed at every look does not survive that: with enough looks it excludes the
truth with probability far above alpha (tests/test_sequential.py shows it). A *confidence sequence*
(C_t) covers the mean at all times at once, ``P(for all t: mu in C_t) >= 1 - alpha``, so it may be
checked after every observation, any stopping rule is allowed, and so is intersecting it over time
(the running max of lower ends and min of upper ends is again a valid confidence sequence).

Method: the empirical-Bernstein confidence sequence with the polynomial stitching boundary of Howard,
Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences"
(Ann. Statist. 49(2)): for observations in ``[low, high]`` with mean mu and any predictable
``[low, high]``-valued predictions ``x_hat_i`` (here the running mean of the earlier observations, a
pseudo-observation at the midpoint first), ``S_t = sum_i (X_i - mu)`` is sub-exponential with variance
process ``V_t = sum_i (X_i - x_hat_i)^2`` and scale ``c = high - low`` (their Theorem 4), so

    C_t = mean_t -/+ u(max(V_t, v_min)) / t,
    u(v) = sqrt(k1^2 v l(v) + (k2 c l(v))^2) + k2 c l(v),                    (Theorem 1, eq. (10))
    l(v) = s log log(eta v / v_min) + log(zeta(s) / log(eta)^s) + log(2 / alpha),
    k1 = (eta^1/4 + eta^-1/4) / sqrt(2),  k2 = (sqrt(eta) + 1) / 2,

each side at alpha / 2, with s = 1.4 and eta = 2 (the paper's defaults; the same formula as the authors'
``confseq`` library, ``poly_stitching_bound``). The width adapts to the observed variance (a paired
accuracy difference with few discordant pairs gets a narrow sequence) and shrinks like
``sqrt(V_t log log V_t) / t``.

State: ``n``, the sum of the observations and ``V_t`` -- O(1) numbers, persisted as JSON. A batch update
computes the predictions inside the batch from cumulative sums, so updating with a batch gives exactly
the same state as updating one observation at a time.

Used for: the paired difference (challenger minus champion) of estimated or realized correctness, in
[-1, 1]; negative-flip indicators, in [0, 1]; estimated or realized accuracy against a floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from assay.errors import DataError, OptionError

__all__ = [
    "METHOD",
    "SCHEMA",
    "ConfidenceSequence",
    "Decision",
    "msprt_p_value",
    "sequential_decision",
    "stitched_boundary",
]

SCHEMA = "assay.confidence_sequence/1"
METHOD = "empirical-Bernstein confidence sequence, polynomial stitching (Howard et al. 2021, Thm 1 and 4)"
#: Stitching exponent s and epoch spacing eta (Howard et al. 2021's defaults).
STITCH_S = 1.4
STITCH_ETA = 2.0
Decision = Literal["worse", "non_inferior", "undecided"]


@lru_cache(maxsize=8)
def _zeta(s: float) -> float:
    from scipy.special import zeta  # Riemann zeta, without importing scipy.stats

    return float(zeta(s, 1))


def stitched_boundary(v: Any, alpha: float, *, v_min: float, c: float, s: float = STITCH_S,
                      eta: float = STITCH_ETA) -> np.ndarray:
    """Polynomial stitching boundary u(v) of Howard et al. 2021 (Theorem 1, eq. (10)) for a sub-gamma
    process with scale ``c``: ``P(exists t: S_t >= u(max(V_t, v_min))) <= alpha``. Vectorised over ``v``;
    ``v`` below ``v_min`` is raised to it (the boundary is flat there)."""
    if not 0.0 < alpha < 1.0:
        raise OptionError(f"alpha must lie in (0, 1), got {alpha!r}", where="alpha", fix="use e.g. 0.05")
    if not (v_min > 0 and math.isfinite(v_min)):
        raise OptionError(f"v_min must be a positive number, got {v_min!r}", where="v_min", fix="use e.g. 1.0")
    use_v = np.maximum(np.asarray(v, dtype=np.float64), v_min)
    k1 = (eta ** 0.25 + eta ** -0.25) / math.sqrt(2.0)
    k2 = (math.sqrt(eta) + 1.0) / 2.0
    ell = s * np.log(np.log(eta * use_v / v_min)) + math.log(_zeta(s) / math.log(eta) ** s) + math.log(1.0 / alpha)
    term = k2 * c * ell
    return np.asarray(np.sqrt(k1 * k1 * use_v * ell + term * term) + term)


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise OptionError(f"{name} must be a finite number, got {value!r}", where=name, fix="pass a finite number")
    return number


@dataclass(frozen=True)
class ConfidenceSequence:
    """Running (1 - alpha) confidence sequence for the mean of observations in ``[low, high]``.

    Immutable: :meth:`update` returns the next state. ``interval()`` is the running intersection (valid
    at every time simultaneously); ``current_interval()`` the interval of the latest time alone.
    ``v_min`` is the intrinsic time (in units of squared observation scale) below which the boundary is
    flat; the default ``(high - low)^2 / 4 * 10`` makes it tightest around ten worst-case-variance
    observations' worth of evidence, slightly wider later (a log log factor).
    """

    low: float
    high: float
    alpha: float = 0.05
    v_min: float | None = None
    n: int = 0
    total: float = 0.0
    variance: float = 0.0
    lower: float | None = None
    upper: float | None = None
    #: Not persisted: derived from low/high.
    _scale: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        low, high = _finite(self.low, "low"), _finite(self.high, "high")
        if not low < high:
            raise OptionError(f"low must be below high, got [{low}, {high}]", where="ConfidenceSequence(low, high)",
                              fix="pass the range the observations lie in, e.g. low=-1, high=1 for differences")
        alpha = _finite(self.alpha, "alpha")
        if not 0.0 < alpha < 1.0:
            raise OptionError(f"alpha must lie in (0, 1), got {alpha}", where="ConfidenceSequence(alpha)",
                              fix="use e.g. 0.05")
        v_min = (high - low) ** 2 / 4 * 10 if self.v_min is None else _finite(self.v_min, "v_min")
        if v_min <= 0:
            raise OptionError(f"v_min must be positive, got {v_min}", where="ConfidenceSequence(v_min)",
                              fix="omit it for the default")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "v_min", v_min)
        object.__setattr__(self, "lower", low if self.lower is None else float(self.lower))
        object.__setattr__(self, "upper", high if self.upper is None else float(self.upper))
        object.__setattr__(self, "_scale", high - low)

    # -------------------------------------------------------------- state

    @property
    def mean(self) -> float:
        """Mean of the observations so far (NaN before the first)."""
        return self.total / self.n if self.n else float("nan")

    def update(self, values: Any) -> ConfidenceSequence:
        """The state after observing ``values`` (1-D, in order; each within ``[low, high]``)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        if not np.all(np.isfinite(x)):
            raise DataError("observations contain NaN or infinity", where="ConfidenceSequence.update",
                            fix="drop unlabelled or missing rows before updating")
        if x.min() < self.low or x.max() > self.high:
            raise DataError(f"observations outside [{self.low}, {self.high}]: min {x.min()}, max {x.max()}",
                            where="ConfidenceSequence.update", fix="pass values within the declared range")
        before = self.total + np.concatenate([[0.0], np.cumsum(x[:-1])])  # sum of the earlier observations
        predicted = ((self.low + self.high) / 2 + before) / (self.n + 1 + np.arange(x.size))  # predictable
        state = replace(self, n=self.n + x.size, total=self.total + float(x.sum()),
                        variance=self.variance + float(((x - predicted) ** 2).sum()))
        lo, hi = state.current_interval()
        assert self.lower is not None and self.upper is not None
        lower, upper = max(self.lower, lo), min(self.upper, hi)
        if lower > upper:  # the sequences disagree (probability <= alpha): keep one point, inside both
            lower = upper = min(max(state.mean, upper), lower)
        return replace(state, lower=lower, upper=upper)

    # -------------------------------------------------------------- intervals

    def radius(self) -> float:
        """Half-width of the latest interval before intersection and clipping (inf before any data)."""
        if self.n == 0:
            return math.inf
        assert self.v_min is not None
        bound = stitched_boundary(self.variance, self.alpha / 2, v_min=self.v_min, c=self._scale)
        return float(bound) / self.n

    def current_interval(self) -> tuple[float, float]:
        """``mean -/+ radius`` clipped to ``[low, high]``: valid at this time, not intersected with earlier ones."""
        if self.n == 0:
            return self.low, self.high
        r = self.radius()
        return max(self.low, self.mean - r), min(self.high, self.mean + r)

    def interval(self) -> tuple[float, float]:
        """The running intersection of all intervals so far: ``(lower, upper)``."""
        assert self.lower is not None and self.upper is not None
        return self.lower, self.upper

    def below(self, threshold: float) -> bool:
        """True when the whole sequence lies below ``threshold`` (e.g. accuracy under a floor, with confidence)."""
        return self.interval()[1] < threshold

    def above(self, threshold: float) -> bool:
        """True when the whole sequence lies above ``threshold``."""
        return self.interval()[0] > threshold

    # -------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-ready dict (plain numbers; ``from_json`` restores it exactly)."""
        return {"schema": SCHEMA, "method": METHOD, "low": self.low, "high": self.high, "alpha": self.alpha,
                "v_min": self.v_min, "n": self.n, "total": self.total, "variance": self.variance,
                "lower": self.lower, "upper": self.upper}

    @classmethod
    def from_json(cls, data: Any, *, where: str = "confidence sequence state") -> ConfidenceSequence:
        """Restore a state written by :meth:`to_json`; :class:`DataError` on anything else."""
        fix = "delete the monitor state to start the sequence afresh"
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise DataError(f"not a {SCHEMA} state", where=where, fix=fix)
        try:
            n = data["n"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise DataError(f"n must be a non-negative integer, got {n!r}", where=where, fix=fix)
            numbers = {k: float(data[k]) for k in ("low", "high", "alpha", "v_min", "total", "variance", "lower",
                                                   "upper")}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed state ({exc})", where=where, fix=fix) from exc
        if not all(math.isfinite(v) for v in numbers.values()) or numbers["variance"] < 0:
            raise DataError("state holds non-finite numbers or a negative variance", where=where, fix=fix)
        try:
            state = cls(numbers["low"], numbers["high"], numbers["alpha"], numbers["v_min"], n, numbers["total"],
                        numbers["variance"], numbers["lower"], numbers["upper"])
        except OptionError as exc:
            raise DataError(f"invalid state: {exc.what}", where=where, fix=fix) from exc
        if not (state.low <= numbers["lower"] <= numbers["upper"] <= state.high):
            raise DataError("the stored interval lies outside the declared range", where=where, fix=fix)
        return state


def sequential_decision(cs: ConfidenceSequence, *, margin: float = 0.0, worse_by: float = 0.0) -> Decision:
    """Decision on a difference ``challenger - champion`` (higher is better) from its confidence sequence:
    ``"worse"`` once the whole sequence lies below ``-worse_by`` (the challenger is worse with confidence:
    stop the canary), ``"non_inferior"`` once it lies above ``-margin`` (it loses at most ``margin``:
    may be promoted), else ``"undecided"``. "worse" wins when both hold. Valid at any time and under any
    stopping rule, because the sequence is."""
    margin, worse_by = _finite(margin, "margin"), _finite(worse_by, "worse_by")
    if margin < 0 or worse_by < 0:
        raise OptionError("margin and worse_by must be >= 0", where="sequential_decision",
                          fix="pass tolerated losses as positive numbers, e.g. margin=0.01")
    lower, upper = cs.interval()
    if upper < -worse_by:
        return "worse"
    if lower > -margin:
        return "non_inferior"
    return "undecided"


def msprt_p_value(mean: float, n: int, variance: float, *, null: float = 0.0, mixing_variance: float | None = None
                  ) -> float:
    """Always-valid p-value of the mixture sequential probability ratio test (mSPRT) of ``H0: mu = null``
    for a mean of n observations with per-observation variance ``variance`` (Johari, Koomen, Pekelis &
    Walsh 2017, "Peeking at A/B tests", KDD; Robbins 1970): with a normal mixture N(null, tau^2) over the
    alternative, ``Lambda_n = sqrt(V / (V + n tau^2)) exp(n^2 tau^2 (mean - null)^2 / (2 V (V + n tau^2)))``
    and ``p_n = min(1, 1 / Lambda_n)``. The caller keeps the running minimum over looks (``p_n`` itself
    is valid at any stopping time; the running minimum is the always-valid p-value). Exact for normal
    observations with known variance, asymptotic with a plug-in variance; prefer
    :class:`ConfidenceSequence` (nonasymptotic for bounded observations) where it applies.
    ``mixing_variance`` tau^2 defaults to ``variance``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise OptionError(f"n must be a non-negative integer, got {n!r}", where="msprt_p_value(n)",
                          fix="pass the number of observations")
    v = _finite(variance, "variance")
    tau2 = v if mixing_variance is None else _finite(mixing_variance, "mixing_variance")
    if v <= 0 or tau2 <= 0:
        raise OptionError("variance and mixing_variance must be positive", where="msprt_p_value",
                          fix="pass the per-observation variance (e.g. the sample variance, floored)")
    if n == 0:
        return 1.0
    delta = _finite(mean, "mean") - _finite(null, "null")
    log_lambda = 0.5 * math.log(v / (v + n * tau2)) + n * n * tau2 * delta * delta / (2.0 * v * (v + n * tau2))
    return float(min(1.0, math.exp(-log_lambda)))
