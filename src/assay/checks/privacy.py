"""Membership inference as a check: does the model reveal which samples it was trained on?

Members are the training data (``--train-data``), non-members the evaluation data or ``--nonmember-data``
(labelled data the model never saw); inputs present in both are refused before any inference. Both sides are
subsampled to the same size (seeded), so an attack's balanced accuracy and AUROC read the same way.

Attacks (scores in :mod:`assay.stats.membership`): the loss threshold (Yeom et al. 2018), the confidence
attack with class-conditional thresholds, modified entropy (Song & Mittal 2021), and, with reference models
trained WITHOUT the training data (``--reference-models``, or ``reference_recipe=`` in Python), offline LiRA
(Carlini et al. 2022) and offline RMIA (Zarifzadeh et al. 2024). Each gets an
AUROC and TPR at 1% and 0.1% FPR with stratified bootstrap intervals; a TPR the non-member count cannot
support is not reported (a finding says how many non-members it needs). The strongest attack (highest AUROC)
sets the verdict: an attacker picks the best attack, so the audit reports it; the maximum over a few attacks
is slightly optimistic for the attacker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from assay.checks.base import Check, CheckConfig, CheckContext, PlanContext, Preparation
from assay.data.dataset import Dataset
from assay.engine.views import InputSetView, View
from assay.errors import DataError, ModelError, OptionError
from assay.evidence.schema import Finding, Metric, Section
from assay.stats import membership as mia
from assay.stats.bootstrap import spawn_seed

if TYPE_CHECKING:
    from assay.models.base import Model

__all__ = ["ATTACKS", "NonMemberView", "PrivacyCheck", "PrivacyConfig", "check_privacy", "log_roc_points"]

#: Attack name -> what it is (shown in the section's config and table).
ATTACKS: dict[str, str] = {
    "loss": "loss threshold, one global threshold (Yeom et al. 2018)",
    "confidence": "logit-scaled true-class confidence, class-conditional thresholds (Song & Mittal 2021)",
    "modified_entropy": "modified prediction entropy, class-conditional thresholds (Song & Mittal 2021)",
    "lira_offline": "offline LiRA over OUT reference models (Carlini et al. 2022)",
    "rmia_offline": "offline RMIA likelihood ratio over OUT reference models (Zarifzadeh et al. 2024, a = 0.3)",
}
#: Per-class AUROC is computed for classes with at least this many members and non-members in the sample.
MIN_PER_CLASS = 10


def _pct(f: float) -> str:
    """0.01 -> '1pct', 0.001 -> '0.1pct' (metric-name suffixes)."""
    return f"{f * 100:g}pct"


class NonMemberView(InputSetView):
    """The inputs of the ``--nonmember-data`` set (labels are read by the check, not the view)."""

    kind = "nonmember"


class PrivacyConfig(CheckConfig):
    nonmember_data: str | None = Field(None, description="Non-members for membership inference: labelled data the "
                                       "model was not trained on (default: the evaluation data).")
    reference_models: list[str] = Field(default_factory=list, description="Reference model files trained WITHOUT "
                                        "the training data (OUT models, 2 or more): offline LiRA.")
    membership_max_samples: int = Field(10_000, ge=20, description="Members and non-members audited per side at "
                                        "most (seeded subsample).")
    membership_min_false_positives: int = Field(mia.MIN_FALSE_POSITIVES, ge=1, description="TPR at FPR f is "
                                                "reported only with at least this many / f non-members.")
    membership_warn_auroc: float = Field(0.6, gt=0.5, lt=1.0, description="Warn when the strongest attack's AUROC "
                                         "interval lies above this.")
    reference_recipe: Any = Field(None, exclude=True, description="Python API only: a training recipe "
                                  "``(x, y, seed) -> torch.nn.Module or Model``; Assay trains ``reference_count`` OUT "
                                  "reference models with it on random halves of half the non-members (the other half "
                                  "is audited). Not recorded in evidence.json (its name is, in the section's config).")
    reference_count: int = Field(4, ge=2, le=64, description="Reference models trained with ``reference_recipe``.")


def log_roc_points(fpr: np.ndarray, tpr: np.ndarray, n_nonmembers: int, points: int = 120,
                   min_false_positives: int = 1) -> tuple[list[float], list[float]]:
    """The ROC at log-spaced FPRs from ``min_false_positives / n_nonmembers`` to 1 (TPR = the largest with FPR <=
    each), so a log-x plot keeps its detail at low FPR (Carlini et al. 2022 plot ROCs on log axes) and stops
    where the non-member count stops supporting it."""
    lowest = min(1.0, min_false_positives / max(n_nonmembers, 1))
    grid = np.unique(np.r_[np.logspace(np.log10(lowest), 0.0, points), fpr[fpr >= lowest]])
    if grid.size > points:
        grid = grid[np.unique(np.linspace(0, grid.size - 1, points).astype(int))]
    idx = np.searchsorted(fpr, grid + 1e-12, side="right") - 1
    return grid.tolist(), tpr[np.maximum(idx, 0)].tolist()


def _scores(logits: np.ndarray, labels: np.ndarray, is_member: np.ndarray, seed: int,
            reference_logits: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every attack's per-sample score (higher = member) over the pooled members + non-members."""
    phi = mia.logit_confidence(logits, labels)
    scores = {
        "loss": mia.loss_score(logits, labels),
        "confidence": mia.class_conditional(phi, labels, is_member, seed=seed),
        "modified_entropy": mia.class_conditional(-np.log(mia.modified_entropy(logits, labels) + 1e-300), labels,
                                                  is_member, seed=seed),
    }
    if reference_logits:
        ref_phi = np.stack([mia.logit_confidence(z, labels) for z in reference_logits])
        scores["lira_offline"] = mia.lira_offline(phi, ref_phi)
        ref_log_py = np.stack([mia.true_class_log_probs(z, labels) for z in reference_logits])
        scores["rmia_offline"] = mia.rmia_offline(scores["loss"], ref_log_py)
    return scores


