"""The regression gate: paired statistics of two evidence bundles on the same data, judged by a policy.

Each rule ends **pass** (the whole CI is within the limit), **fail** (the whole CI is past it: the data
shows the regression at the policy's confidence) or **inconclusive** (the CI contains the limit; we say
how many evaluation samples would settle it -- for latency, whose CIs come from timing runs, how many
timing runs). The verdict is fail if any rule fails, else inconclusive if any rule is, else pass; the exit
code of ``assay compare`` is 1 for fail and 0 otherwise (no regression shown; ``--fail-on-inconclusive``
makes inconclusive exit 1 too).

Per-class and per-slice rules work on each group's paired 2x2 table with exact statistics
(:func:`assay.stats.paired.paired_delta_interval`: the accuracy delta's interval inverting exact
unconditional score tests, coverage at least nominal also with no or one discordant pair, where a
bootstrap interval collapses or understates). A group **fails** when its exact one-sided p-value of
"dropped beyond the limit" stays significant after correction across the family (Holm by default; the
p-value is the test the interval inverts, at a limit of 0 the exact McNemar test) and its whole interval
is past the limit; it **passes** when its exact lower bound is within the limit, or when none of its
samples went from right to wrong (such a group is no evidence of harm and never holds the rule open);
otherwise it is inconclusive. The rule fails when a group fails, is inconclusive when a group is, and
passes otherwise: passing needs every group's own bound (an intersection-union test, which needs no
correction). Noise alone therefore fails a rule with probability at most ``(1 - confidence) / 2`` per rule
(per family for the group rules).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.compare.policy import Policy, Rule
from assay.errors import UserError
from assay.evidence.bundle import read_evidence, read_predictions
from assay.evidence.schema import Evidence, Metric
from assay.report.formatting import NumberFormat
from assay.stats.multiple_testing import benjamini_hochberg, holm
from assay.stats.paired import (
    GroupDelta,
    PairedEstimate,
    mcnemar_one_sided,
    paired_classification,
    paired_ece_delta,
    paired_group_deltas,
    paired_mean_delta,
    required_sample_size,
)
from assay.stats.probabilities import log_softmax

__all__ = ["COMPARISON_SCHEMA_VERSION", "Comparison", "RuleResult", "Side", "compare_sides",
           "side_from_bundle"]

COMPARISON_SCHEMA_VERSION = "1.0"
Status = Literal["pass", "fail", "inconclusive", "skipped"]
MIN_GROUP_SIZE = 30
MAX_FLIPS_LISTED = 50
#: What each verdict means for the exit code of `assay compare` (said in comparison.json's notes and .md).
_EXIT_NOTE = {
    "pass": "exit code 0: every rule passed",
    "fail": "exit code 1: at least one rule failed (the data show a regression at the policy's confidence)",
    "inconclusive": "exit code 0: no rule failed, but at least one could not be settled with these samples (or "
                    "timing runs); `assay compare --fail-on-inconclusive` exits 1 on this verdict",
}


@dataclass
class Side:
    """One side of a comparison: a bundle's evidence and per-sample predictions (and, when known, the
    evaluation data, for thumbnails of flipped examples)."""

    name: str
    evidence: Evidence
    predictions: dict[str, np.ndarray] | None
    path: str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleResult(_Model):
    metric: str
    rule: str = Field(description="The rule as written, e.g. 'accuracy: drop at most 0.005'.")
    status: Status
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    limit: float | None = Field(default=None, description="The threshold the CI is compared with, in value units.")
    message: str
    n_needed: int | None = Field(default=None, description="What would settle an inconclusive rule, counted in "
                                 "n_needed_unit.")
    n_needed_unit: Literal["samples", "timing runs"] | None = Field(
        default=None, description="'samples': evaluation samples; 'timing runs': timed calls per model (latency "
        "rules, whose CIs come from timing runs, not from the evaluation data).")
    group: str | None = Field(default=None, description="The deciding class/slice for per-group rules.")


class _RuleHead(TypedDict):
    """What every outcome of one rule states (splatted into RuleResult)."""

    metric: str
    rule: str
    limit: float


class _RuleEstimate(_RuleHead):
    """A rule's head with the tested value and its CI (splatted into RuleResult)."""

    value: float
    ci_low: float
    ci_high: float


