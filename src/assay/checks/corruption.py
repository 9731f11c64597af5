"""Corruption robustness: accuracy per (corruption, severity), mean corruption accuracy, CE / mCE and
relative mCE (Hendrycks & Dietterich 2019), worst corruption, ECE under corruption, flip rate.

All intervals come from the run's shared bootstrap resamples, so every aggregate (mean accuracy, mCE,
flip rate) is resampled jointly with the clean accuracy it is compared with (a paired bootstrap).

Two warnings say when the severity scale itself cannot be trusted: images far smaller than the size the
corruption table was made for (:data:`FAR_BELOW_DESIGN`), and a corruption whose accuracy rises with
severity beyond chance (:func:`severity_pairs`, :func:`severity_reversals`). The worst-corruption ranking
leaves out a corruption that gets easier from its lowest to its highest severity (:func:`rising_corruptions`),
and says so; on images far below the table's design size it says the ranking holds at that size only.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field

from assay.checks.base import Check, CheckConfig, CheckContext, PlanContext, Preparation, make_metric
from assay.corruptions.base import CorruptionInfo
from assay.corruptions.image import resolve_table
from assay.corruptions.image_tables import DESIGN_SIZE
from assay.engine.robust_views import CorruptionView, PrecomputedCorruptionView
from assay.errors import UserError
from assay.evidence.schema import Evidence, Finding, Metric, Section, Verdict
from assay.stats.binning import equal_width_edges
from assay.stats.bootstrap import percentile_ci
from assay.stats.calibration import TopLabelBins, ece_from_stats, top_label
from assay.stats.multiple_testing import holm
from assay.stats.paired import mcnemar_exact, mcnemar_one_sided
from assay.stats.probabilities import softmax

__all__ = [
    "FAR_BELOW_DESIGN",
    "CorruptionCheck",
    "CorruptionConfig",
    "check_corruption",
    "corruption_error",
    "relative_corruption_error",
    "rising_corruptions",
    "severity_pairs",
    "severity_reversals",
    "table_scale_findings",
]

# Verdict: relative accuracy drop (1 - mean corruption accuracy / clean accuracy) thresholds.
WARN_RELATIVE_DROP = 0.20
FAIL_RELATIVE_DROP = 0.50

#: Images count as far below a corruption table's design size (32 px CIFAR-10-C, 224 px ImageNet-C) when
#: their smaller side is under this fraction of it: the table's pixel-valued parameters (blur radii and
#: sigmas, glass-blur swap distances, elastic displacements, snow and spatter blob sizes) then cover at
#: least twice the share of the image they were tuned for, and the published definitions stop behaving
#: as a severity scale (at 8x8 with the CIFAR table, elastic_transform accuracy rises from severity 1 to 5).
FAR_BELOW_DESIGN = 0.5
_TABLE_NAMES = {"cifar": "CIFAR-10-C", "imagenet": "ImageNet-C"}


def table_scale_findings(views: list, image_shape: tuple[int, ...]) -> tuple[list[Finding], dict[str, Any]]:
    """A warning per corruption table the generated image views use far below its design size
    (smaller side < ``FAR_BELOW_DESIGN`` x ``DESIGN_SIZE[table]``), and what was compared (for the config)."""
    generated = [v for v in views if isinstance(v, CorruptionView)]
    if not generated or len(image_shape) != 4:
        return [], {}
    h, w = int(image_shape[-2]), int(image_shape[-1])
    tables = sorted({resolve_table(v.table, image_shape) for v in generated})
    findings = []
    for table in tables:
        design = DESIGN_SIZE[table]
        if min(h, w) < FAR_BELOW_DESIGN * design:
            findings.append(Finding(
                severity="warning",
                message=f"the images are {h}x{w} px, far below the {design}x{design} px the {_TABLE_NAMES[table]} "
                f"corruption table ('{table}') was made for (smaller side under {FAR_BELOW_DESIGN:g} of it): its "
                "pixel-sized parameters (blur radii, displacements, elastic fields) cover a much larger share of "
                "the image, so severity curves may be non-monotone and a corruption may not mean what it means "
                f"at {design} px; compare these numbers only with runs at the same image size",
                evidence="corruption.config.table_scale"))
    scale = {"image_size": [h, w], "tables": {t: {"design_size": DESIGN_SIZE[t],
                                                  "far_below": min(h, w) < FAR_BELOW_DESIGN * DESIGN_SIZE[t]}
                                              for t in tables},
             "far_below_rule": f"smaller side < {FAR_BELOW_DESIGN:g} x design size"}
    return findings, scale


def severity_pairs(correct: np.ndarray, accuracy_samples: np.ndarray, severities: list[int],
                   confidence: float) -> list[dict[str, Any]]:
    """Every pair of severities s < t of one corruption, compared on the same samples.

    ``correct``: (n, S) per-sample correctness at each of the corruption's severities (ascending, as
    ``severities``); ``accuracy_samples``: (B, S) accuracies of the same columns in the run's shared
    bootstrap resamples. Per pair: accuracies, the rise ``acc_t - acc_s`` with its paired percentile CI,
    the discordant counts (``rose``: wrong at s, right at t; ``fell``: the reverse) and the two-sided exact
    McNemar p-value of rose vs fell (McNemar 1947)."""
    n = correct.shape[0]
    pairs = []
    for (i, s), (j, t) in combinations(enumerate(severities), 2):
        at_s, at_t = correct[:, i], correct[:, j]
        rose, fell = int(np.count_nonzero(~at_s & at_t)), int(np.count_nonzero(at_s & ~at_t))
        lo, hi = percentile_ci(accuracy_samples[:, j] - accuracy_samples[:, i], confidence)
        pairs.append({"severity_low": int(s), "severity_high": int(t), "accuracy_low": float(at_s.mean()),
                      "accuracy_high": float(at_t.mean()), "rise": (rose - fell) / n, "rise_ci_low": float(lo),
                      "rise_ci_high": float(hi), "rose": rose, "fell": fell,
                      "p_mcnemar": mcnemar_exact(fell, rose)})
    return pairs


def severity_reversals(pairs: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """The pairs (from :func:`severity_pairs`, any number of corruptions) where accuracy is significantly
    higher at the higher severity: a positive rise whose McNemar p-value, Holm-adjusted over all the pairs
    given (Holm 1979; family-wise error ``alpha``), is below ``alpha``. Each gets ``p_holm``."""
    if not pairs:
        return []
    _, adjusted = holm(np.array([pair["p_mcnemar"] for pair in pairs]), alpha)
    return [{**pair, "p_holm": float(p)} for pair, p in zip(pairs, adjusted) if pair["rise"] > 0 and p < alpha]


def rising_corruptions(pairs: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """The corruptions whose accuracy is higher at their highest severity than at their lowest, beyond
    chance: severity then no longer orders difficulty (a table used outside its design range), and the
    corruption's mean over severities cannot be ranked against the others.

    ``pairs``: :func:`severity_pairs` rows with a ``corruption`` key. Per corruption, its (lowest, highest)
    pair is tested one-sided ("accuracy rose"), exact McNemar on the same samples: ``p_rise`` = P(X >= rose),
    X ~ Bin(rose + fell, 1/2); Holm-adjusted over the corruptions tested (``p_rise_holm``; family-wise
    error ``alpha``). Only the end points are compared: a dip in the middle of a curve is what some
    published tables do at their design size (CIFAR glass blur's first three severities, spatter's water
    and mud), while a curve that ends easier than it starts has lost its meaning as a severity scale."""
    ends: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        best = ends.get(pair["corruption"])
        if best is None or (pair["severity_low"], -pair["severity_high"]) < (best["severity_low"],
                                                                           -best["severity_high"]):
            ends[pair["corruption"]] = pair
    if not ends:
        return []
    rows = list(ends.values())
    p_rise = np.array([mcnemar_one_sided(row["fell"], row["rose"]) for row in rows])
    _, adjusted = holm(p_rise, alpha)
    return [{**row, "p_rise": float(p), "p_rise_holm": float(q), "corruptions_tested": len(rows)}
            for row, p, q in zip(rows, p_rise, adjusted) if row["rise"] > 0 and q < alpha]


def corruption_error(errors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """CE_c = sum_s E_{s,c} / sum_s E^ref_{s,c} over the last axis (Hendrycks & Dietterich 2019, eq. 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(errors).sum(-1) / np.asarray(reference).sum(-1)


def relative_corruption_error(errors: np.ndarray, clean_error: np.ndarray, reference: np.ndarray,
                              reference_clean_error: float | np.ndarray) -> np.ndarray:
    """Relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^ref_{s,c} - E^ref_clean) (ibid.).

    ``errors`` and ``reference`` are (..., corruptions, severities); the clean errors broadcast against
    their leading axes (one per resample, say)."""
    errors, reference = np.asarray(errors), np.asarray(reference)

    def trailing(value: Any, ndim: int) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        return value.reshape(value.shape + (1,) * (ndim - value.ndim))

    with np.errstate(divide="ignore", invalid="ignore"):
        return ((errors - trailing(clean_error, errors.ndim)).sum(-1)
                / (reference - trailing(reference_clean_error, reference.ndim)).sum(-1))


def _baseline_errors(baseline: Evidence, ctx: CheckContext) -> tuple[dict[tuple[str, int], float], float]:
    """(corruption, severity) -> error and the clean error of a baseline evidence bundle."""
    if baseline.data.fingerprint != ctx.dataset.fingerprint:
        raise UserError(
            "the --baseline bundle was evaluated on different data (fingerprints "
            f"{baseline.data.fingerprint[:12]} vs {ctx.dataset.fingerprint[:12]})",
            where="baseline", fix="evaluate the baseline model on the same data with the same corruptions")
    section = baseline.sections.get("corruption")
    perf = baseline.sections.get("performance")
    if section is None or perf is None or "per_view" not in section.tables:
        raise UserError("the --baseline bundle has no corruption results", where="baseline",
                        fix="evaluate the baseline with --suite standard (or the same --corruptions) first")
    errors = {(r["corruption"], int(r["severity"])): 1.0 - float(r["accuracy"]) for r in section.tables["per_view"]}
    accuracy = perf.metrics["accuracy"].value
    assert accuracy is not None  # accuracy is defined on every (non-empty) evaluation set
    return errors, 1.0 - float(accuracy)


def check_corruption(ctx: CheckContext) -> Section:
    """Accuracy, flips and calibration of the model on every corruption view the run planned."""
    cfg = ctx.config
    views = [(name, v) for name, v in ctx.views.items() if isinstance(v, (CorruptionView, PrecomputedCorruptionView))]
    if not views:
        raise UserError("the corruption check needs corruption views", where="checks",
                        fix="pass --corruptions or --suite standard")
    labels = ctx.labels
    n = len(labels)
    clean_pred = ctx.logits.argmax(axis=1)
    clean_correct = clean_pred == labels
    correct = np.stack([ctx.outputs[name].logits.argmax(axis=1) == labels for name, _ in views], axis=1)
    flips = clean_correct[:, None] & ~correct
    n_views = len(views)
    per_sample = np.concatenate([clean_correct[:, None], correct, flips], axis=1).astype(np.float64)
    point = per_sample.mean(axis=0)
    boot = ctx.resample_weights().means(per_sample)

    from assay.engine.planning import available_corruptions

    names = list(dict.fromkeys(v.name for _, v in views))
    known = available_corruptions(ctx.dataset.modality)
    # Pre-computed sets may hold types we do not generate: they count as standard, family "precomputed".
    infos = {c: known.get(c) or CorruptionInfo(c, "precomputed") for c in names}
    severities = sorted({v.severity for _, v in views})
    cell = {(v.name, v.severity): j for j, (_, v) in enumerate(views)}
    grid = np.array([[cell.get((c, s), -1) for s in severities] for c in names])  # (corruptions, severities)
    complete = (grid >= 0).all(axis=1)
    standard = np.array([not infos[c].held_out for c in names])

    baseline_errors = baseline_clean = None
    if ctx.baseline is not None:
        baseline_errors, baseline_clean = _baseline_errors(ctx.baseline, ctx)
    with_reference = complete & (np.array([all((c, s) in baseline_errors for s in severities) for c in names])
                                 if baseline_errors is not None else True)

    def aggregates(values: np.ndarray) -> dict[str, np.ndarray]:
        """Everything scalar, from per-sample means (last axis): works for the point and each resample."""
        # Proportions: clip the float32 rounding of resampled means (about 1e-8) back into [0, 1].
        values = np.clip(values, 0.0, 1.0)
        clean_acc = values[..., 0]
        acc = values[..., 1:1 + n_views]
        flip_mass = values[..., 1 + n_views:]
        acc_grid = np.where(grid >= 0, acc[..., np.clip(grid, 0, None)], np.nan)  # (..., C, S)
        err_grid = 1.0 - acc_grid
        out: dict[str, np.ndarray] = {"clean_accuracy": clean_acc}
        if standard.any():
            out["mean_corruption_accuracy"] = np.nanmean(acc_grid[..., standard, :], axis=(-2, -1))
        if (~standard).any():
            out["mean_heldout_corruption_accuracy"] = np.nanmean(acc_grid[..., ~standard, :], axis=(-2, -1))
        out["per_corruption_accuracy"] = np.nanmean(acc_grid, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["flip_rate"] = flip_mass.sum(-1) / (n_views * clean_acc)
            out["per_view_flip_rate"] = flip_mass / clean_acc[..., None]
        clean_err = 1.0 - clean_acc
        if baseline_errors is not None:
            ref = np.array([[baseline_errors.get((c, s), np.nan) for s in severities] for c in names])
            ce = corruption_error(err_grid, ref)
            assert baseline_clean is not None  # set with baseline_errors
            rel = relative_corruption_error(err_grid, clean_err, ref, baseline_clean)
        else:
            ref = np.broadcast_to(clean_err[..., None, None], err_grid.shape)
            ce = corruption_error(err_grid, ref)
            rel = relative_corruption_error(err_grid, clean_err, ref, 0.0)
        out["per_corruption_ce"], out["per_corruption_relative_ce"] = ce, rel
        use = standard & with_reference
        if use.any():
            out["mce"] = np.mean(ce[..., use], axis=-1)
            out["relative_mce"] = np.mean(rel[..., use], axis=-1)
        return out

    point_agg = aggregates(point)
    boot_agg = aggregates(boot)
    acc_boot = np.clip(boot[:, 1:1 + n_views], 0.0, 1.0)
    pairs = []
    for i, c in enumerate(names):
        columns = [(s, grid[i, k]) for k, s in enumerate(severities) if grid[i, k] >= 0]
        cols = [j for _, j in columns]
        pairs += [{"corruption": c, **pair} for pair in severity_pairs(
            correct[:, cols], acc_boot[:, cols], [s for s, _ in columns], cfg.confidence)]
    scale_findings, table_scale = (table_scale_findings([v for _, v in views], ctx.dataset.x.shape)
                                   if ctx.dataset.modality == "image" else ([], {}))
    rising = {r["corruption"]: r for r in rising_corruptions(pairs, 1 - cfg.confidence)}
    ranking = _rank(names, point_agg["per_corruption_accuracy"], rising)
    worst = ranking.worst

    # ECE under each corruption, and its mean with a CI over the same resamples.
    edges = equal_width_edges(cfg.ece_bins)
    view_bins = [TopLabelBins(*top_label(softmax(ctx.outputs[name].logits), labels), edges) for name, _ in views]
    ece_views = np.array([float(ece_from_stats(bins())) for bins in view_bins])
    ece_boot = np.concatenate([  # one design per view, reused for every array of resample weights
        np.mean([ece_from_stats(bins(w)) for bins in view_bins], axis=0) for w in ctx.resample_weights()
    ])

    normalizer = ("baseline model's errors (--baseline)" if baseline_errors is not None
                  else "the model's own clean error (no --baseline: NOT comparable with published mCE)")
    metrics: dict[str, Metric] = {}

    def add(name: str, value: Any, samples: Any, **metric_config: Any) -> None:
        metrics[name] = make_metric(value, samples, n=n, config=cfg, metric_config=metric_config)

    add("clean_accuracy", point_agg["clean_accuracy"], boot_agg["clean_accuracy"])
    if "mean_corruption_accuracy" in point_agg:
        add("mean_corruption_accuracy", point_agg["mean_corruption_accuracy"], boot_agg["mean_corruption_accuracy"],
            corruptions=[c for c, s in zip(names, standard) if s], severities=severities,
            definition="mean accuracy over the standard corruptions and severities")
    if "mean_heldout_corruption_accuracy" in point_agg:
        add("mean_heldout_corruption_accuracy", point_agg["mean_heldout_corruption_accuracy"],
            boot_agg["mean_heldout_corruption_accuracy"], corruptions=[c for c, s in zip(names, standard) if not s])
    add("worst_corruption_accuracy", point_agg["per_corruption_accuracy"][worst],
        boot_agg["per_corruption_accuracy"][:, worst], corruption=names[worst], left_out=list(rising),
        definition="mean over severities of the corruption with the lowest point estimate (chosen once), among "
                   "those whose accuracy does not rise from their lowest to their highest severity beyond chance "
                   "(all, when every one rises)")
    if "mce" in point_agg:
        add("mce", point_agg["mce"], boot_agg["mce"], normalizer=normalizer, lower_is_better=True,
            definition="mean over standard corruptions of CE_c = sum_s E_sc / sum_s E_ref_sc "
                       "(Hendrycks & Dietterich 2019)")
        add("relative_mce", point_agg["relative_mce"], boot_agg["relative_mce"], normalizer=normalizer,
            lower_is_better=True,
            definition="mean of sum_s (E_sc - E_clean) / sum_s (E_ref_sc - E_ref_clean) (Hendrycks & Dietterich 2019)")
    add("flip_rate", point_agg["flip_rate"], boot_agg["flip_rate"], lower_is_better=True,
        definition="share of clean-correct samples that a corruption makes wrong, averaged over views")
    add("mean_ece_under_corruption", ece_views.mean(), ece_boot, lower_is_better=True,
        definition=f"mean over views of top-label ECE ({cfg.ece_bins} equal-width bins, L1; Guo et al. 2017)")

    alpha = (1 - cfg.confidence) / 2
    flip_boot = boot_agg["per_view_flip_rate"]
    per_view: list[dict[str, Any]] = []
    for j, (_, v) in enumerate(views):
        lo, hi = np.quantile(acc_boot[:, j], [alpha, 1 - alpha])
        flo, fhi = np.nanquantile(flip_boot[:, j], [alpha, 1 - alpha])
        per_view.append({
            "corruption": v.name, "family": infos[v.name].family, "held_out": infos[v.name].held_out,
            "severity": v.severity, "accuracy": float(point[1 + j]), "accuracy_ci_low": float(lo),
            "accuracy_ci_high": float(hi), "flip_rate": float(point_agg["per_view_flip_rate"][j]),
            "flip_rate_ci_low": float(flo), "flip_rate_ci_high": float(fhi), "ece": float(ece_views[j]),
        })
    per_corruption: list[dict[str, Any]] = []
    for i, c in enumerate(names):
        lo, hi = np.nanquantile(boot_agg["per_corruption_accuracy"][:, i], [alpha, 1 - alpha])
        per_corruption.append({
            "corruption": c, "family": infos[c].family, "held_out": infos[c].held_out,
            "mean_accuracy": float(point_agg["per_corruption_accuracy"][i]), "mean_accuracy_ci_low": float(lo),
            "mean_accuracy_ci_high": float(hi), "ce": _num(point_agg["per_corruption_ce"][i]),
            "relative_ce": _num(point_agg["per_corruption_relative_ce"][i]),
        })

    plots = _severity_plots(names, severities, infos, per_view, point_agg["clean_accuracy"], metrics["clean_accuracy"])
    plots["per_corruption"] = {
        "kind": "bars", "title": "Mean accuracy per corruption (95% CI)", "ylabel": "accuracy",
        "categories": names,
        "series": [{"label": "mean over severities", "values": [r["mean_accuracy"] for r in per_corruption],
                    "ci_low": [r["mean_accuracy_ci_low"] for r in per_corruption],
                    "ci_high": [r["mean_accuracy_ci_high"] for r in per_corruption]}],
    }
    tables: dict[str, list[dict[str, Any]]] = {"per_corruption": per_corruption, "per_view": per_view}
    examples = _examples(ctx, views, names, severities)
    if ctx.dataset.modality == "image" and examples:
        plots["examples"] = examples
    elif examples:
        tables["examples"] = examples["rows_table"]

    clean = float(point_agg["clean_accuracy"])
    # Every corruption is standard or held out, so one of the two means exists.
    mean_key = ("mean_corruption_accuracy" if "mean_corruption_accuracy" in point_agg
                else "mean_heldout_corruption_accuracy")
    mean_acc = float(point_agg[mean_key])
    drop = 1.0 - mean_acc / clean if clean > 0 else float("nan")
    verdict: Verdict = "fail" if drop > FAIL_RELATIVE_DROP else "warn" if drop > WARN_RELATIVE_DROP else "pass"
    findings = [
        Finding(severity="info" if verdict == "pass" else "warning" if verdict == "warn" else "critical",
                sets_verdict=verdict != "pass",
                message=f"mean corruption accuracy {mean_acc:.3f} vs clean {clean:.3f}: a {drop:.0%} relative drop "
                f"(warn above {WARN_RELATIVE_DROP:.0%}, fail above {FAIL_RELATIVE_DROP:.0%})",
                evidence="corruption.metrics.mean_corruption_accuracy"),
        Finding(severity="warning" if per_corruption[worst]["mean_accuracy"] < 0.5 * clean else "info",
                message=f"worst corruption: {names[worst]} at {per_corruption[worst]['mean_accuracy']:.3f} mean "
                f"accuracy over severities {severities}" + _ranking_caveat(ranking, table_scale),
                evidence="corruption.tables.per_corruption"),
        Finding(severity="info", message=f"CE and mCE are normalized by {normalizer}",
                evidence="corruption.metrics.mce"),
        Finding(severity="info", message=f"{point_agg['flip_rate']:.1%} of clean-correct predictions flip to wrong "
                "under a corruption (mean over views)", evidence="corruption.metrics.flip_rate"),
    ]
    if baseline_errors is not None and not with_reference[standard].all():
        missing = [c for c, ok, s in zip(names, with_reference, standard) if s and not ok]
        findings.append(Finding(severity="warning", message=f"the baseline lacks results for {missing}: "
                                "they are left out of mCE", evidence="corruption.metrics.mce"))

    findings.extend(_left_out_findings(ranking, rising, point_agg["per_corruption_accuracy"], names))
    findings.extend(scale_findings)
    reversals = severity_reversals(pairs, 1 - cfg.confidence)
    for c in dict.fromkeys(r["corruption"] for r in reversals):
        rows = sorted((r for r in reversals if r["corruption"] == c), key=lambda r: -r["rise"])
        top = rows[0]
        others = ", ".join(f"{r['severity_low']} -> {r['severity_high']}" for r in rows[1:])
        findings.append(Finding(
            severity="warning",
            message=f"{c}: accuracy is higher at severity {top['severity_high']} ({top['accuracy_high']:.3f}) than "
            f"at severity {top['severity_low']} ({top['accuracy_low']:.3f}), +{top['rise']:.3f} ({cfg.confidence:.0%} "
            f"paired CI {top['rise_ci_low']:+.3f} to {top['rise_ci_high']:+.3f}; exact McNemar p = "
            f"{top['p_mcnemar']:.2g}, Holm-adjusted over {len(pairs)} severity pairs p = {top['p_holm']:.2g})"
            + (f"; also rising significantly: {others}" if others else "")
            + ". Severity does not order this corruption's difficulty here: its mean over severities mixes "
            "unlike conditions", evidence="corruption.tables.severity_reversals"))
    if reversals:
        tables["severity_reversals"] = reversals
    return Section(
        name="corruption", title="Corruption robustness", verdict=verdict,
        summary=(f"Mean accuracy under {len(names)} corruption(s) x severities {severities}: {mean_acc:.4f} "
                 f"(clean {clean:.4f}); worst: {names[worst]}."),
        metrics=metrics, findings=findings, tables=tables, plots=plots,
        config={"corruptions": names, "severities": severities, "seed": cfg.seed, "table": cfg.corruption_table,
                "normalizer": normalizer, "thresholds": {"warn_relative_drop": WARN_RELATIVE_DROP,
                                                         "fail_relative_drop": FAIL_RELATIVE_DROP},
                "table_scale": table_scale,
                "ranking": {
                    "worst": names[worst],
                    "left_out": [{k: rising[c][k] for k in ("corruption", "severity_low", "severity_high",
                                                            "accuracy_low", "accuracy_high", "rose", "fell",
                                                            "p_rise", "p_rise_holm")} for c in ranking.left_out],
                    "every_corruption_rises": ranking.all_rising,
                    "rule": "a corruption whose accuracy at its highest severity is above that at its lowest "
                            "(one-sided exact McNemar on the same samples, Holm over the corruptions, family-wise "
                            "error alpha) is left out of the worst-corruption ranking; when every one is, the "
                            "lowest of all is named, with that caveat"},
                "severity_order_test": {
                    "pairs_tested": len(pairs), "alpha": 1 - cfg.confidence,
                    "method": "every severity pair s < t of a corruption on the same samples: exact McNemar "
                              "(two-sided) of wrong-at-s-right-at-t vs the reverse, Holm-adjusted over all pairs; "
                              "flagged when accuracy rises and the adjusted p < alpha"},
                "reference": "Hendrycks & Dietterich 2019, Benchmarking Neural Network Robustness to Common "
                             "Corruptions and Perturbations (ICLR)",
                "key_metrics": ["mean_corruption_accuracy", "worst_corruption_accuracy", "mce", "flip_rate"]},
    )


class _Ranking(NamedTuple):
    """Which corruption the findings name as worst: ``worst`` (an index into the corruption names), the
    names left out of the ranking (accuracy rising with severity) and whether every corruption rose (then
    nothing is left out and ``worst`` is the lowest of all, named with that caveat)."""

    worst: int
    left_out: list[str]
    all_rising: bool


def _rank(names: list[str], accuracy: np.ndarray, rising: dict[str, dict[str, Any]]) -> _Ranking:
    values = np.asarray(accuracy, dtype=np.float64)
    ranked = np.array([c not in rising for c in names])
    if not ranked.any():
        return _Ranking(int(np.nanargmin(values)), [], True)
    return _Ranking(int(np.nanargmin(np.where(ranked, values, np.inf))), [c for c in names if c in rising], False)


def _ranking_caveat(ranking: _Ranking, table_scale: dict[str, Any]) -> str:
    """What the worst-corruption finding must add: that no corruption forms a severity scale here, and
    that a ranking on images far below the table's design size holds at that size only."""
    caveat = ""
    if ranking.all_rising:
        caveat += (" (but every corruption's accuracy rises from its lowest to its highest severity here, so "
                   "severity does not order difficulty and the means over severities do not rank the corruptions)")
    far = [t for t, v in table_scale.get("tables", {}).items() if v["far_below"]]
    if far:
        h, w = table_scale["image_size"]
        design = ", ".join(f"{_TABLE_NAMES[t]}'s {table_scale['tables'][t]['design_size']} px" for t in far)
        caveat += (f"; at {h}x{w} px, under half the image size the corruption table was made for ({design}), "
                   "this ranking holds at this image size only")
    return caveat


def _left_out_findings(ranking: _Ranking, rising: dict[str, dict[str, Any]], accuracy: np.ndarray,
                       names: list[str]) -> list[Finding]:
    """One finding naming the corruptions left out of the ranking, with the test that put them out; a
    warning when one of them would have been named worst."""
    if not ranking.left_out:
        return []
    values = np.asarray(accuracy, dtype=np.float64)
    details = []
    for c in ranking.left_out:
        r = rising[c]
        details.append(
            f"{c} (mean {values[names.index(c)]:.3f}; accuracy {r['accuracy_low']:.3f} at severity "
            f"{r['severity_low']}, {r['accuracy_high']:.3f} at {r['severity_high']}: {r['rose']} samples turned "
            f"right, {r['fell']} wrong; one-sided exact McNemar p = {r['p_rise']:.2g}, Holm over "
            f"{r['corruptions_tested']} corruptions p = {r['p_rise_holm']:.2g})")
    lowest = min(ranking.left_out, key=lambda c: values[names.index(c)])
    changed = values[names.index(lowest)] < values[ranking.worst]
    return [Finding(
        severity="warning" if changed else "info",
        message="left out of the worst-corruption ranking: " + "; ".join(details) + ". Accuracy that ends higher "
        "at the top severity than at the lowest means severity does not order this corruption's difficulty here "
        "(its table is used outside its design range), so its mean over severities does not rank against the "
        "others" + (f"; ranked with them, {lowest} would have been named worst" if changed else ""),
        evidence="corruption.config.ranking")]


def _num(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _severity_plots(names: list[str], severities: list[int], infos: dict, per_view: list[dict],
                    clean_acc: float | np.ndarray, clean_metric: Metric) -> dict[str, dict[str, Any]]:
    """One line plot per corruption family: accuracy vs severity (0 = clean) with CI bands."""
    plots: dict[str, dict[str, Any]] = {}
    by_key = {(r["corruption"], r["severity"]): r for r in per_view}
    families = list(dict.fromkeys(infos[c].family for c in names))
    for family in families:
        series = []
        for c in (c for c in names if infos[c].family == family):
            rows = [by_key.get((c, s)) for s in severities]
            series.append({
                "label": c + (" (held-out)" if infos[c].held_out else ""),
                "x": [0, *severities],
                "y": [float(clean_acc), *[r["accuracy"] if r else None for r in rows]],
                "y_low": [clean_metric.ci_low, *[r["accuracy_ci_low"] if r else None for r in rows]],
                "y_high": [clean_metric.ci_high, *[r["accuracy_ci_high"] if r else None for r in rows]],
            })
        plots[f"severity_{family}"] = {"kind": "line", "title": f"Accuracy vs severity — {family} (0 = clean)",
                                       "series": series, "xlabel": "severity", "ylabel": "accuracy"}
    return plots


def _examples(ctx: CheckContext, views: list, names: list[str], severities: list[int]) -> dict[str, Any] | None:
    """Thumbnails (images) or strings (text) of the first sample under each corruption and severity."""
    by_key = {(v.name, v.severity): ctx.outputs[name] for name, v in views}
    first = next((o for o in by_key.values() if o.examples is not None and len(o.examples)), None)
    if first is None or ctx.dataset.modality == "tabular":
        return None
    assert first.example_index is not None  # set together with examples (engine.run)
    sample = int(first.example_index[0])
    if ctx.dataset.modality == "text":
        rows = [{"corruption": "clean", "severity": 0, "text": str(ctx.dataset.x[sample])}]
        for c in names:
            for s in severities:
                out = by_key.get((c, s))
                if out is not None and out.examples is not None:
                    rows.append({"corruption": c, "severity": s, "text": str(out.examples[0])})
        return {"rows_table": rows}
    from assay.report.thumbnails import png_thumbnail

    clean_thumb = png_thumbnail(ctx.dataset.x[sample])
    rows = []
    for c in names:
        images, captions = [clean_thumb], ["clean"]
        for s in severities:
            out = by_key.get((c, s))
            if out is not None and out.examples is not None:
                images.append(png_thumbnail(out.examples[0]))
                captions.append(f"s{s}")
        rows.append({"label": c, "images": images, "captions": captions})
    return {"kind": "images", "title": f"Sample {ctx.dataset.ids[sample]} under each corruption",
            "columns": ["clean", *[f"severity {s}" for s in severities]], "rows": rows}


class CorruptionConfig(CheckConfig):
    corruptions: list[str] = Field(default_factory=list, description="Corruption types to evaluate (empty: none).")
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="Corruption severities (1-5).")
    corruption_table: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="Image corruption parameters: CIFAR-scale below 128 px, ImageNet-scale above (auto).")
    corruption_data: str | None = Field(
        None, description="Directory of a pre-computed -C set (<corruption>.npy, 5 severities stacked).")
    baseline: str | None = Field(None, description="Evidence bundle of a baseline model, the reference of CE/mCE.")


class CorruptionCheck(Check):
    """Accuracy, CE/mCE, flips and calibration under corruptions generated here or read from a -C folder."""

    name = "corruption"
    Config = CorruptionConfig
    needs = "--corruptions, --suite standard or --corruption-data"

    def wanted(self, settings: CorruptionConfig) -> bool:
        return bool(settings.corruptions or settings.corruption_data)

    def prepare(self, plan: PlanContext, settings: CorruptionConfig) -> Preparation:
        from assay.engine import planning
        from assay.engine.robust_views import load_precomputed_corruptions
        from assay.evidence.bundle import read_evidence

        names = planning.resolve_corruptions(settings.corruptions, plan.dataset.modality)
        precomputed = (load_precomputed_corruptions(settings.corruption_data, plan.dataset)
                       if settings.corruption_data else [])
        baseline = read_evidence(settings.baseline) if settings.baseline else None
        views = planning.corruption_views(plan.dataset, names, settings.severities, seed=plan.config.seed,
                                          table=settings.corruption_table)
        return Preparation(views=[*views, *(v for v in precomputed if v.severity in settings.severities)],
                           facts=baseline)

    def run(self, ctx: CheckContext) -> Section:
        return check_corruption(replace(ctx, baseline=ctx.facts.get(self.name, ctx.baseline)))