def _metric(value: float | None, lo: float | None, hi: float | None, n: int, method: str,
            config: dict[str, Any]) -> Metric:
    return Metric(value=value, ci_low=lo, ci_high=hi, n=n, method=method, config=config)


def _fmt_ci(value: float, lo: float | None, hi: float | None, pct: bool = False) -> str:
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(value)} [{f(lo)}, {f(hi)}]" if lo is not None and hi is not None and np.isfinite([lo, hi]).all() \
        else f(value)


def check_privacy(ctx: CheckContext) -> Section:
    cfg = ctx.config
    settings: PrivacyConfig = cfg.check("privacy")
    facts = ctx.facts["privacy"]
    train_out = ctx.facts.get("train_outputs")
    assert train_out is not None and ctx.train is not None and ctx.train.y is not None  # prepare() asked for them
    pick_m, pick_n = facts["members"], facts["nonmembers"]
    if facts["view"] is None:
        non_logits, non_labels = ctx.outputs.clean.logits, ctx.labels
    else:
        non_logits, non_labels = ctx.outputs[facts["view"]].logits, facts["nonmember_labels"]
    logits = np.concatenate([train_out.logits[pick_m], non_logits[pick_n]]).astype(np.float64)
    labels = np.concatenate([ctx.train.y[pick_m], non_labels[pick_n]]).astype(np.int64)
    k = len(pick_m)
    is_member = np.r_[np.ones(k, bool), np.zeros(len(pick_n), bool)]
    reference_logits = (facts.get("reference_logits") or {}).get("logits", [])
    scores = _scores(logits, labels, is_member, cfg.seed, reference_logits)

    findings: list[Finding] = []
    metrics: dict[str, Metric] = {}
    rows: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    rocs: dict[str, mia.MembershipROC] = {}
    for attack, score in scores.items():
        # One resample stream for all attacks (same name): differences between attacks are paired.
        roc = mia.membership_roc(score[is_member], score[~is_member], n_resamples=cfg.n_bootstrap, seed=cfg.seed,
                                 confidence=cfg.confidence,
                                 min_false_positives=settings.membership_min_false_positives, name="privacy")
        rocs[attack] = roc
        conf = {"attack": ATTACKS[attack], "positive": "member", "score": "higher = more likely a member"}
        metrics[f"auroc[{attack}]"] = _metric(roc.auroc.value, _finite(roc.auroc.ci_low), _finite(roc.auroc.ci_high),
                                              2 * k, roc.method, conf)
        row: dict[str, Any] = {"attack": attack, "auroc": roc.auroc.value, "auroc_ci_low": _finite(roc.auroc.ci_low),
                               "auroc_ci_high": _finite(roc.auroc.ci_high)}
        for f, t in roc.tpr_at.items():
            row.update({f"tpr_at_{_pct(f)}_fpr": t.value, f"tpr_at_{_pct(f)}_fpr_ci_low": t.ci_low,
                        f"tpr_at_{_pct(f)}_fpr_ci_high": t.ci_high})
            if t.value is not None:
                metrics[f"tpr_at_{_pct(f)}_fpr[{attack}]"] = _metric(t.value, t.ci_low, t.ci_high, 2 * k, t.method,
                                                                     {**conf, "fpr": f})
        rows.append(row)
        x, y = log_roc_points(roc.fpr, roc.tpr, roc.n_nonmembers,
                              min_false_positives=settings.membership_min_false_positives)
        series.append({"label": f"{attack} (AUROC {roc.auroc.value:.3f})", "x": x, "y": y})
    chance = series[0]["x"] if series else [1.0]
    series.append({"label": "chance", "x": chance, "y": chance})

    best_name = max(rocs, key=lambda a: rocs[a].auroc.value)
    best = rocs[best_name]
    lo_b, hi_b = _finite(best.auroc.ci_low), _finite(best.auroc.ci_high)
    metrics["membership_auroc"] = _metric(best.auroc.value, lo_b, hi_b, 2 * k, best.method, {
        "attack": best_name, "definition": "AUROC of the strongest attack (highest point AUROC of "
        f"{', '.join(rocs)})"})
    best_at: dict[float, tuple[str, mia.TprAtFpr]] = {}  # per FPR, the attack with the highest TPR there
    for f in best.tpr_at:
        reported = [(a, r.tpr_at[f]) for a, r in rocs.items() if r.tpr_at[f].value is not None]
        if reported:
            name, t = max(reported, key=lambda at: at[1].value or 0.0)
            best_at[f] = (name, t)
            metrics[f"membership_tpr_at_{_pct(f)}_fpr"] = _metric(t.value, t.ci_low, t.ci_high, 2 * k, t.method, {
                "attack": name, "fpr": f, "definition": f"TPR at FPR {f:g} of the attack strongest there"})

    # Headline: does the model leak membership?
    tpr_text = ""
    if 0.01 in best_at:
        name, t = best_at[0.01]
        tpr_text = f"; TPR {_fmt_ci(t.value or 0.0, t.ci_low, t.ci_high, pct=True)} at 1% FPR ({name} attack)"
    headline = f"membership AUROC {_fmt_ci(best.auroc.value, lo_b, hi_b)} ({best_name} attack){tpr_text}"
    leaks = lo_b is not None and lo_b > settings.membership_warn_auroc
    if leaks:
        findings.append(Finding(severity="warning", sets_verdict=True, evidence="privacy.metrics.membership_auroc",
                                message=f"{headline}: the model leaks membership of its training data (the AUROC "
                                f"interval lies above {settings.membership_warn_auroc}); regularise, stop earlier, "
                                "train on more data, or train with differential privacy"))
    elif lo_b is not None and lo_b > 0.5:
        findings.append(Finding(severity="info", evidence="privacy.metrics.membership_auroc", message=(
            f"{headline}: measurable but small leakage (interval above chance, not above "
            f"{settings.membership_warn_auroc})")))
    else:
        findings.append(Finding(severity="info", evidence="privacy.metrics.membership_auroc", message=(
            f"{headline}: not distinguishable from chance with these attacks and {k} samples per side (a stronger "
            "attack, e.g. LiRA with more reference models, may still succeed)")))
    for f, t in best.tpr_at.items():
        if t.value is None:
            findings.append(Finding(severity="info", evidence="privacy.tables.attacks", message=(
                f"TPR at {f:.1%} FPR is not reported: {k} non-members support it only with at least {t.needed:,} "
                f"({settings.membership_min_false_positives} expected false positives at that rate); below that "
                "the threshold rests on a handful of non-members and the number would be noise")))
    if "lira_offline" not in rocs:
        findings.append(Finding(severity="info", message=(
            "the reference-model attack (offline LiRA) was not run: give --reference-models (2 or more models of the "
            "same architecture trained WITHOUT the training data); it is usually the strongest at low FPR")))
    findings += facts["notes"]

    # Generalization gap (Yeom et al. 2018: membership advantage grows with it).
    member_acc = float((logits[is_member].argmax(1) == labels[is_member]).mean())
    non_acc = float((logits[~is_member].argmax(1) == labels[~is_member]).mean())
    findings.append(Finding(severity="info", message=(
        f"accuracy on the audited members {member_acc:.3f} vs non-members {non_acc:.3f} "
        f"(gap {member_acc - non_acc:+.3f}; "
        "the loss attack's advantage grows with this gap, Yeom et al. 2018)")))

    # Vulnerability by class: the strongest attack's AUROC within each class.
    per_class = _per_class(scores[best_name], labels, is_member, ctx, best_name)
    tested = [r for r in per_class if r["auroc"] is not None]
    plots: dict[str, dict[str, Any]] = {"roc": {
        "kind": "line", "title": "Membership inference ROC (log FPR)", "series": series, "xscale": "log",
        "xlabel": f"false positive rate (non-members flagged), log scale, from "
                  f"{settings.membership_min_false_positives} / {k} non-members",
        "ylabel": "true positive rate (members found)"}}
    if tested:
        worst = max(tested, key=lambda r: r["auroc"])
        findings.append(Finding(severity="info", evidence="privacy.tables.per_class", message=(
            f"most exposed class: {worst['class']} ({best_name} AUROC "
            f"{_fmt_ci(worst['auroc'], worst['auroc_ci_low'], worst['auroc_ci_high'])} within the class)")))
        plots["per_class"] = {"kind": "bars", "title": f"Membership AUROC by class ({best_name})",
                              "categories": [r["class"] for r in tested],
                              "series": [{"label": "AUROC", "values": [r["auroc"] for r in tested],
                                          "ci_low": [r["auroc_ci_low"] for r in tested],
                                          "ci_high": [r["auroc_ci_high"] for r in tested]}],
                              "ylabel": "AUROC (0.5 = chance)", "xlabel": "class"}
    summary = f"{len(rocs)} attack(s) on {k} members vs {k} non-members; {headline}."
    return Section(
        name="privacy", title="Privacy: membership inference", verdict="warn" if leaks else "pass",
        summary=summary, metrics=metrics,
        findings=findings, tables={"attacks": rows, "per_class": per_class}, plots=plots, lead_tables=["attacks"],
        config={"members": facts["members_source"], "nonmembers": facts["nonmembers_source"], "per_side": k,
                "attacks": {a: ATTACKS[a] for a in rocs},
                "reference_models": facts.get("reference_sources", []),
                "class_conditional": "per-class standardization by non-member statistics, cross-fitted over 2 folds "
                                     "(no score calibrated on itself)",
                "tpr_at_fpr": "largest TPR with FPR <= f; reported with >= "
                              f"{settings.membership_min_false_positives}/f non-members",
                "warn_if_auroc_ci_above": settings.membership_warn_auroc, "key_metrics": ["membership_auroc"]})


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _per_class(score: np.ndarray, labels: np.ndarray, is_member: np.ndarray, ctx: CheckContext, attack: str
               ) -> list[dict[str, Any]]:
    cfg = ctx.config
    names = ctx.dataset.class_names
    rows = []
    for c in np.unique(labels):
        m = score[is_member & (labels == c)]
        n = score[~is_member & (labels == c)]
        row: dict[str, Any] = {"class": names[c] if names and c < len(names) else str(c),
                               "n_members": int(m.size), "n_nonmembers": int(n.size),
                               "auroc": None, "auroc_ci_low": None, "auroc_ci_high": None}
        if min(m.size, n.size) >= MIN_PER_CLASS:
            roc = mia.membership_roc(m, n, fprs=(), n_resamples=cfg.n_bootstrap, seed=cfg.seed,
                                     confidence=cfg.confidence, name=f"privacy/class{c}")
            row.update({"auroc": roc.auroc.value, "auroc_ci_low": _finite(roc.auroc.ci_low),
                        "auroc_ci_high": _finite(roc.auroc.ci_high)})
        else:
            row["note"] = f"fewer than {MIN_PER_CLASS} members or non-members"
        rows.append(row)
    return rows