class _GroupEstimate(TypedDict):
    """The deciding group of a per-group rule: its delta and CI (splatted into RuleResult)."""

    value: float
    ci_low: float
    ci_high: float
    group: str


class _Bootstrap(TypedDict):
    """Resampling options passed through to the assay.stats.paired functions."""

    n_resamples: int
    confidence: float


class SideInfo(_Model):
    name: str
    path: str
    model_path: str
    model_sha256: str
    created_at: str


class Comparison(_Model):
    schema_version: str = COMPARISON_SCHEMA_VERSION
    created_at: str
    baseline: SideInfo
    candidate: SideInfo
    data_fingerprint: str
    data_name: str
    n: int
    class_names: list[str]
    policy: dict[str, Any]
    verdict: Literal["pass", "fail", "inconclusive"]
    rules: list[RuleResult]
    metrics: dict[str, Metric] = Field(description="Deltas (candidate minus baseline) and flip rates, with CIs.")
    per_class: list[dict[str, Any]]
    per_slice: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    flips: dict[str, list[dict[str, Any]]] = Field(description="negative / positive flips, most confident first.")
    notes: list[str] = Field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when the gate failed (a rule showed a regression), else 0: "pass" and "inconclusive" (no
        regression shown, but some rule could not be settled with these samples) both exit 0, unless the
        caller treats inconclusive as failing (``assay compare --fail-on-inconclusive``)."""
        return 1 if self.verdict == "fail" else 0


# ------------------------------------------------------------------------------------------- inputs


def _check_pair(baseline: Side, candidate: Side) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, ids, logits_a, logits_b) aligned by sample id, after checking both sides are comparable."""
    fa, fb = baseline.evidence.data.fingerprint, candidate.evidence.data.fingerprint
    if fa != fb:
        raise UserError(
            f"the bundles were evaluated on different data: {baseline.evidence.data.name} (fingerprint {fa[:12]}) "
            f"vs {candidate.evidence.data.name} (fingerprint {fb[:12]})",
            where=f"{baseline.path} vs {candidate.path}",
            fix="paired statistics need the same samples: evaluate both models on the same --data "
                "(or run `assay compare BASELINE_MODEL CANDIDATE_MODEL --data DATA`)")
    for side in (baseline, candidate):
        if side.predictions is None:
            raise UserError(
                f"the {side.name} bundle has no predictions.npz", where=side.path,
                fix="paired tests need per-sample results: re-run `assay evaluate` (it writes predictions.npz "
                    "into the bundle) or pass the model file with --data")
        missing = {"ids", "labels", "logits"} - set(side.predictions)
        if missing:
            raise UserError(f"the {side.name} bundle's predictions.npz lacks {', '.join(sorted(missing))}",
                            where=side.path, fix="re-run `assay evaluate` on labelled data to regenerate the bundle")
    pa, pb = baseline.predictions, candidate.predictions
    assert pa is not None and pb is not None
    if pa["logits"].shape[1] != pb["logits"].shape[1]:
        raise UserError(f"the models have {pa['logits'].shape[1]} and {pb['logits'].shape[1]} classes",
                        where=f"{baseline.path} vs {candidate.path}", fix="compare models of the same task")
    ids_a, ids_b = np.asarray(pa["ids"]), np.asarray(pb["ids"])
    if ids_a.shape == ids_b.shape and np.array_equal(ids_a, ids_b):
        order_b = np.arange(len(ids_b))  # the usual case: both bundles list the samples in the same order
    else:
        if ids_a.dtype.kind != ids_b.dtype.kind:
            ids_a, ids_b = ids_a.astype(str), ids_b.astype(str)
        sort_a, sort_b = np.argsort(ids_a, kind="stable"), np.argsort(ids_b, kind="stable")
        if len(ids_a) != len(ids_b) or not np.array_equal(ids_a[sort_a], ids_b[sort_b]) \
                or (len(ids_a) > 1 and np.any(ids_a[sort_a][1:] == ids_a[sort_a][:-1])):
            raise UserError("the bundles' sample ids differ although the data fingerprints match",
                            where=f"{baseline.path} vs {candidate.path}",
                            fix="re-run both evaluations with this Assay version")
        order_b = np.empty_like(sort_a)
        order_b[sort_a] = sort_b  # row of b holding the id of a's row i
    labels_a, labels_b = np.asarray(pa["labels"]), np.asarray(pb["labels"])[order_b]
    if not np.array_equal(labels_a, labels_b):
        raise UserError("the bundles disagree on the labels of the same samples",
                        where=f"{baseline.path} vs {candidate.path}", fix="re-run both evaluations on the same data")
    return labels_a, ids_a, np.asarray(pa["logits"]), np.asarray(pb["logits"])[order_b]


