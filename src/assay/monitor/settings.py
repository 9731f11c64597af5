"""How the monitor cuts the prediction log into windows and decides an alarm (:class:`MonitorSettings`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, Literal

from assay.errors import OptionError

__all__ = ["MonitorSettings", "parse_window"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_window(text: str | int) -> tuple[Literal["count", "time"], float]:
    """``"500"`` -> ("count", 500) rows per window; ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"`` -> ("time", seconds)."""
    value = str(text).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", value)
    if match is None:
        raise OptionError(f"--window {text!r} is neither a row count nor a duration", where="window",
                          fix="give rows per window (e.g. 1000) or a duration (30s, 15m, 1h, 1d)")
    number, unit = float(match.group(1)), match.group(2)
    if not unit:
        if number != int(number) or number < 1:
            raise OptionError(f"--window {text!r} must be a whole number of rows >= 1", where="window",
                              fix="e.g. --window 1000")
        return "count", float(int(number))
    if number <= 0:
        raise OptionError(f"--window {text!r} must be a positive duration", where="window", fix="e.g. --window 1h")
    return "time", number * _UNITS[unit]


@dataclass(frozen=True)
class MonitorSettings:
    """Windows, tests and alarm rules of a :class:`~assay.monitor.Monitor` (stored with its state).

    ``window_kind``/``window_size``: windows of ``window_size`` rows (``"count"``) or seconds of log time
    (``"time"``: aligned buckets ``[k s, (k + 1) s)``). A window with fewer than ``min_window`` rows is
    reported as insufficient data and raises no alarm.

    Alarms: the tests with a p-value (chi-squared on the class mix of small windows, binned KS on
    confidence, entropy and each monitored feature, Fisher's exact test on the ATC, near-margin and OOD
    shares, MMD permutation test on embeddings) are adjusted by Benjamini-Hochberg per window, in three
    families (output, features, multivariate) whose levels share ``fdr`` (0.4 / 0.5 / 0.1), so that under
    no drift a window alarms with probability at most ``fdr``; a
    window of at least ``small_window`` rows judges its class mix by the Jensen-Shannon distance against a
    threshold calibrated on reference chunks of the window's size: the ``threshold_quantile`` order
    statistic (``threshold_rule="quantile"``, the conformal rule of ``ChunkStatistics.threshold``: a false
    alarm rate of at most 1 - q, added to ``fdr``; it needs q / (1 - q) chunks of the window's size in the
    reference) or mean + ``n_sigma`` standard deviations (``"sigma"``, at least 20 chunks); with fewer
    chunks the chi-squared p-value is used as for small windows. ``margin``: a prediction is near the
    decision margin when its top two probabilities differ by less than this. ``ood_tpr``: the OOD detector (max softmax
    probability) keeps this share of reference inputs. ``sample_size``: embedding rows kept per window
    (seeded bottom-k sample) for the MMD test (0: no MMD); ``mmd_permutations`` its permutations.
    ``roles``: which logged roles are monitored. ``keep_windows``: closed windows kept in the state.
    """

    window_kind: Literal["count", "time"] = "count"
    window_size: float = 1000
    min_window: int = 100
    fdr: float = 0.05
    small_window: int = 2000
    threshold_rule: Literal["quantile", "sigma"] = "quantile"
    threshold_quantile: float = 0.99
    n_sigma: float = 3.0
    margin: float = 0.1
    ood_tpr: float = 0.95
    sample_size: int = 200
    mmd_permutations: int = 200
    roles: tuple[str, ...] = ("primary",)
    keep_windows: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, what: str, fix: str) -> OptionError:
            return OptionError(f"{name} {what}, got {getattr(self, name)!r}", where=name, fix=fix)

        if self.window_kind not in ("count", "time"):
            raise bad("window_kind", "must be 'count' or 'time'", "use window_kind='count'")
        size = self.window_size
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size <= 0 \
                or (self.window_kind == "count" and size != int(size)):
            raise bad("window_size", "must be a positive number (whole for count windows)", "e.g. 1000")
        for name, lo in (("min_window", 1), ("small_window", 1), ("sample_size", 0), ("mmd_permutations", 1),
                         ("keep_windows", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise bad(name, f"must be an integer >= {lo}", f"e.g. {getattr(MonitorSettings, name)}")
        for name in ("fdr", "threshold_quantile", "margin", "ood_tpr", "confidence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise bad(name, "must lie in (0, 1)", f"e.g. {getattr(MonitorSettings, name)}")
        if self.threshold_rule not in ("quantile", "sigma"):
            raise bad("threshold_rule", "must be 'quantile' or 'sigma'", "use 'quantile' (default) or 'sigma'")
        if isinstance(self.n_sigma, bool) or not isinstance(self.n_sigma, (int, float)) or not self.n_sigma > 0:
            raise bad("n_sigma", "must be positive", "e.g. 3")
        if not self.roles or not all(r in ("primary", "shadow", "canary") for r in self.roles):
            raise bad("roles", "must name roles among primary, shadow, canary", "e.g. roles=('primary',)")

    @property
    def threshold_method(self) -> str:
        """The alarm rules in words (the snapshot's ``threshold_method``)."""
        rule = (f"chunk quantile {self.threshold_quantile:g}" if self.threshold_rule == "quantile"
                else f"mean+{self.n_sigma:g}sd")
        return (f"Benjamini-Hochberg per window, false-alarm budget {self.fdr:g} shared by the output tests (0.4), the "
                f"features (0.5) and the embedding MMD (0.1); class-mix JS of windows >= {self.small_window} rows: "
                f"{rule} of reference chunks")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["roles"] = list(self.roles)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MonitorSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(f"unknown monitor settings {unknown}", where="settings", fix=f"use {sorted(known)}")
        given = dict(values)
        if "roles" in given:
            given["roles"] = tuple(given["roles"])
        return cls(**given)