def _refuse_overlap(members: Dataset, nonmembers: Dataset) -> None:
    """DataError naming both sets when some input appears in both (membership would be mislabelled)."""
    in_members, in_non = mia.overlapping_rows(members.x, nonmembers.x)
    if in_members.size:
        raise DataError(
            f"{in_non.size} input(s) of the non-member data ({nonmembers.source}) also appear in the training "
            f"data ({members.source}) (same content, e.g. non-member row {int(in_non[0])} = training row "
            f"{int(in_members[0])}): they cannot be both members and non-members",
            where=nonmembers.source,
            fix="give non-members the model never saw (--nonmember-data), with the training rows removed")


def _load_reference_models(paths: list[str], plan: PlanContext) -> list[Model]:
    from assay.models.loader import load_model

    if len(paths) < 2:
        raise OptionError(f"offline LiRA needs at least 2 reference models, got {len(paths)}",
                          where="reference_models", fix="train two or more models of the same architecture "
                          "without the training data (different seeds or data) and list them all")
    sample = plan.dataset.x[:2]
    models = []
    for path in paths:
        ref = load_model(path, sample=sample)
        if ref.info.num_classes != plan.model.info.num_classes:
            raise ModelError(f"reference model {path} has {ref.info.num_classes} classes, the audited model "
                             f"{plan.model.info.num_classes}", where=path,
                             fix="train the reference models on the same task (same classes, same order)")
        models.append(ref)
    return models