# ------------------------------------------------------------------------------------------- decisions


def _limit_of(rule: Rule) -> float:
    """The threshold in the units of the tested value: a drop limit is a negative delta."""
    return -rule.limit if rule.kind == "max_drop" else rule.limit


@dataclass(frozen=True)
class _Timing:
    """How one side's latency metric was timed (from its efficiency section): what an inconclusive latency
    rule's message needs to say how many more runs, and how to get them."""

    side: str
    runs: int
    stop_reason: str | None  # "precise" (the median's CI met its target), "budget" or "max_runs"
    seconds_per_run: float | None
    budget_s: float | None


def _timing_of(side: Side, metric: Metric) -> _Timing:
    section = side.evidence.sections.get("efficiency")
    batch = metric.config.get("batch_size")
    table = section.tables.get("latency", []) if section is not None else []
    row = next((r for r in table if isinstance(r, dict) and r.get("batch_size") == batch), {})
    runs = int(metric.n or row.get("n_runs") or 0)
    elapsed, budget = row.get("elapsed_s"), section.config.get("budget_s_per_batch_size") if section else None
    stop = metric.config.get("stop_reason", row.get("stop_reason"))
    return _Timing(side.name, runs, stop if isinstance(stop, str) else None,
                   elapsed / runs if isinstance(elapsed, (int, float)) and runs > 0 else None,
                   float(budget) if isinstance(budget, (int, float)) else None)


def _shrink_factor(value: float, lo: float, hi: float, t: float) -> float | None:
    """How many times more data would move the CI off the limit ``t`` if the estimate stayed put and the
    half-width facing the limit shrank like 1 / sqrt(data): (half / |value - t|)^2; None when no amount does."""
    half = hi - value if t > value else value - lo
    distance = abs(value - t)
    if distance == 0 or not math.isfinite(half) or not math.isfinite(distance):
        return None
    return half / distance * half / distance


def _more_timing(value: float, lo: float, hi: float, t: float, timings: tuple[_Timing, _Timing]
                 ) -> tuple[int | None, str]:
    """Timing runs per model that would settle an inconclusive latency rule, and the sentence saying how to
    get them: an order-statistic CI of a latency quantile narrows like 1 / sqrt(runs)."""
    runs = " and ".join(f"{tm.runs:,}" for tm in timings)
    factor = _shrink_factor(value, lo, hi, t)
    if factor is None:
        return None, f"timing runs: {runs}; no number of runs settles it (the estimate sits on the limit)"
    needed = max(1, *(math.ceil(tm.runs * factor * (1 - 1e-12)) for tm in timings))
    text = (f"too few timing runs to tell ({runs}); about {needed:,} timing runs per model would settle it "
            "(the CI narrows like 1/sqrt(runs))")
    short = [tm for tm in timings if tm.stop_reason == "budget" and tm.seconds_per_run]
    if short:
        seconds = max(needed * tm.seconds_per_run for tm in short if tm.seconds_per_run)
        now = max((tm.budget_s for tm in short if tm.budget_s), default=None)
        text += (f": the {' and '.join(tm.side for tm in short)} timing ran out of its budget"
                 + (f" ({now:g} s)" if now else "") + f"; re-run `assay evaluate --checks efficiency` with "
                 f"--latency-budget {max(math.ceil(seconds), 1)} or more on the same machine")
    precise = [tm.side for tm in timings if tm.stop_reason == "precise"]
    if precise:
        text += (f"; the {' and '.join(precise)} timing stopped as soon as the median's interval met its precision "
                 "target, so a longer --latency-budget alone adds no runs there")
    capped = [tm.side for tm in timings if tm.stop_reason == "max_runs"]
    if capped:
        text += f"; the {' and '.join(capped)} timing reached its maximum number of runs"
    return needed, text


