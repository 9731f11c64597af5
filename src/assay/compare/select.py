"""Model selection under constraints: a leaderboard over the trust dimensions, a Pareto front, and a pick.

Constraints use a small fixed grammar, ``METRIC OP NUMBER`` with OP one of ``<= < >= > ==`` (parsed by a
regular expression, never ``eval``), and are judged on point estimates. Among the feasible models the
best on the objective wins; but every feasible model whose paired difference from it is not significant
(the CI of the paired delta contains 0) ties with it, and among tied models the cheapest (latency, else
file size) is picked, and the output says so.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from assay.compare.gate import Side
from assay.errors import PolicyError, UserError

__all__ = ["COLUMNS", "Constraint", "Selection", "leaderboard_row", "pareto_front", "parse_constraint", "select_from"]

#: Leaderboard columns: (higher is better?, description).
COLUMNS: dict[str, tuple[bool, str]] = {
    "accuracy": (True, "top-1 accuracy"),
    "macro_f1": (True, "macro-F1"),
    "worst_class_accuracy": (True, "lowest per-class recall"),
    "worst_slice_accuracy": (True, "lowest accuracy over slices with enough samples"),
    "ece": (False, "expected calibration error"),
    "nll": (False, "mean negative log-likelihood"),
    "robust_accuracy": (True, "adversarial robust accuracy"),
    "mean_corruption_accuracy": (True, "mean accuracy under corruptions"),
    "latency_p95_ms": (False, "p95 latency at batch 1, ms"),
    "model_size_mb": (False, "model file size, MB"),
}
_PAIRED_OBJECTIVES = ("accuracy", "macro_f1", "ece", "nll")
_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, "<": operator.lt, ">=": operator.ge,
                                                    ">": operator.gt, "==": operator.eq}
#: METRIC OP NUMBER, ASCII only. Each part has one way to match (no nested or adjacent optional digit runs), so
#: matching is linear in the length: ``\d+\.?\d*`` would backtrack quadratically on a long run of digits.
_CONSTRAINT = re.compile(r"[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*(<=|>=|==|<|>)[ \t]*"
                         r"([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)[ \t]*", re.ASCII)
#: The longest constraint accepted (``worst_class_accuracy >= 0.875`` is 30 characters).
MAX_CONSTRAINT_CHARS = 200
_FRACTION_COLUMNS = ("accuracy", "macro_f1", "worst_class_accuracy", "worst_slice_accuracy", "ece",
                     "robust_accuracy", "mean_corruption_accuracy")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    value: float

    def holds(self, x: float | None) -> bool:
        return x is not None and math.isfinite(x) and _OPS[self.op](x, self.value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


def parse_constraint(text: str) -> Constraint:
    """``"latency_p95_ms<=5"`` -> Constraint; anything else is a PolicyError naming the known metrics.

    Untrusted text: its length is bounded before matching, the grammar is ASCII (``float`` would otherwise
    accept Arabic-Indic or full-width digits), and the number must be finite."""
    where, grammar = "constraints", "write METRIC OP NUMBER with OP one of <=, <, >=, >, ==, e.g. latency_p95_ms<=5"
    if not isinstance(text, str):
        raise PolicyError(f"a constraint must be text, got {type(text).__name__}", where=where, fix=grammar)
    if len(text) > MAX_CONSTRAINT_CHARS:
        raise PolicyError(f"the constraint {_shown(text)} is {len(text):,} characters long (at most "
                          f"{MAX_CONSTRAINT_CHARS})", where=where, fix=grammar)
    odd = next((c for c in text if not (c.isascii() and (c.isprintable() or c in " \t"))), None)
    if odd is not None:
        raise PolicyError(f"the constraint {_shown(text)} contains the character {odd!r} (U+{ord(odd):04X})",
                          where=where, fix=grammar + "; ASCII only (digits 0-9)")
    match = _CONSTRAINT.fullmatch(text)
    if match is None:
        number = text.split("=")[-1].split("<")[-1].split(">")[-1].strip().lower().lstrip("+-")
        if number in ("nan", "inf", "infinity"):
            raise PolicyError(f"the constraint {_shown(text)} has the bound {number}", where=where,
                              fix="give a finite number, e.g. accuracy>=0.9")
        raise PolicyError(f"cannot parse the constraint {_shown(text)}", where=where, fix=grammar)
    metric, op, value = match.group(1), match.group(2), float(match.group(3))
    if metric not in COLUMNS:
        raise PolicyError(f"unknown metric {metric!r} in the constraint {_shown(text)}", where=where,
                          fix=f"use one of: {', '.join(COLUMNS)}")
    if not math.isfinite(value):
        raise PolicyError(f"the bound {match.group(3)[:30]!r} of the constraint on {metric} is not a finite number",
                          where=where, fix="give a bound within float range, e.g. latency_p95_ms<=5")
    if metric in _FRACTION_COLUMNS and not 0.0 <= value <= 1.0:
        raise PolicyError(f"{metric} is a fraction in [0, 1], so the constraint {_shown(text)} can never "
                          "discriminate", where=where, fix=f"write the bound as a fraction, e.g. {metric}{op}0.9 "
                          "for 90%")
    return Constraint(metric, op, value)


def _value(side: Side, section: str, key: str) -> float | None:
    metric = side.evidence.metric(section, key)
    if metric is None:
        return None
    assert metric.value is not None  # Evidence.metric returns only measured metrics
    return float(metric.value)


def worst_class_accuracy(evidence: Any) -> float | None:
    """Lowest per-class recall over the classes present in the evaluation data (None without it)."""
    perf = evidence.sections.get("performance")
    per_class = perf.tables.get("per_class", []) if perf is not None else []
    supported = [r["recall"] for r in per_class if r.get("support", 1) and r.get("recall") is not None]
    return float(min(supported)) if supported else None


def leaderboard_row(side: Side) -> dict[str, Any]:
    """The leaderboard columns of one evaluated model (None where not measured)."""
    ev = side.evidence
    slices = ev.sections.get("slices")
    slice_accs = [r["accuracy"] for t in (slices.tables.values() if slices else []) for r in t
                  if not r.get("insufficient")]
    size = _value(side, "efficiency", "model_size_mb")
    if size is None and Path(ev.model.path).is_file():
        size = Path(ev.model.path).stat().st_size / 2**20
    row: dict[str, Any] = {
        "model": side.name, "path": side.path, "sha256": ev.model.sha256,
        "accuracy": _value(side, "performance", "accuracy"), "macro_f1": _value(side, "performance", "macro_f1"),
        "worst_class_accuracy": worst_class_accuracy(ev),
        "worst_slice_accuracy": float(min(slice_accs)) if slice_accs else None,
        "ece": _value(side, "calibration", "ece"), "nll": _value(side, "performance", "nll"),
        "robust_accuracy": _value(side, "adversarial", "robust_accuracy"),
        "mean_corruption_accuracy": _value(side, "corruption", "mean_corruption_accuracy"),
        "latency_p95_ms": _value(side, "efficiency", "latency_p95_ms"), "model_size_mb": size,
    }
    acc = ev.metric("performance", "accuracy")
    row["accuracy_ci"] = [acc.ci_low, acc.ci_high] if acc is not None else None
    return row


def pareto_front(cost: np.ndarray, benefit: np.ndarray) -> np.ndarray:
    """Indices of the points no other point dominates (lower-or-equal cost and higher-or-equal benefit, one
    strictly), sorted by cost."""
    cost, benefit = np.asarray(cost, float), np.asarray(benefit, float)
    keep = []
    for i in range(len(cost)):
        dominated = np.any((cost <= cost[i]) & (benefit >= benefit[i]) & ((cost < cost[i]) | (benefit > benefit[i])))
        if not dominated and np.isfinite(cost[i]) and np.isfinite(benefit[i]):
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: (cost[i], -benefit[i])), dtype=int)


@dataclass
class Selection:
    rows: list[dict[str, Any]]
    objective: str
    constraints: list[str]
    pick: str | None
    reasons: list[str]
    cost_metric: str | None
    front: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "constraints": self.constraints, "pick": self.pick,
                "reasons": self.reasons, "cost_metric": self.cost_metric, "pareto_front": self.front,
                "leaderboard": self.rows}


class _Bootstrap(TypedDict):
    """Resampling options passed through to the assay.stats.paired functions."""

    n_resamples: int
    seed: int
    confidence: float


def _paired_delta_ci(best: Side, other: Side, objective: str, n_bootstrap: int, seed: int,
                     confidence: float) -> tuple[float, float, float]:
    """(delta, lo, hi) of other minus best on a paired objective."""
    from assay.compare.gate import _check_pair
    from assay.stats.paired import (
        paired_classification,
        paired_ece_delta,
        paired_mean_delta,
    )
    from assay.stats.probabilities import nll_per_sample, softmax

    labels, _ids, la, lb = _check_pair(best, other)
    opts: _Bootstrap = {"n_resamples": n_bootstrap, "seed": seed, "confidence": confidence}
    if objective in ("accuracy", "macro_f1"):
        pc = paired_classification(labels, la.argmax(1), lb.argmax(1), la.shape[1], **opts)
        est = pc.accuracy_delta if objective == "accuracy" else pc.macro_f1_delta
    elif objective == "ece":
        pa, pb = softmax(la), softmax(lb)
        est = paired_ece_delta(pa.max(1), pa.argmax(1) == labels, pb.max(1), pb.argmax(1) == labels, **opts)
    else:
        est = paired_mean_delta(nll_per_sample(la, labels), nll_per_sample(lb, labels), **opts)
    return est.value, est.ci_low, est.ci_high


def select_from(sides: list[Side], constraints: list[Constraint], objective: str = "accuracy", *,
                n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> Selection:
    """Leaderboard, feasibility, Pareto front and the pick (see the module docstring)."""
    if objective not in COLUMNS:
        raise UserError(f"unknown objective {objective!r}", where="objective", fix=f"use one of: {', '.join(COLUMNS)}")
    higher = COLUMNS[objective][0]
    rows = [leaderboard_row(s) for s in sides]
    for row in rows:
        row["violations"] = [str(c) for c in constraints if not c.holds(row[c.metric])]
        row["feasible"] = not row["violations"]
    for c in constraints:
        if all(r[c.metric] is None for r in rows):
            raise UserError(f"no model has {c.metric} measured, so the constraint {c} cannot be judged",
                            where="constraints", fix="drop it, or evaluate with the check that measures it")
    if all(r[objective] is None for r in rows):
        raise UserError(f"no model has {objective} measured", where="objective",
                        fix="choose a measured objective, e.g. accuracy")
    cost_metric = "latency_p95_ms" if all(r["latency_p95_ms"] is not None for r in rows) else \
        "model_size_mb" if all(r["model_size_mb"] is not None for r in rows) else None
    front: list[int] = []
    if cost_metric is not None:
        benefit = np.array([r["accuracy"] if r["accuracy"] is not None else np.nan for r in rows])
        front = pareto_front(np.array([r[cost_metric] for r in rows], float), benefit).tolist()
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    feasible = [i for i, r in enumerate(rows) if r["feasible"] and r[objective] is not None]
    reasons: list[str] = []
    if not feasible:
        closest = min(range(len(rows)), key=lambda i: len(rows[i]["violations"]))
        reasons.append(f"no model meets every constraint; closest: {rows[closest]['model']} "
                       f"(violates {', '.join(rows[closest]['violations'])})")
        return Selection(rows, objective, [str(c) for c in constraints], None, reasons, cost_metric, front)
    sign = 1.0 if higher else -1.0
    best = max(feasible, key=lambda i: sign * rows[i][objective])
    reasons.append(f"{rows[best]['model']} is best on {objective} ({rows[best][objective]:.4f}) among "
                   f"{len(feasible)} model(s) meeting {', '.join(map(str, constraints)) or 'no constraints'}")
    tied = [best]
    if objective in _PAIRED_OBJECTIVES:
        for i in feasible:
            if i == best:
                continue
            delta, lo, hi = _paired_delta_ci(sides[best], sides[i], objective, n_bootstrap, seed, confidence)
            rows[i][f"{objective}_delta_vs_best"] = [delta, lo, hi]
            if lo <= 0.0 <= hi:
                tied.append(i)
    pick = best
    if len(tied) > 1 and cost_metric is not None:
        pick = min(tied, key=lambda i: (rows[i][cost_metric], -sign * rows[i][objective]))
        if pick != best:
            reasons.append(
                f"{rows[pick]['model']} is statistically indistinguishable from it on {objective} (paired "
                f"{int(confidence * 100)}% CI of the difference contains 0) and cheaper on {cost_metric} "
                f"({rows[pick][cost_metric]:.4g} vs {rows[best][cost_metric]:.4g}): picked the cheaper one")
        else:
            reasons.append(f"{len(tied) - 1} other model(s) tie with it on {objective}, none cheaper on {cost_metric}")
    elif len(tied) > 1:
        reasons.append(f"{len(tied) - 1} other model(s) tie with it on {objective}; no cost was measured for all, "
                       "so the best point estimate is kept")
    return Selection(rows, objective, [str(c) for c in constraints], rows[pick]["model"], reasons, cost_metric, front)