def _recipe_name(recipe: Any) -> str:
    return f"recipe {getattr(recipe, '__qualname__', type(recipe).__name__)}"


def _train_references(recipe: Any, pool: Dataset, population: np.ndarray, count: int, plan: PlanContext
                      ) -> list[Model]:
    """``count`` models from ``recipe(x, y, seed)``, each trained on a seeded random half of ``population`` (rows
    of ``pool``); a torch module is wrapped as a Model. A recipe that fails or returns something else is an
    OptionError naming it."""
    from assay.models.base import Model as ModelBase
    from assay.models.torch_models import wrap_module

    rng = np.random.default_rng(spawn_seed(plan.config.seed, "privacy/reference-halves"))
    assert pool.y is not None  # prepare() refused unlabelled non-members
    models: list[Model] = []
    for i in range(count):
        rows = np.sort(rng.choice(population, size=max(1, len(population) // 2), replace=False))
        try:
            trained = recipe(np.asarray(pool.x[rows]), np.asarray(pool.y[rows]), plan.config.seed + i + 1)
        except Exception as exc:  # the user's code: its failure is bad input, not an Assay bug
            raise OptionError(f"the reference recipe failed on reference model {i + 1}: {type(exc).__name__}: "
                              f"{exc}", where="reference_recipe",
                              fix="check the recipe on a small (x, y) first") from exc
        if isinstance(trained, ModelBase):
            models.append(trained)
            continue
        import torch

        if not isinstance(trained, torch.nn.Module):
            raise OptionError(f"the reference recipe returned {type(trained).__name__}, not a torch.nn.Module or "
                              "an assay Model", where="reference_recipe", fix="return the trained model")
        models.append(wrap_module(trained, sample=np.asarray(pool.x[:2]), name=f"<reference model {i + 1}>"))
    for ref in models:
        if ref.info.num_classes != plan.model.info.num_classes:
            raise OptionError(f"a reference model has {ref.info.num_classes} classes, the audited model "
                              f"{plan.model.info.num_classes}", where="reference_recipe",
                              fix="train the reference models on the same task (same classes, same order)")
    return models


class PrivacyCheck(Check):
    """Membership inference (loss, class-conditional confidence, modified entropy, offline LiRA and RMIA)."""

    name = "privacy"
    Config = PrivacyConfig

    def wanted(self, settings: PrivacyConfig) -> bool:
        return bool(settings.nonmember_data or settings.reference_models or settings.reference_recipe is not None)

    def prepare(self, plan: PlanContext, settings: PrivacyConfig) -> Preparation:
        """Members, non-members (checked disjoint by content), the balanced sample, the non-member view, and
        the reference models' outputs (run after the main inference)."""
        if plan.train is None:
            raise OptionError("the privacy check needs the training data (its members)", where="train_data",
                              fix="give --train-data: the data the model was trained on")
        members = plan.train
        views: list[View] = []
        notes: list[Finding] = []
        if settings.nonmember_data:
            assert plan.load_inputs is not None
            nonmembers = plan.load_inputs(settings.nonmember_data, "non-member data")
            if nonmembers.y is None:
                raise DataError("the non-member data has no labels", where=nonmembers.source,
                                fix="give labelled non-members: the attacks read the loss of the true class")
            nonmembers.validate_labels(plan.model.info.num_classes)
            view: NonMemberView | None = NonMemberView(nonmembers.name, nonmembers)
            views.append(view)  # type: ignore[arg-type]
        else:
            nonmembers, view = plan.dataset, None
            notes.append(Finding(severity="info", message=(
                f"non-members are the evaluation data ({nonmembers.source}); it was checked to share no input with "
                "the training data, but the audit assumes the model never saw it in any other form")))
        _refuse_overlap(members, nonmembers)
        pick_m, pick_n = mia.balanced_indices(len(members), len(nonmembers), seed=plan.config.seed,
                                              cap=settings.membership_max_samples)
        if len(pick_m) < len(members) or len(pick_n) < len(nonmembers):
            notes.append(Finding(severity="info", message=(
                f"balanced sample: {len(pick_m)} of {len(members)} members and {len(pick_n)} of {len(nonmembers)} "
                f"non-members (seeded, seed={plan.config.seed})")))
        recipe = settings.reference_recipe
        population = None
        if recipe is not None:
            if settings.reference_models:
                raise OptionError("give reference models or a reference recipe, not both", where="reference_recipe",
                                  fix="drop one of them")
            if not callable(recipe):
                raise OptionError(f"reference_recipe must be callable (x, y, seed) -> model, got "
                                  f"{type(recipe).__name__}", where="reference_recipe",
                                  fix="pass a function that trains a fresh model on (x, y)")
            # Half of the non-members trains the reference models (OUT for every audited row), the other half is
            # audited: the references never saw a member or an audited non-member.
            perm = np.random.default_rng(spawn_seed(plan.config.seed, "privacy/population")).permutation(
                len(nonmembers))
            audited, population = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])
            pick_m, pick_audited = mia.balanced_indices(len(members), len(audited), seed=plan.config.seed,
                                                        cap=settings.membership_max_samples)
            pick_n = audited[pick_audited]
            notes.append(Finding(severity="info", message=(
                f"{len(population)} of the {len(nonmembers)} non-members trained {settings.reference_count} reference "
                f"models ({_recipe_name(recipe)}, each on a random half of them); {len(pick_n)} of the other "
                f"{len(audited)} are audited")))
        refs = _load_reference_models(settings.reference_models, plan) if settings.reference_models else []
        sources = list(settings.reference_models) or (
            [f"{_recipe_name(recipe)} x {settings.reference_count}"] if recipe is not None else [])
        facts = {"members": pick_m, "nonmembers": pick_n, "view": None if view is None else view.spec.name,
                 "nonmember_labels": nonmembers.y, "notes": notes, "members_source": members.source,
                 "nonmembers_source": nonmembers.source, "reference_sources": sources}

        def reference_outputs() -> dict[str, Any]:
            """Each reference model's logits on the audited members + non-members (uncached forward passes)."""
            from assay.engine.run import run_views
            from assay.engine.views import CleanView

            models = refs if population is None else _train_references(
                recipe, nonmembers, population, settings.reference_count, plan)
            both = [members.subset(pick_m), nonmembers.subset(pick_n)]
            logits = [np.concatenate([run_views(ref, part, [CleanView()], cache_dir=None,
                                                batch_size=plan.config.batch_size, progress=False,
                                                keep_features=False).clean.logits for part in both])
                      for ref in models]
            return {"logits": logits}

        measure = reference_outputs if refs or population is not None else None
        # The reference logits arrive as facts["privacy"] after measure(): keep the rest under "reference_logits".
        return Preparation(views=views, train_outputs=True, facts=facts,
                           measure=None if measure is None else (lambda: {**facts, "reference_logits": measure()}))

    def run(self, ctx: CheckContext) -> Section:
        return check_privacy(ctx)