def _decide(rule: Rule, value: float, lo: float, hi: float, n: int, estimate: PairedEstimate | None,
            what: str, timings: tuple[_Timing, _Timing] | None = None) -> RuleResult:
    """The rule's status from the CI [lo, hi] against its limit; an inconclusive rule says how much more data
    (evaluation samples; timing runs when ``timings`` are given) would settle it."""
    t = _limit_of(rule)
    higher_is_worse = rule.kind != "max_drop"
    bad = lo > t if higher_is_worse else hi < t
    good = hi <= t if higher_is_worse else lo >= t
    base: _RuleEstimate = {"metric": rule.metric, "rule": rule.describe(), "value": value, "ci_low": lo,
                           "ci_high": hi, "limit": t}
    v, low, high, limit = NumberFormat(signed=True).row(value, lo, hi, t)
    if bad:
        return RuleResult(**base, status="fail", message=f"{what} {v} (CI {low} to {high}) is past "
                          f"the limit {limit} with confidence")
    if good:
        return RuleResult(**base, status="pass", message=f"{what} {v} (CI {low} to {high}) is within "
                          f"the limit {limit}")
    head = f"{what} {v}, but the CI ({low} to {high}) contains the limit {limit}"
    if timings is not None:
        runs_needed, more = _more_timing(value, lo, hi, t, timings)
        return RuleResult(**base, status="inconclusive", n_needed=runs_needed, n_needed_unit="timing runs",
                          message=f"{head}: {more}")
    needed = required_sample_size(estimate, n, t) if estimate is not None else _needed_unpaired(value, lo, hi, n, t)
    more = (f"about {needed:,} samples would settle it" if needed
            else "no sample size settles it (the estimate sits on the limit)")
    return RuleResult(**base, status="inconclusive", n_needed=needed, n_needed_unit="samples", message=(
        f"{head}: too few samples to tell ({n:,}); {more}"))


def _needed_unpaired(value: float, lo: float, hi: float, n: int, t: float) -> int | None:
    factor = _shrink_factor(value, lo, hi, t)
    return None if factor is None else max(1, math.ceil(n * factor * (1 - 1e-12)))


def _adjust(pvalues: np.ndarray, correction: str) -> np.ndarray:
    if not np.isfinite(pvalues).any():
        return pvalues
    return (holm if correction == "holm" else benjamini_hochberg)(pvalues)[1]


def _group_p(group: GroupDelta, t: float | None, confidence: float) -> float:
    """A group's p-value: without a rule, the two-sided exact McNemar test (any difference). Against a drop
    limit ``t`` < 0, the exact unconditional one-sided p-value of "the group dropped beyond t"
    (:meth:`GroupDelta.p_below`): the test the group's exact interval inverts, so a group whose interval ends
    below t has p <= (1 - confidence) / 2 before correction. At t = 0, the exact one-sided McNemar test, the
    uniformly most powerful unbiased test there (conditional on the discordant pairs). Neither has the
    bootstrap's 1 / (1 + B) floor, which would hide small values from Holm's correction over many groups."""
    if t is None:
        return group.mcnemar_p
    return mcnemar_one_sided(group.n01, group.n10) if t >= 0 else group.p_below(t, confidence)


NO_NEGATIVE_FLIP = "no right -> wrong flip"


def _group_status(g: GroupDelta, t: float | None, q: float, alpha_one_sided: float) -> tuple[str | None, str | None]:
    """(status, basis) of one group under a drop limit ``t``: 'fail' when its drop beyond t is significant
    after correction and its whole exact interval is past t; 'pass' when the interval's lower end is within
    t, or when no sample of the group went from right to wrong (an unchanged group is no evidence of harm: it
    never holds the rule open, although an exact bound needs ln(alpha) / ln(1 - |t|) samples, 72 at t = -0.05
    and 95%, to reach the limit by itself); 'untested' below MIN_GROUP_SIZE; else 'inconclusive'."""
    if t is None:
        return None, None
    if g.n < MIN_GROUP_SIZE:
        return "untested", f"fewer than {MIN_GROUP_SIZE} samples"
    lo, hi = g.delta.ci_low, g.delta.ci_high
    if np.isfinite(q) and q < alpha_one_sided and hi < t:
        return "fail", "dropped beyond the limit (significant after correction)"
    if lo >= t:
        return "pass", "exact lower bound within the limit"
    if g.n10 == 0:
        return "pass", NO_NEGATIVE_FLIP
    return "inconclusive", "the exact interval contains the limit"


