"""Budgeted ("anytime") evaluation: the views of the corruption, adversarial and OOD checks sampled within a
budget of model passes or seconds instead of run in full, and the ``budget`` section that reports them.

:func:`budget_targets` turns the views those checks planned into :class:`~assay.engine.budget.BudgetTarget`
objects (what one sampled row is worth); the planner (:func:`assay.engine.budget.run_budgeted`) samples rows
of each view without replacement until the budget ends; :func:`budget_section` turns its
:class:`~assay.engine.budget.BudgetRun` into per-view estimates with intervals, aggregates, what the budget
bought, what a larger one would buy, and a verdict judged on the intervals.

The population of every estimate is the evaluation data itself (its N rows), so each interval covers the value
the *full run would give on this data* and collapses to that value when every row is sampled (finite-population
intervals from :mod:`assay.stats.sampling`). What a row is worth:

* corruption view: 1 when the prediction on the corrupted row is right (accuracy);
* attack view: only clean-correct rows are attacked (Croce & Hein 2020), so the population is those rows and a
  row is worth 1 when the attack leaves it right; robust accuracy = clean-correct share (exact, from the full
  clean run) x the surviving share (sampled);
* OOD view: the placement of the OOD row's max-softmax score among *all* clean scores (the share of ID scores
  above it, ties counted half): the mean placement over the OOD set is the MSP AUROC with OOD positive
  (DeLong et al. 1988), so sampling OOD rows estimates it without bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.checks.adversarial import FAIL_ROBUST_RATIO, WARN_ROBUST_RATIO, _sanity_findings
from assay.checks.base import CheckContext
from assay.checks.corruption import FAIL_RELATIVE_DROP, WARN_RELATIVE_DROP, _severity_plots
from assay.checks.ood import WARN_MSP_AUROC, OODView
from assay.checks.ood_scores import msp
from assay.data.dataset import Dataset
from assay.engine.robust_views import AdversarialView, CorruptionView, PrecomputedCorruptionView
from assay.engine.views import View
from assay.errors import OptionError
from assay.evidence.schema import Finding, Metric, Section, Severity, Verdict
from assay.stats.sampling import Stratum, stratified_interval

if TYPE_CHECKING:
    from assay.engine.budget import Budget, BudgetRun, BudgetTarget

__all__ = ["BUDGETED_CHECKS", "LARGER_BUDGETS", "attack_cost", "budget_plan", "budget_section", "budget_targets",
           "mean_placements"]

#: The checks whose views a budget samples instead of running in full; in budget mode the ``budget`` section
#: replaces their sections (the pipeline asks this set, it knows no check by name).
BUDGETED_CHECKS: frozenset[str] = frozenset({"corruption", "adversarial", "ood"})

#: Budget multiples "what a larger budget would buy" projects (the full run is added as a last row).
LARGER_BUDGETS: tuple[float, ...] = (2.0, 4.0)

_REFERENCE = ("finite-population intervals for sampling without replacement: exact hypergeometric for shares "
              "(Wright 1991), Student-t with finite-population correction for mean placements (Cochran 1977, 2.15), "
              "stratified means (Cochran 1977, 5.6)")


def budget_plan(text: str, checks: Sequence[str]) -> tuple[Budget, frozenset[str]]:
    """The parsed ``--budget`` and which of the run's ``checks`` it replaces (their views are sampled). A budget
    with none of them to sample is an OptionError, raised before any inference."""
    from assay.engine.budget import parse_budget

    budget = parse_budget(text)
    replaced = frozenset(c for c in checks if c in BUDGETED_CHECKS)
    if not replaced:
        raise OptionError(f"--budget {text} has nothing to sample: a budget samples the views of the "
                          f"{', '.join(sorted(BUDGETED_CHECKS))} checks, and none of them runs (the clean view always "
                          "runs in full)", where="budget",
                          fix="add corruptions, attacks or OOD sets (--suite standard, --corruptions, --adversarial, "
                          "--ood), or drop --budget")
    return budget, replaced


def mean_placements(id_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per score: the share of ``id_scores`` above it, ties counted half. Their mean over an OOD set is the
    AUROC of the score with OOD as the positive class and higher = more in-distribution (the Mann-Whitney
    statistic written as placements; DeLong, DeLong & Clarke-Pearson 1988)."""
    ordered = np.sort(np.asarray(id_scores, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    below_or_equal = np.searchsorted(ordered, s, side="right")
    below = np.searchsorted(ordered, s, side="left")
    return ((ordered.size - below_or_equal) + 0.5 * (below_or_equal - below)) / ordered.size


def _correct(labels: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def values(rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (np.asarray(logits).argmax(axis=1) == labels[rows]).astype(np.float64)
    return values


def _placements(id_scores: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    ordered = np.sort(id_scores)

    def values(rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return mean_placements(ordered, msp(logits))
    return values


def attack_cost(view: AdversarialView) -> float:
    """Model passes one attacked row costs: its iterations (steps x restarts for a white-box attack, FGSM one
    step; queries for Square) and the pass that scores the adversarial input."""
    spec = view.attack_spec
    if not spec.white_box:
        return float(max(spec.steps, 1) + 1)
    return float(max(spec.steps, 1) * max(spec.restarts, 1) + 1)


def budget_targets(views: Sequence[View], dataset: Dataset, clean_logits: np.ndarray) -> list[BudgetTarget]:
    """One budget target per view a budget can sample (corruptions, attacks, OOD sets); other views (ODIN's
    perturbed inputs) are left out. ``clean_logits``: the full clean run (attacks start from its clean-correct
    rows; OOD placements are taken among all its scores)."""
    from assay.engine.budget import BudgetTarget

    assert dataset.y is not None  # the pipeline evaluates labelled data only
    labels = np.asarray(dataset.y)
    clean_correct = np.asarray(clean_logits).argmax(axis=1) == labels
    id_scores = msp(clean_logits)
    targets: list[BudgetTarget] = []
    for view in views:
        name = view.spec.name
        if isinstance(view, (CorruptionView, PrecomputedCorruptionView)):
            rows = np.arange(len(view.source(dataset)))
            targets.append(BudgetTarget(name=name, view=view, population=rows, values=_correct(labels)))
        elif isinstance(view, AdversarialView):
            attacked = np.flatnonzero(clean_correct)
            if attacked.size:  # no clean-correct row: robust accuracy is 0 without an attack (see the section)
                targets.append(BudgetTarget(name=name, view=view, population=attacked, values=_correct(labels),
                                            cost_per_row=attack_cost(view)))
        elif isinstance(view, OODView):
            rows = np.arange(len(view.source(dataset)))
            targets.append(BudgetTarget(name=name, view=view, population=rows, values=_placements(id_scores),
                                        binary=False))
    if not targets:
        raise OptionError("--budget was given, but the checks planned no view a budget can sample", where="budget",
                          fix="add corruptions, attacks or OOD sets (--suite standard, --corruptions, --adversarial, "
                          "--ood), or drop --budget")
    return targets


# ---------------------------------------------------------------------------------------------- the section


@dataclass
class _Estimate:
    """One view's estimate: the stratum sampled so far, the scale of the reported value (an attack's
    clean-correct share), the cost spent on it, and the stratum of its uniform-phase rows (means over views are
    estimated from those: their number did not depend on their values, see :mod:`assay.engine.budget`)."""

    name: str
    view: View
    stratum: Stratum
    scale: float
    passes: float
    seconds: float
    label: dict[str, Any]
    uniform: Stratum

    def interval(self, confidence: float) -> tuple[float | None, float, float]:
        lo, hi = self.stratum.interval(confidence)
        value = None if self.stratum.n == 0 else self.stratum.mean * self.scale
        return value, lo * self.scale, hi * self.scale


def _label(view: View) -> dict[str, Any]:
    """Table columns naming a view: kind, metric and its coordinates (corruption, severity / attack, eps / set)."""
    if isinstance(view, (CorruptionView, PrecomputedCorruptionView)):
        return {"view": f"{view.name} s{view.severity}", "kind": "corruption", "metric": "accuracy",
                "corruption": view.name, "severity": view.severity}
    if isinstance(view, AdversarialView):
        spec = view.attack_spec
        return {"view": f"{spec.attack} eps={spec.eps:.4g}", "kind": "adversarial", "metric": "robust accuracy",
                "attack": spec.attack, "eps": spec.eps}
    assert isinstance(view, OODView)
    return {"view": f"OOD {view.name}", "kind": "ood", "metric": "AUROC (MSP, OOD positive)", "ood_set": view.name}


def _same_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the coordinate columns any row has, in one order (None where a kind has no such coordinate),
    so that a table of corruptions, attacks and OOD sets reads the same in every report."""
    coords = [k for k in ("corruption", "severity", "attack", "eps", "ood_set") if any(k in r for r in rows)]
    head = ("view", "kind", "metric", *coords)
    return [{**{k: r.get(k) for k in head}, **{k: v for k, v in r.items() if k not in head}} for r in rows]


def _metric(value: float | None, lo: float | None, hi: float | None, n: int, method: str, **config: Any) -> Metric:
    return Metric(value=value, ci_low=lo, ci_high=hi, n=int(n), method=method, config=config)


def _share_method(confidence: float, n: int, population: int) -> str:
    return (f"exact hypergeometric interval, {confidence:.0%} (sampling without replacement, Wright 1991): "
            f"{n} of {population} rows sampled; it covers the value the full run would give on this data")


def _stratified(estimates: list[_Estimate], confidence: float) -> tuple[float | None, float | None, float | None]:
    """Equal-weight stratified mean of the views' values from their uniform-phase rows (None when a view has
    none): the adaptive rows would bias it (views that look easy by chance get fewer rows and keep their
    optimistic estimates; over dozens of views the biases add up while the interval shrinks)."""
    strata = [e.uniform for e in estimates]
    if not estimates or any(s.n == 0 for s in strata):
        return None, None, None
    weights = [e.scale / len(estimates) for e in estimates]
    return stratified_interval(strata, weights, confidence)


def _corruption_metrics(estimates: list[_Estimate], clean: float, confidence: float, dataset: Dataset,
                        metrics: dict[str, Metric]) -> dict[str, Any]:
    """Per-corruption means, mean corruption accuracy (standard and held-out), relative drop and the worst
    corruption, added to ``metrics``; returns what the verdict, findings and plots need."""
    from assay.engine.planning import available_corruptions

    known = available_corruptions(dataset.modality)
    names = list(dict.fromkeys(e.label["corruption"] for e in estimates))
    held_out = {c: bool(known[c].held_out) if c in known else False for c in names}
    by_name = {c: [e for e in estimates if e.label["corruption"] == c] for c in names}
    strat = ("stratified mean over the views (equal weights) of each view's uniform-phase rows (their number fixed "
             "before any value was seen, so the mean is unbiased; the adaptive rows sharpen only the per-view "
             "intervals), variance sum W^2 (1 - n/N) s^2 / n with smoothed s^2 "
             f"(Cochran 1977, 5.6), normal interval, {confidence:.0%}")
    for e in estimates:
        point, low, high = e.interval(confidence)
        metrics[f"corruption_accuracy[{e.label['corruption']},s{e.label['severity']}]"] = _metric(
            point, low, high, e.stratum.n, _share_method(confidence, e.stratum.n, e.stratum.population),
            corruption=e.label["corruption"], severity=e.label["severity"])
    per_corruption = {}
    for c, group in by_name.items():
        value, lo, hi = _stratified(group, confidence)
        severities = sorted(int(e.label["severity"]) for e in group)
        per_corruption[c] = (value, lo, hi)
        metrics[f"corruption_accuracy[{c}]"] = _metric(value, lo, hi, sum(e.uniform.n for e in group),
                                                       f"mean over severities {severities}: {strat}", corruption=c)
    standard = [e for e in estimates if not held_out[e.label["corruption"]]]
    heldout = [e for e in estimates if held_out[e.label["corruption"]]]
    mean_key = "mean_corruption_accuracy" if standard else "mean_heldout_corruption_accuracy"
    for key, group in (("mean_corruption_accuracy", standard), ("mean_heldout_corruption_accuracy", heldout)):
        if group:
            value, lo, hi = _stratified(group, confidence)
            metrics[key] = _metric(value, lo, hi, sum(e.uniform.n for e in group),
                                   f"{strat}; {len(group)} views" + ("" if value is not None else
                                                                     "; not estimated: a view has no sampled row"),
                                   views=len(group))
    mean = metrics[mean_key]
    drop: tuple[float | None, float | None, float | None] = (None, None, None)
    if clean > 0 and mean.value is not None and mean.ci_low is not None and mean.ci_high is not None:
        drop = (1 - mean.value / clean, 1 - mean.ci_high / clean, 1 - mean.ci_low / clean)
        metrics["relative_drop"] = _metric(*drop, mean.n, f"1 - {mean_key} / clean accuracy, from the interval of "
                                           f"{mean_key} (the clean accuracy is exact: the clean view ran in full)",
                                           lower_is_better=True)
    ranked = {c: float(v[0]) for c, v in per_corruption.items() if v[0] is not None}
    worst = min(ranked, key=ranked.__getitem__) if ranked else None
    if worst is not None:
        value, lo, hi = per_corruption[worst]
        metrics["worst_corruption_accuracy"] = _metric(value, lo, hi, sum(e.uniform.n for e in by_name[worst]),
                                                       "the corruption with the lowest estimated mean over severities; "
                                                       + strat, corruption=worst)
    return {"names": names, "per_corruption": per_corruption, "worst": worst, "drop": drop, "mean_key": mean_key,
            "held_out": held_out}


def _adversarial_metrics(estimates: list[_Estimate], clean: float, confidence: float,
                         metrics: dict[str, Metric]) -> dict[str, Any]:
    """Robust accuracy per attack and eps, and at the largest eps the lowest over the attacks."""
    rows = []
    for e in estimates:
        assert isinstance(e.view, AdversarialView)
        spec = e.view.attack_spec
        value, lo, hi = e.interval(confidence)
        metrics[f"robust_accuracy[{spec.attack},eps={spec.eps:.4g}]"] = _metric(
            value, lo, hi, e.stratum.n,
            f"clean-correct share {e.scale:.4f} (exact, full clean run) x share of attacked clean-correct rows that "
            f"stay right: {_share_method(confidence, e.stratum.n, e.stratum.population)}",
            attack=spec.label(), eps=spec.eps, norm=spec.norm)
        rows.append((spec, value, lo, hi, e))
    main_eps = max(spec.eps for spec, *_ in rows)
    at_main = [r for r in rows if r[0].eps == main_eps and r[1] is not None]
    if not at_main:
        return {"main_eps": main_eps, "robust": None}
    spec, value, lo, hi, e = min(at_main, key=lambda r: float(r[1] or 0.0))
    metrics["robust_accuracy"] = _metric(
        value, lo, hi, e.stratum.n,
        f"the attack with the lowest estimate at eps={main_eps:.4g} ({spec.attack}); each attack's rows are sampled "
        "apart, so the pointwise worst case over attacks (AutoAttack protocol) is not estimated: it is at most this",
        eps=main_eps, norm=spec.norm, attack=spec.label())
    return {"main_eps": main_eps, "robust": (value, lo, hi), "attack": spec.attack}


def _ood_metrics(estimates: list[_Estimate], confidence: float, metrics: dict[str, Metric]) -> list[dict[str, Any]]:
    out = []
    for e in estimates:
        name = e.label["ood_set"]
        value, lo, hi = e.interval(confidence)
        metrics[f"auroc_msp[{name}]"] = _metric(
            value, lo, hi, e.stratum.n,
            f"mean placement of {e.stratum.n} of {e.stratum.population} OOD rows among all clean max-softmax scores "
            f"(= AUROC, OOD positive), Student-t with finite-population correction, {confidence:.0%} (Cochran 1977, "
            "2.15); it covers the AUROC of all OOD rows against all clean rows",
            detector="msp", positive="OOD")
        out.append({"ood_set": name, "auroc": value, "ci_low": lo, "ci_high": hi})
    return out


def _verdicts(corruption: dict[str, Any] | None, adversarial: dict[str, Any] | None, clean: float,
              ood: list[dict[str, Any]]) -> tuple[Verdict, list[Finding]]:
    """Verdict findings judged on the intervals, with the thresholds of the checks the section replaces: FAIL when
    even the favourable end of an interval is past the fail line, WARN when its unfavourable end reaches past the
    warn line (the budget cannot rule the problem out), PASS when the whole interval is clear of it."""
    findings: list[Finding] = []
    rank = {"pass": 0, "warn": 1, "fail": 2}
    verdict: Verdict = "pass"

    severities: dict[str, Severity] = {"pass": "info", "warn": "warning", "fail": "critical"}

    def add(level: Verdict, message: str, evidence: str) -> None:
        nonlocal verdict
        findings.append(Finding(severity=severities[level], sets_verdict=level != "pass", message=message,
                                evidence=evidence))
        if rank[level] > rank[verdict]:
            verdict = level

    if corruption is not None and corruption["drop"][0] is not None:
        drop, best, worst = corruption["drop"]
        level: Verdict = ("fail" if best > FAIL_RELATIVE_DROP else "warn" if worst > WARN_RELATIVE_DROP else "pass")
        end = {"fail": "even its low end", "warn": "its high end", "pass": "its high end"}[level]
        add(level, f"relative drop of mean corruption accuracy vs clean {clean:.3f}: {drop:.1%} (interval {best:.1%} "
            f"to {worst:.1%}); judged on the interval, {end} {'is' if level != 'pass' else 'is not'} past "
            f"{'fail' if level == 'fail' else 'warn'} (warn above {WARN_RELATIVE_DROP:.0%}, fail above "
            f"{FAIL_RELATIVE_DROP:.0%}, as the corruption check)", "budget.metrics.relative_drop")
    if adversarial is not None and adversarial.get("robust") is not None and clean > 0:
        value, lo, hi = adversarial["robust"]
        low, high = lo / clean, hi / clean
        level = "fail" if high < FAIL_ROBUST_RATIO else "warn" if low < WARN_ROBUST_RATIO else "pass"
        end = "even its high end" if level == "fail" else "its low end"
        add(level, f"robust accuracy at eps={adversarial['main_eps']:.4g} is {value / clean:.0%} of clean (interval "
            f"{low:.0%} to {high:.0%}); judged on the interval, {end} "
            f"{'is' if level != 'pass' else 'is not'} below {'fail' if level == 'fail' else 'warn'} (warn below "
            f"{WARN_ROBUST_RATIO:.0%} of clean, fail below {FAIL_ROBUST_RATIO:.0%}, as the adversarial check)",
            "budget.metrics.robust_accuracy")
    for row in ood:
        if row["auroc"] is None:
            continue
        level = "warn" if row["ci_low"] < WARN_MSP_AUROC else "pass"
        add(level, f"MSP AUROC on OOD set {row['ood_set']}: {row['auroc']:.3f} (interval {row['ci_low']:.3f} to "
            f"{row['ci_high']:.3f}); judged on the interval, its low end is {'' if level == 'warn' else 'not '}below "
            f"{WARN_MSP_AUROC} (the OOD check's warn line)", f"budget.metrics.auroc_msp[{row['ood_set']}]")
    return verdict, findings


def _projection(estimates: list[_Estimate], run: BudgetRun, widths: list[float],
                confidence: float) -> list[dict[str, Any]]:
    """What a larger budget would buy: the widest and mean interval width now (reported), and projected at
    :data:`LARGER_BUDGETS` times the passes used, each view's sampled rows scaled by what the extra sampling
    passes buy (capped at its N), widths from the normal approximation with finite-population correction
    (:meth:`Stratum.projected_width`, also shown at today's rows for comparison); the last row is the full run."""
    sampled = sum(e.passes for e in estimates)
    spent = max(run.passes_used - sampled, 0.0)  # passes of the clean view counted against the budget

    def row(label: str, passes: float, factor: float, method: str) -> dict[str, Any]:
        planned = [e.scale * e.stratum.projected_width(max(e.stratum.n, 1) * factor, confidence) for e in estimates]
        return {"budget": label, "passes": passes, "widest_width": max(planned, default=0.0),
                "mean_width": float(np.mean(planned)) if planned else 0.0, "method": method}

    rows = [{"budget": "this run (reported)", "passes": run.passes_used, "widest_width": max(widths, default=0.0),
             "mean_width": float(np.mean(widths)) if widths else 0.0,
             "method": "the reported intervals (exact for shares)"},
            row("this run (projected)", run.passes_used, 1.0, "normal approximation at the rows sampled")]
    for multiple in LARGER_BUDGETS:
        passes = multiple * run.passes_used
        if passes >= run.full_passes:
            rows.append({"budget": f"{multiple:g}x", "passes": run.full_passes, "widest_width": 0.0,
                         "mean_width": 0.0, "method": "covers the full run"})
            continue
        factor = (passes - spent) / sampled if sampled > 0 else multiple
        rows.append(row(f"{multiple:g}x", passes, factor, "projected: rows per view scaled by the extra passes, "
                        "normal approximation with finite-population correction"))
    rows.append({"budget": "full run", "passes": run.full_passes, "widest_width": 0.0, "mean_width": 0.0,
                 "method": "every row: exact values"})
    return rows


def budget_section(run: BudgetRun, targets: Sequence[BudgetTarget], ctx: CheckContext) -> Section:
    """The ``budget`` section of a budgeted run. ``ctx``: the run's context with ``views`` holding the budgeted
    views (those without a target, e.g. an attack with no clean-correct row, are reported as such)."""
    cfg, conf = ctx.config, ctx.config.confidence
    labels = ctx.labels
    clean_correct = ctx.logits.argmax(axis=1) == labels
    clean = float(clean_correct.mean())
    n = labels.size
    estimates: list[_Estimate] = []
    for target in targets:
        sampled = run.views.get(target.name)
        if sampled is not None:
            stratum, uniform = sampled.stratum(), sampled.uniform_stratum()
            passes, seconds = float(sampled.passes), float(sampled.seconds)
        else:
            stratum = Stratum(0, int(target.population.size), cost=target.cost_per_row, binary=target.binary)
            uniform, passes, seconds = stratum, 0.0, 0.0
        scale = target.population.size / n if isinstance(target.view, AdversarialView) else 1.0
        estimates.append(_Estimate(target.name, target.view, stratum, scale, passes, seconds, _label(target.view),
                                   uniform))

    metrics: dict[str, Metric] = {"clean_accuracy": _metric(
        clean, clean, clean, n, "exact: the clean view runs in full in budget mode (no sampling)")}
    per_view = []
    for e in estimates:
        value, lo, hi = e.interval(conf)
        s = e.stratum
        per_view.append({**e.label, "value": value, "value_ci_low": lo, "value_ci_high": hi,
                         "width": hi - lo, "n_sampled": s.n, "population": s.population,
                         "share_sampled": s.n / s.population, "passes": e.passes, "seconds": round(e.seconds, 3)})
    untargeted = [v for v in ctx.views.values() if isinstance(v, AdversarialView)
                  and v.spec.name not in {t.name for t in targets}]
    for view in untargeted:  # no clean-correct row: nothing to attack, robust accuracy is exactly 0
        per_view.append({**_label(view), "value": 0.0, "value_ci_low": 0.0, "value_ci_high": 0.0, "width": 0.0,
                         "n_sampled": 0, "population": 0, "share_sampled": 1.0, "passes": 0.0, "seconds": 0.0})

    per_view = _same_columns(per_view)
    corr = [e for e in estimates if isinstance(e.view, (CorruptionView, PrecomputedCorruptionView))]
    adv = [e for e in estimates if isinstance(e.view, AdversarialView)]
    ood = [e for e in estimates if isinstance(e.view, OODView)]
    corruption = _corruption_metrics(corr, clean, conf, ctx.dataset, metrics) if corr else None
    adversarial = _adversarial_metrics(adv, clean, conf, metrics) if adv else None
    ood_rows = _ood_metrics(ood, conf, metrics)

    widths = [r["width"] for r in per_view]
    widest = max(per_view, key=lambda r: r["width"]) if per_view else None
    budget = run.budget
    bought = [{"what": "model passes", "budget": run.budget_passes, "used": run.passes_used,
               "full_run": run.full_passes, "share_of_full_run": run.passes_used / run.full_passes
               if run.full_passes else None, "note": "the clean view's passes included; an attacked row counts its "
               "iterations"},
              {"what": "seconds", "budget": budget.seconds, "used": round(run.seconds_used, 3),
               "full_run": (round(run.seconds_used * run.full_passes / run.passes_used, 3) if run.passes_used
                            else None), "share_of_full_run": None,
               "note": "full run: projected from the seconds per pass measured here"}]
    metrics["widest_interval"] = _metric(max(widths, default=0.0), None, None, len(widths),
                                         f"the widest {conf:.0%} interval over the {len(widths)} budgeted views"
                                         + (f" ({widest['view']})" if widest else ""), lower_is_better=True)
    metrics["mean_interval_width"] = _metric(float(np.mean(widths)) if widths else 0.0, None, None, len(widths),
                                             f"mean width of the {conf:.0%} intervals over the budgeted views",
                                             lower_is_better=True)
    metrics["passes_used"] = _metric(run.passes_used, None, None, n + sum(e.stratum.n for e in estimates),
                                     "model passes spent (clean view included; an "
                                     "attacked row counts its iterations)", full_run=run.full_passes)
    larger = _projection(estimates, run, [r["width"] for r in per_view[:len(estimates)]], conf)

    verdict, findings = _verdicts(corruption, adversarial, clean, ood_rows)
    if adv:  # the threat-model checks of the adversarial check (eval mode, logits, input range, gradients)
        sanity = [f.model_copy(update={"evidence": "budget.config", "sets_verdict": f.severity == "critical"})
                  for f in _sanity_findings(ctx, [], {}, clean_correct)]
        if any(f.severity == "critical" for f in sanity):  # a broken set-up makes the attack numbers meaningless
            verdict = "fail"
        findings += sanity
    findings += _run_findings(run, estimates, conf)
    if corruption is not None and corruption["worst"] is not None:
        worst = corruption["worst"]
        _, w_lo, w_hi = corruption["per_corruption"][worst]
        tied = [c for c, (v, lo, _hi) in corruption["per_corruption"].items()
                if c != worst and v is not None and lo is not None and w_hi is not None and lo <= w_hi]
        findings.append(Finding(severity="info", evidence="budget.metrics.worst_corruption_accuracy", message=(
            f"worst corruption by estimate: {worst} ({w_lo:.3f} to {w_hi:.3f})"
            + (f"; not separated at this budget from {', '.join(tied[:5])}" + (" and others" if len(tied) > 5 else "")
               if tied else ""))))
    if untargeted:
        findings.append(Finding(severity="warning", evidence="budget.tables.per_view", message=(
            f"no evaluation row is classified right, so {len(untargeted)} attack view(s) had nothing to attack: "
            "robust accuracy is 0")))
    if ood:
        findings.append(Finding(severity="info", evidence="budget.tables.per_view", message=(
            "OOD sets are scored by max-softmax (MSP) only, against every clean row; the OOD check's other detectors "
            "(energy, Mahalanobis, KNN, ViM, ODIN) and its half-split ID scores need the full run")))
    findings.append(Finding(severity="info", evidence="budget.config", message=(
        f"budget mode: the {', '.join(sorted(BUDGETED_CHECKS))} checks are replaced by this section (their flip "
        "rates, CE/mCE, ECE under corruption, per-class robust accuracy and detector comparisons need the full "
        "run); the other checks ran on the full clean view")))

    plots = _plots(per_view, corruption, ctx, clean)
    anytime = _anytime_plot(run, estimates, conf)
    if anytime is not None:
        plots["anytime"] = anytime
    summary = _summary(run, per_view, metrics, corruption, adversarial, widest)
    key_metrics = [k for k in ("mean_corruption_accuracy", "robust_accuracy", "widest_interval", "passes_used")
                   if k in metrics]
    return Section(
        name="budget", title="Budgeted robustness evaluation", verdict=verdict, summary=summary, metrics=metrics,
        findings=findings, plots=plots, lead_tables=["per_view", "what_the_budget_bought", "larger_budget"],
        tables={"per_view": per_view, "what_the_budget_bought": bought, "larger_budget": larger,
                "rounds": list(run.rounds)[:2000]},
        config={"budget": {"passes": budget.passes, "seconds": budget.seconds, "share": budget.share},
                "objective": run.objective, "stopped_because": run.stopped_because, "interrupted": run.interrupted,
                "confidence": conf, "seed": cfg.seed, "views": len(per_view),
                "replaces_checks": sorted(BUDGETED_CHECKS), "target": "the value the full run would give on this "
                "data (the evaluation set is the finite population)", "intervals": _REFERENCE,
                "allocation": {"widest": "the next rows go to the view whose planned interval is widest (minimises "
                               "the widest reported interval)", "total": "the next rows go where the summed "
                               "variance falls most per pass (greedy Neyman allocation with costs)"}[run.objective]
                if run.objective in ("widest", "total") else run.objective,
                "thresholds": {"warn_relative_drop": WARN_RELATIVE_DROP, "fail_relative_drop": FAIL_RELATIVE_DROP,
                               "warn_robust_ratio": WARN_ROBUST_RATIO, "fail_robust_ratio": FAIL_ROBUST_RATIO,
                               "warn_msp_auroc": WARN_MSP_AUROC},
                "key_metrics": key_metrics},
    )


def _run_findings(run: BudgetRun, estimates: list[_Estimate], confidence: float) -> list[Finding]:
    """How the run ended: interrupted, out of budget before every view had a pilot, views sampled in full."""
    findings = []
    if run.interrupted:
        findings.append(Finding(severity="warning", evidence="budget.config", message=(
            f"stopped by Ctrl-C after {run.passes_used:,.0f} of {run.full_passes:,.0f} passes; the intervals are "
            "valid for what was sampled")))
    empty = [e.name for e in estimates if e.stratum.n == 0]
    if empty:
        findings.append(Finding(severity="warning", evidence="budget.tables.per_view", message=(
            f"{'Ctrl-C came' if run.interrupted else 'the budget ran out'} before every view had its pilot rows: "
            f"{len(empty)} of {len(estimates)} views have no sampled row (interval 0 to 1, aggregates over them not "
            "estimated)" + ("" if run.interrupted else "; give a larger --budget"))))
    full = [e for e in estimates if e.stratum.finished]
    if run.stopped_because == "complete" or (estimates and len(full) == len(estimates)):
        findings.append(Finding(severity="info", evidence="budget.tables.per_view", message=(
            "every view was sampled in full: the values are the full run's, with zero-width intervals")))
    elif full:
        findings.append(Finding(severity="info", evidence="budget.tables.per_view", message=(
            f"{len(full)} of {len(estimates)} views were sampled in full (exact values, zero-width intervals)")))
    return findings


def _plots(per_view: list[dict[str, Any]], corruption: dict[str, Any] | None, ctx: CheckContext,
           clean: float) -> dict[str, dict[str, Any]]:
    """Accuracy vs severity with interval bands per corruption family (as the corruption check draws it) and
    the interval width of every view."""
    plots: dict[str, dict[str, Any]] = {}
    if corruption is not None:
        from assay.corruptions.base import CorruptionInfo
        from assay.engine.planning import available_corruptions

        known = available_corruptions(ctx.dataset.modality)
        names = corruption["names"]
        infos = {c: known.get(c) or CorruptionInfo(c, "precomputed") for c in names}
        rows = [{"corruption": r["corruption"], "severity": r["severity"], "accuracy": r["value"],
                 "accuracy_ci_low": r["value_ci_low"], "accuracy_ci_high": r["value_ci_high"]}
                for r in per_view if r["kind"] == "corruption"]
        severities = sorted({int(r["severity"]) for r in rows})
        clean_metric = Metric(value=clean, ci_low=clean, ci_high=clean, n=len(ctx.labels), method="exact")
        for key, plot in _severity_plots(names, severities, infos, rows, clean, clean_metric).items():
            plots[key] = {**plot, "title": plot["title"].replace(" (0 = clean)", " (0 = clean; sampled)")}
    if per_view:
        plots["interval_width"] = {
            "kind": "bars", "title": "Interval width per view (what this budget bought)", "ylabel": "interval width",
            "categories": [r["view"] for r in per_view],
            "series": [{"label": "width", "values": [r["width"] for r in per_view]}]}
    return plots


def _anytime_plot(run: BudgetRun, estimates: list[_Estimate], confidence: float) -> dict[str, Any] | None:
    """The widest and mean interval width against the passes spent, replaying the run's chunks in order (what
    stopping earlier would have given: the run is anytime). Widths from the normal approximation with
    finite-population correction (:meth:`Stratum.projected_width` at the rows sampled so far; a view with no row
    counts as width 1); at most 200 points."""
    by_name = {e.name: e for e in estimates}
    state = {e.name: Stratum(0, e.stratum.population, binary=e.stratum.binary) for e in estimates}
    values = {name: np.asarray(v.values, dtype=np.float64) for name, v in run.views.items()}
    width = {e.name: 1.0 * e.scale for e in estimates}
    points: list[tuple[float, float, float]] = []
    for chunk in run.rounds:
        name = chunk["view"]
        if name not in by_name:
            continue
        s = state[name]
        state[name] = s = s.add(values[name][s.n:s.n + int(chunk["rows"])])
        width[name] = by_name[name].scale * s.projected_width(s.n, confidence)
        points.append((float(chunk["passes"]), max(width.values()), float(np.mean(list(width.values())))))
    if len(points) < 2:
        return None
    keep = np.unique(np.linspace(0, len(points) - 1, min(len(points), 200)).astype(int))
    x = [points[i][0] for i in keep]
    return {"kind": "line", "title": "Interval width vs passes spent (stopping earlier gives these)",
            "xlabel": "model passes (clean view included)", "ylabel": f"{confidence:.0%} interval width (planned)",
            "series": [{"label": "widest", "x": x, "y": [points[i][1] for i in keep]},
                       {"label": "mean", "x": x, "y": [points[i][2] for i in keep]}]}


def _summary(run: BudgetRun, per_view: list[dict[str, Any]], metrics: dict[str, Metric],
             corruption: dict[str, Any] | None, adversarial: dict[str, Any] | None,
             widest: dict[str, Any] | None) -> str:
    share = run.passes_used / run.full_passes if run.full_passes else math.nan
    ended = {"budget": "the budget is spent", "complete": "every row sampled",
             "interrupted": "stopped by Ctrl-C"}.get(run.stopped_because, run.stopped_because)
    parts = [f"{len(per_view)} views sampled with {run.passes_used:,.0f} model passes ({share:.0%} of the full "
             f"run's {run.full_passes:,.0f}; {ended})"]
    if corruption is not None:
        m = metrics[corruption["mean_key"]]
        if m.value is not None and m.ci_low is not None and m.ci_high is not None:
            parts.append(f"mean corruption accuracy {m.value:.3f} ({m.ci_low:.3f} to {m.ci_high:.3f})")
    if adversarial is not None and adversarial.get("robust") is not None:
        value, lo, hi = adversarial["robust"]
        parts.append(f"robust accuracy {value:.3f} ({lo:.3f} to {hi:.3f})")
    if widest is not None:
        parts.append(f"widest interval {widest['width']:.3f} ({widest['view']})")
    return "; ".join(parts) + "."
