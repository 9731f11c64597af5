"""Rollout decisions that stay valid under continuous monitoring (issue 15, deliverable 2).

A server looks at its challenger after every batch of traffic and acts the first time the evidence is strong
enough; a test repeated at every look would stop good challengers (and roll back healthy models) far more often
than its nominal level. Every decision here reads a confidence sequence (:mod:`assay.stats.sequential`,
empirical Bernstein, Howard et al. 2021), valid at all times at once, so it may be checked after every request.

* **Shadow** (paired): the champion (role ``primary``) and the challenger (role ``shadow``) score the same request.
  Per row: ``d_est = 1{conf_c > t_c} - 1{conf_p > t_p}`` in {-1, 0, 1}, the difference of the ATC "predicted
  correct" indicators (Garg et al. 2022; each model's threshold ``t`` from its own evaluation reference), whose
  mean is ATC(challenger) - ATC(champion); once a label arrives, ``d_real = 1{top1_c = y} - 1{top1_p = y}`` and
  the negative flip ``1{top1_p = y and top1_c != y}`` (Yan et al. 2021).
* **Canary** (unpaired): a request goes to one model or the other. Each arm's indicators get a sequence at half
  the level; the difference interval is ``[lo_c - hi_p, hi_c - lo_p]`` (a union bound: valid at all times
  because both sequences are).
* **Production floor**: the champion's estimated and realized accuracy against ``floor``. One sequence over all
  traffic since deployment reacts slowly to a shift that starts late (the mean dilutes), so the sequence restarts
  every ``epoch`` rows, epoch k spending ``alpha_k = alpha * 6 / (pi^2 k^2)`` (the alphas sum to alpha): a stream
  that never falls below the floor triggers a rollback with probability at most alpha over its whole life, and a
  shift is caught within about one epoch after it starts.

The challenger's error budget ``alpha`` is split evenly (Bonferroni) over the sequences a decision reads
(estimated difference, realized difference, negative flips when a ``max_negative_flip_rate`` is set), so the
stop/promote decision as a whole keeps its level. "worse": some sequence says the challenger is worse with
confidence; "non_inferior": every sequence with data says it loses at most ``margin``.

What the intervals do not cover: the ATC estimate's own error under shift (the label-free check in ``evaluate``
measures it; realized accuracy, when labels come, does not depend on it).

The tracker is fed on the request path with plain appends (``observe``, ``label``); ``flush`` updates the
sequences in batches, off the request path.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from assay.errors import OptionError
from assay.stats.sequential import ConfidenceSequence

__all__ = ["Decision", "RolloutSettings", "RolloutTracker", "epoch_alpha"]

Decision = Literal["worse", "non_inferior", "undecided"]
Mode = Literal["none", "shadow", "canary"]
#: rows waiting for a label (or for their pair) are kept up to this many; the oldest go first.
MAX_PENDING = 100_000


def epoch_alpha(alpha: float, epoch: int) -> float:
    """The error spent on epoch ``epoch`` (1-based) of a restarted sequence: alpha * 6 / (pi^2 k^2); the sum over
    all epochs is alpha."""
    return alpha * 6.0 / (math.pi ** 2 * epoch ** 2)


@dataclass(frozen=True)
class RolloutSettings:
    """``alpha``: error of each decision (stop a good challenger / roll back a healthy model) over the whole life
    of the rollout; ``margin``: the accuracy a challenger may lose and still count as non-inferior (auto
    promotion); ``worse_by``: how much worse a challenger must be to stop it (0: any loss, with confidence);
    ``max_negative_flip_rate``: also stop a challenger whose negative flip rate exceeds this with confidence
    (None: not used); ``floor``: the accuracy the production model must keep (None: no rollback);
    ``epoch``: rows per restart of the floor's sequence."""

    alpha: float = 0.05
    margin: float = 0.02
    worse_by: float = 0.0
    max_negative_flip_rate: float | None = None
    floor: float | None = None
    epoch: int = 500

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise OptionError(f"alpha {self.alpha} is not in (0, 1)", where="alpha", fix="use e.g. 0.05")
        for name in ("margin", "worse_by"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise OptionError(f"{name} {getattr(self, name)} is not in [0, 1)", where=name,
                                  fix="give an accuracy difference such as 0.02")
        for name in ("max_negative_flip_rate", "floor"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise OptionError(f"{name} {value} is not in (0, 1)", where=name, fix="give a rate such as 0.9")
        if self.epoch < 10:
            raise OptionError(f"epoch {self.epoch} is too short (at least 10 rows)", where="epoch",
                              fix="use a few hundred rows, e.g. 500")


def _cs(low: float, high: float, alpha: float) -> ConfidenceSequence:
    return ConfidenceSequence(low=low, high=high, alpha=alpha)


def _summary(cs: ConfidenceSequence | None) -> dict[str, Any] | None:
    if cs is None or cs.n == 0:
        return None
    lo, hi = cs.interval()
    return {"value": cs.mean, "ci": [lo, hi], "n": cs.n}


class _Floor:
    """A restarted sequence of one indicator (estimated or realized correctness) against the floor."""

    def __init__(self, alpha: float, epoch: int) -> None:
        self.alpha, self.epoch_rows = alpha, epoch
        self.epoch = 1
        self.cs = _cs(0.0, 1.0, epoch_alpha(alpha, 1))
        self.breached: dict[str, Any] | None = None

    def update(self, values: np.ndarray, floor: float) -> None:
        start = 0
        while start < len(values):
            room = self.epoch_rows - self.cs.n
            if room <= 0:
                self.epoch += 1
                self.cs = _cs(0.0, 1.0, epoch_alpha(self.alpha, self.epoch))
                continue
            chunk = values[start:start + room]
            self.cs = self.cs.update(chunk)
            start += len(chunk)
            if self.breached is None and self.cs.below(floor):
                lo, hi = self.cs.interval()
                self.breached = {"epoch": self.epoch, "value": self.cs.mean, "ci": [lo, hi], "n": self.cs.n,
                                 "alpha": self.cs.alpha}

    def summary(self) -> dict[str, Any] | None:
        out = _summary(self.cs)
        if out is not None:
            out["epoch"] = self.epoch
        return out


class RolloutTracker:
    """Sequential champion-vs-challenger comparison and the production floor, fed from the serving path.

    ``champion_threshold`` / ``challenger_threshold``: each model's ATC threshold on its top-label confidence
    (None: no label-free estimate for that model, only realized accuracy once labels arrive)."""

    def __init__(self, *, mode: Mode, settings: RolloutSettings | None = None,
                 champion_threshold: float | None = None, challenger_threshold: float | None = None,
                 challenger: str | None = None) -> None:
        if mode not in ("none", "shadow", "canary"):
            raise OptionError(f"unknown rollout mode {mode!r}", where="mode", fix="use none, shadow or canary")
        self.mode, self.settings, self.challenger = mode, settings or RolloutSettings(), challenger
        self.t_champion, self.t_challenger = champion_threshold, challenger_threshold
        s = self.settings
        sequences = 2 + (s.max_negative_flip_rate is not None)
        a = s.alpha / sequences
        if mode == "shadow":
            self.estimated: list[ConfidenceSequence] = [_cs(-1.0, 1.0, a)]
            self.realized: list[ConfidenceSequence] = [_cs(-1.0, 1.0, a)]
        else:  # canary: one sequence per arm (champion, challenger), each at half the level
            self.estimated = [_cs(0.0, 1.0, a / 2), _cs(0.0, 1.0, a / 2)]
            self.realized = [_cs(0.0, 1.0, a / 2), _cs(0.0, 1.0, a / 2)]
        self.flips = _cs(0.0, 1.0, a)
        # the production floor: estimated and realized accuracy, each at half of alpha
        self.floor_estimated = _Floor(s.alpha / 2, s.epoch)
        self.floor_realized = _Floor(s.alpha / 2, s.epoch)
        self._rows: list[tuple[str, str, int, int, float]] = []  # (role, request id, row, top1, confidence)
        self._labels: list[tuple[str, int, int]] = []
        self._pairs: OrderedDict[tuple[str, int], dict[str, tuple[int, float]]] = OrderedDict()
        self._awaiting: OrderedDict[tuple[str, int], dict[str, int]] = OrderedDict()
        self.stopped: dict[str, Any] | None = None

    # ------------------------------------------------------------------ request path (appends only)
    def observe(self, role: str, request_id: str, top1: np.ndarray, confidence: np.ndarray) -> None:
        """Rows a model answered (role primary, shadow or canary), in row order."""
        for i, (t, c) in enumerate(zip(np.asarray(top1).tolist(), np.asarray(confidence).tolist(), strict=True)):
            self._rows.append((role, request_id, i, int(t), float(c)))

    def label(self, request_id: str, row: int, label: int) -> None:
        """A true label that arrived for a logged row."""
        self._labels.append((request_id, int(row), int(label)))

    # ------------------------------------------------------------------ off the request path
    def _estimated_indicator(self, role: str, confidence: float) -> float | None:
        threshold = self.t_champion if role == "primary" else self.t_challenger
        return None if threshold is None else float(confidence > threshold)

    def flush(self) -> None:
        """Update every sequence with what ``observe``/``label`` collected since the last flush."""
        rows, self._rows = self._rows, []
        labels, self._labels = self._labels, []
        est_diff: list[float] = []
        est_arm: tuple[list[float], list[float]] = ([], [])
        floor_est: list[float] = []
        for role, rid, row, top1, conf in rows:
            key = (rid, row)
            indicator = self._estimated_indicator(role, conf)
            if role == "primary" and indicator is not None:
                floor_est.append(indicator)
            self._remember(self._awaiting, key, role, top1)
            if self.mode == "shadow" and role in ("primary", "shadow"):
                pair = self._pairs.setdefault(key, {})
                pair[role] = (top1, conf)
                if len(pair) == 2:
                    del self._pairs[key]
                    a = self._estimated_indicator("primary", pair["primary"][1])
                    b = self._estimated_indicator("shadow", pair["shadow"][1])
                    if a is not None and b is not None:
                        est_diff.append(b - a)
                elif len(self._pairs) > MAX_PENDING:
                    self._pairs.popitem(last=False)
            elif self.mode == "canary" and role in ("primary", "canary") and indicator is not None:
                est_arm[role == "canary"].append(indicator)
        real_diff: list[float] = []
        flips: list[float] = []
        real_arm: tuple[list[float], list[float]] = ([], [])
        floor_real: list[float] = []
        for rid, row, y in labels:
            seen = self._awaiting.get((rid, row))
            if seen is None:
                continue
            if "primary" in seen:
                floor_real.append(float(seen["primary"] == y))
            if self.mode == "shadow" and "primary" in seen and "shadow" in seen:
                p_ok, c_ok = seen["primary"] == y, seen["shadow"] == y
                real_diff.append(float(c_ok) - float(p_ok))
                flips.append(float(p_ok and not c_ok))
            elif self.mode == "canary":
                for arm, role in enumerate(("primary", "canary")):
                    if role in seen:
                        real_arm[arm].append(float(seen[role] == y))
            del self._awaiting[(rid, row)]
        if self.mode == "shadow":
            if est_diff:
                self.estimated[0] = self.estimated[0].update(np.asarray(est_diff))
            if real_diff:
                self.realized[0] = self.realized[0].update(np.asarray(real_diff))
                self.flips = self.flips.update(np.asarray(flips))
        elif self.mode == "canary":
            for arm in (0, 1):
                if est_arm[arm]:
                    self.estimated[arm] = self.estimated[arm].update(np.asarray(est_arm[arm]))
                if real_arm[arm]:
                    self.realized[arm] = self.realized[arm].update(np.asarray(real_arm[arm]))
        if self.settings.floor is not None:
            if floor_est:
                self.floor_estimated.update(np.asarray(floor_est), self.settings.floor)
            if floor_real:
                self.floor_realized.update(np.asarray(floor_real), self.settings.floor)

    @staticmethod
    def _remember(store: OrderedDict[tuple[str, int], dict[str, int]], key: tuple[str, int], role: str,
                  top1: int) -> None:
        store.setdefault(key, {})[role] = top1
        if len(store) > MAX_PENDING:
            store.popitem(last=False)

    # ------------------------------------------------------------------ decisions
    def _difference(self, sequences: list[ConfidenceSequence]) -> dict[str, Any] | None:
        """The challenger-minus-champion difference with its always-valid interval."""
        if self.mode == "shadow":
            return _summary(sequences[0])
        champion, challenger = sequences
        if champion.n == 0 or challenger.n == 0:
            return None
        (lo_p, hi_p), (lo_c, hi_c) = champion.interval(), challenger.interval()
        return {"value": challenger.mean - champion.mean, "ci": [max(-1.0, lo_c - hi_p), min(1.0, hi_c - lo_p)],
                "n": min(champion.n, challenger.n), "n_champion": champion.n, "n_challenger": challenger.n}

    def challenger_decision(self) -> dict[str, Any]:
        """``{"decision": worse|non_inferior|undecided, "reason": ..., "estimated": ..., "realized": ...,
        "negative_flips": ...}`` for the challenger (mode shadow or canary)."""
        if self.mode == "none":
            return {"decision": "undecided", "reason": "no challenger"}
        s = self.settings
        parts = {"estimated": self._difference(self.estimated), "realized": self._difference(self.realized),
                 "negative_flips": _summary(self.flips) if self.mode == "shadow" else None}
        verdicts: list[tuple[str, Decision]] = []
        for kind in ("estimated", "realized"):
            part = parts[kind]
            if part is not None:
                lo, hi = part["ci"]
                verdicts.append((kind, _decide(lo, hi, s.margin, s.worse_by)))
        flips = parts["negative_flips"]
        if s.max_negative_flip_rate is not None and flips is not None and flips["ci"][0] > s.max_negative_flip_rate:
            verdicts.append(("negative_flips", "worse"))
        worse = [kind for kind, v in verdicts if v == "worse"]
        if worse:
            decision: Decision = "worse"
            reason = f"the challenger is worse with confidence ({', '.join(worse)})"
        elif verdicts and all(v == "non_inferior" for _, v in verdicts):
            decision = "non_inferior"
            reason = f"the challenger loses at most {s.margin:g} with confidence ({', '.join(k for k, _ in verdicts)})"
        else:
            decision = "undecided"
            reason = "not enough evidence yet" if verdicts else "no comparable rows yet"
        return {"decision": decision, "reason": reason, **parts, "alpha": s.alpha, "margin": s.margin}

    def floor_breach(self) -> dict[str, Any] | None:
        """The first time estimated or realized accuracy of the production model fell below the floor with
        confidence (``{"kind", "value", "ci", "n", "epoch", "alpha"}``), or None."""
        for kind, floor in (("realized", self.floor_realized), ("estimated", self.floor_estimated)):
            if floor.breached is not None:
                return {"kind": kind, **floor.breached, "floor": self.settings.floor}
        return None

    def summary(self) -> dict[str, Any]:
        """The snapshot's ``rollout`` fields (see docs/monitoring.md)."""
        decision = self.challenger_decision()
        difference = None
        for kind in ("realized", "estimated"):
            part = decision.get(kind)
            if part is not None:
                difference = {"kind": kind, **{k: part[k] for k in ("value", "ci", "n")}}
                break
        return {"state": self.mode if self.stopped is None else "stopped", "challenger": self.challenger,
                "difference": difference, "decision": decision["decision"], "reason": decision["reason"],
                "negative_flips": decision.get("negative_flips"),
                "floor": None if self.settings.floor is None else {
                    "floor": self.settings.floor, "estimated": self.floor_estimated.summary(),
                    "realized": self.floor_realized.summary(), "breach": self.floor_breach()},
                "stopped": self.stopped}

    def restart_floor(self) -> None:
        """Start the production floor's sequences afresh (after a rollback: a new model answers)."""
        self.floor_estimated = _Floor(self.settings.alpha / 2, self.settings.epoch)
        self.floor_realized = _Floor(self.settings.alpha / 2, self.settings.epoch)
        for seen in self._awaiting.values():
            seen.pop("primary", None)


def _decide(lo: float, hi: float, margin: float, worse_by: float) -> Decision:
    """:func:`assay.stats.sequential.sequential_decision`'s rule on an interval, which here may also be the
    canary's union-bound difference of two sequences: worse below -worse_by, non-inferior above -margin."""
    if hi < -worse_by:
        return "worse"
    if lo > -margin:
        return "non_inferior"
    return "undecided"