def _group_rows(groups: list[GroupDelta], correction: str, rule: Rule | None, alpha_one_sided: float,
                confidence: float) -> list[dict[str, Any]]:
    """Rows of per-group deltas with exact intervals; ``p`` tests 'dropped beyond the rule's limit' (or,
    without a rule, McNemar's 'any difference'; see :func:`_group_p`), ``p_adjusted`` is it corrected across
    the family, ``status``/``basis`` the group's own verdict under the rule (see :func:`_group_status`)."""
    t = _limit_of(rule) if rule is not None else None
    raw = np.array([_group_p(g, t, confidence) if g.n >= MIN_GROUP_SIZE else np.nan for g in groups], dtype=float)
    adjusted = _adjust(raw, correction)
    rows = []
    for g, p, q in zip(groups, raw, adjusted, strict=True):
        status, basis = _group_status(g, t, q, alpha_one_sided)
        rows.append({"group": g.group, "n": g.n, "accuracy_baseline": g.accuracy_a, "accuracy_candidate": g.accuracy_b,
                     "delta": g.delta.value, "ci_low": g.delta.ci_low, "ci_high": g.delta.ci_high,
                     "negative_flip_rate": g.negative_flip_rate, "positive_flip_rate": g.positive_flip_rate,
                     "negative_flips": g.n10, "positive_flips": g.n01, "mcnemar_p": g.mcnemar_p,
                     "p": None if np.isnan(p) else float(p),
                     "p_adjusted": None if np.isnan(q) else float(q),
                     "significant_drop": bool(np.isfinite(q) and q < alpha_one_sided and g.delta.value < 0),
                     "insufficient": g.n < MIN_GROUP_SIZE, "status": status, "basis": basis})
    return rows


def _group_ci(r: dict[str, Any]) -> str:
    return (f"{r['delta']:+.4f} (exact CI {r['ci_low']:+.4f} to {r['ci_high']:+.4f}, n={r['n']}, "
            f"{r['negative_flips']} right -> wrong, {r['positive_flips']} wrong -> right")


def _decide_groups(rule: Rule, rows: list[dict[str, Any]], what: str, correction: str) -> RuleResult:
    """The rule over a family of groups: fail when a group fails (Holm/BH-corrected); inconclusive when a group
    that lost samples cannot be shown within the limit; else pass. Passing needs every such group's own exact
    bound within the limit (an intersection-union test: no correction is needed for it, Berger 1982)."""
    t = _limit_of(rule)
    tested = [r for r in rows if not r["insufficient"]]
    base: _RuleHead = {"metric": rule.metric, "rule": rule.describe(), "limit": t}
    if not tested:
        return RuleResult(**base, status="skipped", message=f"no {what} has {MIN_GROUP_SIZE}+ samples to test")
    failing = [r for r in tested if r["status"] == "fail"]
    name = "Holm" if correction == "holm" else "Benjamini-Hochberg"
    if failing:
        w = min(failing, key=lambda r: r["delta"])
        return RuleResult(**base, value=w["delta"], ci_low=w["ci_low"], ci_high=w["ci_high"], group=str(w["group"]),
                          status="fail", message=(
                              f"{len(failing)} {what}(s) dropped beyond {t:+.4f} after {name} correction over "
                              f"{len(tested)}; worst {w['group']}: {_group_ci(w)}, adjusted p "
                              f"{w['p_adjusted']:.3g})"))
    undecided = [r for r in tested if r["status"] == "inconclusive"]
    if undecided:
        w = min(undecided, key=lambda r: r["ci_low"])
        needed = _needed_unpaired(w["delta"], w["ci_low"], w["ci_high"], w["n"], t)
        more = f"about {needed:,} samples in that {what} would settle it" if needed else "no sample size settles it"
        return RuleResult(**base, value=w["delta"], ci_low=w["ci_low"], ci_high=w["ci_high"], group=str(w["group"]),
                          status="inconclusive", n_needed=needed, n_needed_unit="samples", message=(
                              f"{len(undecided)} {what}(s) that lost samples cannot be told apart from a drop of "
                              f"{-t:.4f}; e.g. {w['group']}: {_group_ci(w)}); {more}"))
    bounded = [r for r in tested if r["ci_low"] >= t]
    unchanged = len(tested) - len(bounded)
    aside = (f"; {unchanged} {what}(s) with no right -> wrong flip pass on that alone (too few samples for the "
             "exact bound to reach the limit, but none of them got worse)") if unchanged else ""
    if not bounded:
        return RuleResult(**base, status="pass", message=(
            f"no {what} ({len(tested)} tested) has a sample that went from right to wrong: the candidate is right "
            f"wherever the baseline is (an exact bound alone would need more samples per {what} to reach the "
            "limit, but none got worse)"))
    w = min(bounded, key=lambda r: r["ci_low"])
    return RuleResult(**base, value=w["delta"], ci_low=w["ci_low"], ci_high=w["ci_high"], group=str(w["group"]),
                      status="pass", message=(
                          f"every {what} ({len(tested)} tested) is within the limit {t:+.4f}; lowest exact bound "
                          f"{w['ci_low']:+.4f} ({w['group']}){aside}"))


def _timing_setup(evidence: Evidence, metric: Metric) -> str:
    """What a latency depends on besides the model: CPU model, core count and inference threads."""
    env = evidence.environment
    return f"{env.cpu_model or 'unknown CPU'}, {env.cpu_count} cores, {metric.config.get('threads')} threads"


def _unpaired(rule: Rule, baseline: Side, candidate: Side, section: str, key: str, n: int) -> RuleResult:
    a, b = baseline.evidence.metric(section, key), candidate.evidence.metric(section, key)
    if a is None or b is None:
        which = " and ".join(s.name for s, m in ((baseline, a), (candidate, b)) if m is None)
        return RuleResult(metric=rule.metric, rule=rule.describe(), status="skipped",
                          message=f"no {section} section with {key} in the {which} bundle")
    assert a.value is not None and b.value is not None
    timings = None
    if key.startswith("latency"):
        timings = (_timing_of(baseline, a), _timing_of(candidate, b))
        machine_a, machine_b = _timing_setup(baseline.evidence, a), _timing_setup(candidate.evidence, b)
        if machine_a != machine_b:
            return RuleResult(metric=rule.metric, rule=rule.describe(), status="skipped", message=(
                f"latencies were measured on different setups ({machine_a} vs {machine_b}) and are not comparable; "
                "re-run both evaluations with --checks efficiency on one machine and thread count"))
    if rule.kind == "max_increase_pct":
        if a.value <= 0:
            return RuleResult(metric=rule.metric, rule=rule.describe(), status="skipped",
                              message=f"the baseline's {key} is {a.value}, so a relative change is undefined")
        a_lo, a_hi = (a.ci_low if a.ci_low is not None else a.value), (a.ci_high if a.ci_high is not None else a.value)
        b_lo, b_hi = (b.ci_low if b.ci_low is not None else b.value), (b.ci_high if b.ci_high is not None else b.value)
        value = (b.value / a.value - 1) * 100
        lo, hi = (b_lo / a_hi - 1) * 100, (b_hi / a_lo - 1) * 100 if a_lo > 0 else math.inf
        return _decide(rule, value, lo, hi, n, None, f"{key} change (%, candidate {b.value:.4g} vs {a.value:.4g})",
                       timings)
    # Unpaired delta: half-widths combined as independent normal errors.
    half_a = (a.ci_high - a.ci_low) / 2 if a.ci_low is not None and a.ci_high is not None else 0.0
    half_b = (b.ci_high - b.ci_low) / 2 if b.ci_low is not None and b.ci_high is not None else 0.0
    value, half = b.value - a.value, math.hypot(half_a, half_b)
    return _decide(rule, value, value - half, value + half, n, None, f"{key} delta (unpaired)", timings)


# ------------------------------------------------------------------------------------------- compare


def _estimate_metric(est: PairedEstimate, n: int, definition: str) -> Metric:
    return Metric(value=est.value, ci_low=est.ci_low, ci_high=est.ci_high, n=n, method=est.method,
                  config={"definition": definition})


def _flip_rows(mask: np.ndarray, ids: np.ndarray, labels: np.ndarray, pa: np.ndarray, pb: np.ndarray,
               conf_a: np.ndarray, conf_b: np.ndarray, names: list[str], by: np.ndarray) -> list[dict[str, Any]]:
    index = np.flatnonzero(mask)
    index = index[np.argsort(-by[index], kind="stable")][:MAX_FLIPS_LISTED]
    return [{"index": int(i), "id": str(ids[i]), "label": names[labels[i]], "baseline": names[pa[i]],
             "candidate": names[pb[i]], "baseline_confidence": float(conf_a[i]),
             "candidate_confidence": float(conf_b[i])} for i in index]


def compare_sides(baseline: Side, candidate: Side, policy: Policy, *, n_bootstrap: int = 1000,
                  seed: int = 0) -> Comparison:
    """Compare two bundles evaluated on the same data under ``policy``."""
    labels, ids, logits_a, logits_b = _check_pair(baseline, candidate)
    n, num_classes = len(labels), logits_a.shape[1]
    conf = policy.confidence
    alpha = (1 - conf) / 2
    names = baseline.evidence.model.class_names if len(baseline.evidence.model.class_names) == num_classes \
        else [str(i) for i in range(num_classes)]
    pred_a, pred_b = logits_a.argmax(1), logits_b.argmax(1)
    correct_a, correct_b = pred_a == labels, pred_b == labels
    opts: _Bootstrap = {"n_resamples": n_bootstrap, "confidence": conf}

    pc = paired_classification(labels, pred_a, pred_b, num_classes, seed=seed,
                               **opts)
    idx = np.arange(n)
    logp_a, logp_b = log_softmax(logits_a), log_softmax(logits_b)
    conf_a, conf_b = np.exp(logp_a[idx, pred_a]), np.exp(logp_b[idx, pred_b])
    ece = paired_ece_delta(conf_a, correct_a, conf_b, correct_b, seed=seed + 1, **opts)
    nll = paired_mean_delta(-logp_a[idx, labels], -logp_b[idx, labels], seed=seed + 2, **opts)
    del logp_a, logp_b
    metrics = {
        "accuracy_delta": _estimate_metric(pc.accuracy_delta, n, "accuracy(candidate) - accuracy(baseline)"),
        "macro_f1_delta": _estimate_metric(pc.macro_f1_delta, n, "macro-F1(candidate) - macro-F1(baseline)"),
        "negative_flip_rate": _estimate_metric(pc.negative_flip_rate, n, "share right in the baseline and wrong in "
                                               "the candidate (Yan et al. 2021)"),
        "positive_flip_rate": _estimate_metric(pc.positive_flip_rate, n, "share wrong in the baseline and right "
                                               "in the candidate"),
        "ece_delta": _estimate_metric(ece, n, "ECE(candidate) - ECE(baseline); 15 equal-width bins, top-label, L1"),
        "nll_delta": _estimate_metric(nll, n, "mean NLL(candidate) - mean NLL(baseline), nats"),
    }
    metrics["mcnemar_p"] = Metric(value=pc.mcnemar_p, n=n, method="exact McNemar (binomial test on discordant pairs)",
                                  config={"n01_baseline_wrong_candidate_right": pc.n01,
                                          "n10_baseline_right_candidate_wrong": pc.n10})
    class_rule = next((r for r in policy.rules if r.metric == "per_class_accuracy"), None)
    slice_rule = next((r for r in policy.rules if r.metric == "per_slice_accuracy"), None)
    class_groups = [replace(g, group=names[int(g.group)]) for g in paired_group_deltas(
        correct_a, correct_b, labels, seed=seed + 3, min_size=MIN_GROUP_SIZE, **opts)]
    per_class = _group_rows(class_groups, policy.correction, class_rule, alpha, conf)
    per_slice: dict[str, list[dict[str, Any]]] = {}
    pa_arrays, pb_arrays = baseline.predictions or {}, candidate.predictions or {}
    for key in sorted(k for k in pa_arrays if k.startswith("slice_") and k in pb_arrays):
        if np.array_equal(np.asarray(pa_arrays[key]).astype(str), np.asarray(pb_arrays[key]).astype(str)):
            groups = paired_group_deltas(correct_a, correct_b, np.asarray(pa_arrays[key]).astype(str),
                                         seed=seed + 4, min_size=MIN_GROUP_SIZE, **opts)
            per_slice[key.removeprefix("slice_")] = _group_rows(groups, policy.correction, slice_rule, alpha, conf)

    results: list[RuleResult] = []
    paired = {"accuracy": (pc.accuracy_delta, "accuracy delta"), "macro_f1": (pc.macro_f1_delta, "macro-F1 delta"),
              "negative_flip_rate": (pc.negative_flip_rate, "negative flip rate"), "ece": (ece, "ECE delta"),
              "nll": (nll, "NLL delta")}
    for rule in policy.rules:
        if rule.metric in paired:
            est, what = paired[rule.metric]
            results.append(_decide(rule, est.value, est.ci_low, est.ci_high, n, est, what))
        elif rule.metric == "per_class_accuracy":
            results.append(_decide_groups(rule, per_class, "class", policy.correction))
        elif rule.metric == "per_slice_accuracy":
            if not per_slice:
                results.append(RuleResult(metric=rule.metric, rule=rule.describe(), status="skipped", message=(
                    "neither bundle has slice columns in common (evaluate both with the same --slice-by)")))
            else:
                rows = [{**r, "group": f"{col}={r['group']}"} for col, rs in per_slice.items() for r in rs]
                results.append(_decide_groups(rule, rows, "slice", policy.correction))
        elif rule.metric == "robust_accuracy":
            results.append(_unpaired(rule, baseline, candidate, "adversarial", "robust_accuracy", n))
        elif rule.metric == "mean_corruption_accuracy":
            results.append(_unpaired(rule, baseline, candidate, "corruption", "mean_corruption_accuracy", n))
        elif rule.metric in ("latency_p95_ms", "model_size_mb"):
            results.append(_unpaired(rule, baseline, candidate, "efficiency", rule.metric, n))
    for key, section in (("robust_accuracy", "adversarial"), ("mean_corruption_accuracy", "corruption"),
                         ("latency_p95_ms", "efficiency"), ("model_size_mb", "efficiency")):
        a, b = baseline.evidence.metric(section, key), candidate.evidence.metric(section, key)
        if a is not None and b is not None:
            metrics[f"{key}_baseline"], metrics[f"{key}_candidate"] = a, b

    statuses = {r.status for r in results}
    verdict: Literal["pass", "fail", "inconclusive"] = \
        "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"
    flips = {
        "negative": _flip_rows(correct_a & ~correct_b, ids, labels, pred_a, pred_b, conf_a, conf_b, names, conf_b),
        "positive": _flip_rows(~correct_a & correct_b, ids, labels, pred_a, pred_b, conf_a, conf_b, names, conf_a),
    }
    return Comparison(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        baseline=_side_info(baseline), candidate=_side_info(candidate),
        data_fingerprint=baseline.evidence.data.fingerprint, data_name=baseline.evidence.data.name, n=n,
        class_names=names, policy=policy.as_dict(), verdict=verdict, rules=results, metrics=metrics,
        per_class=per_class, per_slice=per_slice, flips=flips,
        notes=[f"paired bootstrap, B={n_bootstrap}, seed={seed}; a rule fails only when its whole "
               f"{int(conf * 100)}% CI is past the limit (one-sided error <= {alpha:.3g} per rule/family)",
               "per-class/per-slice intervals: exact, inverting exact unconditional tests on the group's discordant "
               "counts (Tango's score statistic, p-values maximized over the discordance rate, Berger-Boos gamma "
               "1e-8); p: the exact one-sided p-value of 'dropped beyond the limit' that the interval inverts (at a "
               f"limit of 0, exact one-sided McNemar), {policy.correction}-corrected across the family; without a "
               "rule, "
               "two-sided exact McNemar. A group with no right -> wrong flip passes on that alone",
               _EXIT_NOTE[verdict]])


def _side_info(side: Side) -> SideInfo:
    return SideInfo(name=side.name, path=side.path, model_path=side.evidence.model.path,
                    model_sha256=side.evidence.model.sha256, created_at=side.evidence.created_at)


# ------------------------------------------------------------------------------------------- reading bundles

#: A real evidence.json is tens of kilobytes; larger ones are refused before reading.
def side_from_bundle(path: str | os.PathLike[str], name: str) -> Side:
    """One side of a comparison read from a bundle directory (or its evidence.json), validated."""
    directory = Path(path)
    evidence = read_evidence(directory)
    folder = directory if directory.is_dir() else directory.parent
    predictions = read_predictions(folder / "predictions.npz", evidence)
    return Side(name=name, evidence=evidence, predictions=predictions, path=str(path))
