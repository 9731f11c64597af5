"""Adversarial robustness: robust accuracy under the attacks run, pointwise worst case over attacks
(the AutoAttack protocol, Croce & Hein 2020: only clean-correct points are attacked; a point is robust
when it is correct under every attack), per eps and per class, with sanity checks of the threat model.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
from pydantic import Field

from assay.checks.base import (
    Check,
    CheckConfig,
    CheckContext,
    PlanContext,
    Preparation,
    exact_interval_if_collapsed,
    make_metric,
)
from assay.engine.robust_views import AdversarialView
from assay.errors import UserError
from assay.evidence.schema import Finding, Metric, Section, Severity, Verdict
from assay.stats.bootstrap import bootstrap_cell_counts, clopper_pearson, spawn_seed

__all__ = ["AdversarialCheck", "AdversarialConfig", "attack_plan", "check_adversarial", "robust_correct"]

# A black-box attack beating the white-box ones by more than this (accuracy points) hints at gradient masking.
MASKING_MARGIN = 0.01
# Verdict thresholds on robust accuracy relative to clean accuracy.
WARN_ROBUST_RATIO = 0.5
FAIL_ROBUST_RATIO = 0.1


def robust_correct(clean_correct: np.ndarray, attacked_correct: list[np.ndarray]) -> np.ndarray:
    """Per sample: correct on the clean input and under every attack (pointwise worst case)."""
    robust = np.asarray(clean_correct, dtype=bool).copy()
    for correct in attacked_correct:
        robust &= np.asarray(correct, dtype=bool)
    return robust


def _accuracy_metric(ctx: CheckContext, hits: np.ndarray, name: str, **metric_config: Any) -> Metric:
    """A proportion with an exact multinomial bootstrap CI (Clopper-Pearson when it collapses)."""
    cfg = ctx.config
    n = hits.size
    k = int(hits.sum())
    boot = bootstrap_cell_counts(np.array([n - k, k]), cfg.n_bootstrap, spawn_seed(cfg.seed, f"adversarial/{name}"))
    metric = make_metric(k / n, boot[:, 1] / n, n=n, config=cfg, metric_config=metric_config)
    exact_interval_if_collapsed(metric, k, n, cfg.confidence)
    return metric


def check_adversarial(ctx: CheckContext) -> Section:
    cfg = ctx.config
    views = [(name, v) for name, v in ctx.views.items() if isinstance(v, AdversarialView)]
    if not views:
        raise UserError("the adversarial check needs attack views", where="checks", fix="pass --adversarial quick")
    labels = ctx.labels
    n = labels.size
    clean_correct = ctx.logits.argmax(1) == labels
    correct = {name: ctx.outputs[name].logits.argmax(1) == labels for name, _ in views}
    eps_values = sorted({v.attack_spec.eps for _, v in views})
    main_eps = eps_values[-1]
    norm = views[0][1].attack_spec.norm
    attacks = list(dict.fromkeys(v.attack_spec.attack for _, v in views))

    metrics: dict[str, Metric] = {"clean_accuracy": _accuracy_metric(ctx, clean_correct, "clean")}
    curve: list[dict[str, Any]] = []
    robust_at: dict[float, np.ndarray] = {}
    per_attack_at_main: dict[str, np.ndarray] = {}
    for eps in eps_values:
        at_eps = [(name, v) for name, v in views if v.attack_spec.eps == eps]
        robust = robust_correct(clean_correct, [correct[name] for name, _ in at_eps])
        robust_at[eps] = robust
        m = _accuracy_metric(ctx, robust, f"robust/{eps}", eps=eps, norm=norm,
                             attacks=[v.attack_spec.label() for _, v in at_eps])
        curve.append({"eps": eps, "robust_accuracy": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
                      "attacks": ", ".join(v.attack_spec.attack for _, v in at_eps)})
        for name, v in at_eps:
            alone = clean_correct & correct[name]
            if eps == main_eps:
                per_attack_at_main[v.attack_spec.attack] = alone
            metrics[f"robust_accuracy_{v.attack_spec.attack}@{eps:.4g}"] = _accuracy_metric(
                ctx, alone, f"{v.attack_spec.attack}/{eps}", eps=eps, norm=norm, attack=v.attack_spec.label())
    metrics["robust_accuracy"] = _accuracy_metric(
        ctx, robust_at[main_eps], "robust", eps=main_eps, norm=norm,
        attacks=[v.attack_spec.label() for _, v in views if v.attack_spec.eps == main_eps],
        protocol="worst case over attacks, per sample; only clean-correct points attacked (Croce & Hein 2020)")

    names = ctx.dataset.class_names or [str(k) for k in range(ctx.logits.shape[1])]
    robust_main = robust_at[main_eps]
    per_class = []
    for k in np.unique(labels):
        mask = labels == k
        lo, hi = clopper_pearson(int(robust_main[mask].sum()), int(mask.sum()), cfg.confidence)
        per_class.append({"class": names[int(k)], "support": int(mask.sum()),
                          "clean_accuracy": float(clean_correct[mask].mean()),
                          "robust_accuracy": float(robust_main[mask].mean()),
                          "robust_accuracy_ci_low": lo, "robust_accuracy_ci_high": hi})

    findings = _sanity_findings(ctx, curve, per_attack_at_main, clean_correct)
    clean_acc = float(clean_correct.mean())
    ratio = float(robust_main.mean()) / clean_acc if clean_acc else 0.0
    ratio_verdict: Verdict = ("fail" if ratio < FAIL_ROBUST_RATIO else "warn" if ratio < WARN_ROBUST_RATIO
                              else "pass")
    verdict = ratio_verdict
    if any(f.severity == "critical" for f in findings):  # a broken set-up makes every number meaningless
        verdict = "fail"
        findings = [f.model_copy(update={"sets_verdict": True}) if f.severity == "critical" else f for f in findings]
    preset_note = ("not AutoAttack: its standard version runs APGD-CE, APGD-T, FAB-T and Square with 5000 "
                   "queries; report these numbers under the attacks listed")
    ratio_severity: Severity = ("info" if ratio_verdict == "pass" else "warning" if ratio_verdict == "warn"
                                else "critical")
    findings.append(Finding(severity=ratio_severity, sets_verdict=ratio_verdict != "pass", message=(
        f"robust accuracy {robust_main.mean():.3f} at {norm} eps={main_eps:.4g} vs clean {clean_acc:.3f} "
        f"(verdict: warn below {WARN_ROBUST_RATIO:.0%} of clean, fail below {FAIL_ROBUST_RATIO:.0%}); "
        f"attacks: {', '.join(attacks)}; n={n}; {preset_note}"), evidence="adversarial.metrics.robust_accuracy"))

    plots: dict[str, dict[str, Any]] = {
        "robust_vs_eps": {
            "kind": "line", "title": f"Robust accuracy vs eps ({norm}, worst case over attacks)",
            "xlabel": "eps", "ylabel": "accuracy",
            "series": [{"label": "robust accuracy", "x": [0.0, *eps_values],
                        "y": [clean_acc, *[c["robust_accuracy"] for c in curve]],
                        "y_low": [metrics["clean_accuracy"].ci_low, *[c["ci_low"] for c in curve]],
                        "y_high": [metrics["clean_accuracy"].ci_high, *[c["ci_high"] for c in curve]]}],
        },
        "per_class": {
            "kind": "bars", "title": f"Per-class robust accuracy at eps={main_eps:.4g} (95% CI)", "ylabel": "accuracy",
            "categories": [r["class"] for r in per_class],
            "series": [{"label": "clean", "values": [r["clean_accuracy"] for r in per_class]},
                       {"label": "robust", "values": [r["robust_accuracy"] for r in per_class],
                        "ci_low": [r["robust_accuracy_ci_low"] for r in per_class],
                        "ci_high": [r["robust_accuracy_ci_high"] for r in per_class]}],
        },
    }
    examples = _examples(ctx, views, main_eps)
    if examples:
        plots["examples"] = examples
    return Section(
        name="adversarial", title="Adversarial robustness", verdict=verdict,
        summary=(f"Robust accuracy {robust_main.mean():.4f} at {norm} eps={main_eps:.4g} "
                 f"({', '.join(attacks)}; clean {clean_acc:.4f}, n={n})."),
        metrics=metrics, findings=findings,
        tables={"robust_vs_eps": curve, "per_class": per_class,
                "attacks": [{"attack": v.attack_spec.attack, "norm": v.attack_spec.norm, "eps": v.attack_spec.eps,
                             "steps_or_queries": v.attack_spec.steps, "restarts": v.attack_spec.restarts,
                             "seed": v.attack_spec.seed, "attacked": int(clean_correct.sum())} for _, v in views]},
        plots=plots,
        config={"preset": cfg.adversarial or "custom (--attacks)", "attacks": attacks, "norm": norm, "eps": eps_values,
                "steps": cfg.attack_steps, "restarts": cfg.attack_restarts, "square_queries": cfg.square_queries,
                "n": n, "attacked": int(clean_correct.sum()),
                "thresholds": {"warn_robust_ratio": WARN_ROBUST_RATIO, "fail_robust_ratio": FAIL_ROBUST_RATIO,
                               "masking_margin": MASKING_MARGIN},
                "key_metrics": ["robust_accuracy", "clean_accuracy"]},
    )


def _sanity_findings(ctx: CheckContext, curve: list[dict[str, Any]], per_attack: dict[str, np.ndarray],
                     clean_correct: np.ndarray) -> list[Finding]:
    """Threat-model sanity checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness")."""
    facts = ctx.facts.get("adversarial", {})
    out: list[Finding] = [Finding(severity="warning", message=note, evidence="adversarial.tables.attacks")
                          for note in facts.get("notes", [])]
    training = facts.get("training_modules")
    if training:
        out.append(Finding(severity="critical", message=f"model is in training mode ({', '.join(training)}): "
                           "dropout/batch-norm make attacks and accuracy unreliable; call model.eval() before export",
                           evidence="adversarial.config"))
    elif facts.get("white_box"):
        out.append(Finding(severity="info", message="model is in eval mode", evidence="adversarial.config"))
    out.append(Finding(severity="info", message=f"model outputs checked to be {facts.get('outputs', 'logits')} "
                       "(probability-like outputs are refused unless declared), so losses see logits",
                       evidence="adversarial.config"))
    lo, hi = facts.get("input_min"), facts.get("input_max")
    if lo is not None and (lo < 0 or hi > 1):
        out.append(Finding(severity="critical", message=f"inputs range over [{lo:.3g}, {hi:.3g}], not [0, 1]: eps "
                           "budgets and clipping assume [0, 1] inputs with normalization inside the model",
                           evidence="adversarial.config"))
    if "gradient_zero_fraction" in facts:
        zero = facts["gradient_zero_fraction"]
        if zero > 0.5 or facts.get("gradient_l1_mean", 1.0) == 0:
            out.append(Finding(severity="critical", message=f"input gradients are zero for {zero:.0%} of "
                               f"{facts['gradient_samples']} clean-correct samples: gradient masking — white-box "
                               "results are meaningless; trust the black-box (Square) result",
                               evidence="adversarial.config"))
        else:
            out.append(Finding(severity="info", message=f"input gradients are non-zero (mean L1 "
                               f"{facts['gradient_l1_mean']:.3g} over {facts['gradient_samples']} samples)",
                               evidence="adversarial.config"))
    white = [a for a in per_attack if a != "square"]
    if "square" in per_attack and white:
        best_white = min(per_attack[a].mean() for a in white)
        black = per_attack["square"].mean()
        if black < best_white - MASKING_MARGIN:
            out.append(Finding(severity="warning", message=(
                f"the black-box Square attack is stronger than every white-box attack ({black:.3f} vs "
                f"{best_white:.3f} robust accuracy): a sign of gradient masking; report the worst case and "
                "investigate the model's gradients"), evidence="adversarial.metrics"))
    values = [c["robust_accuracy"] for c in curve]
    if any(b > a + 1e-12 for a, b in itertools.pairwise(values)):
        points = ", ".join(f"{c['eps']:.4g}: {c['robust_accuracy']:.3f}" for c in curve)
        out.append(Finding(severity="warning", message=(
            f"robust accuracy increases with eps somewhere on the curve ({points}): the attacks are too weak "
            "or randomness dominates; use more steps or restarts"), evidence="adversarial.plots.robust_vs_eps"))
    return out


def _examples(ctx: CheckContext, views: list, eps: float) -> dict[str, Any] | None:
    """Clean input, adversarial input and amplified perturbation for a few attacked samples."""
    from assay.report.thumbnails import png_thumbnail

    rows = []
    for name, v in views:
        out = ctx.outputs[name]
        if v.attack_spec.eps != eps or out.examples is None:
            continue
        assert out.example_index is not None  # set together with examples (engine.run)
        for x_adv, i in zip(out.examples[:3], out.example_index[:3]):
            x = ctx.dataset.x[int(i)]
            delta = x_adv - x
            scale = np.abs(delta).max() or 1.0
            pred = int(out.logits[int(i)].argmax())
            rows.append({"label": f"{v.attack_spec.attack} · id {ctx.dataset.ids[int(i)]}",
                         "images": [png_thumbnail(x), png_thumbnail(x_adv), png_thumbnail(0.5 + 0.5 * delta / scale)],
                         "captions": [f"label {ctx.labels[int(i)]}", f"pred {pred}", f"|d|<={scale:.3g}"]})
        if len(rows) >= 6:
            break
    if not rows:
        return None
    return {"kind": "images", "title": f"Adversarial examples at eps={eps:.4g} (delta amplified to full range)",
            "rows": rows,
            "columns": ["clean", "attacked", "delta"]}


class AdversarialConfig(CheckConfig):
    adversarial: Literal["quick", "standard", "blackbox", "auto"] | None = Field(
        None, description="Attack preset: quick (APGD-CE), standard (APGD-CE + APGD-T + Square), blackbox (Square); "
        "auto = standard for torch models, blackbox for ONNX.")
    attacks: list[str] = Field(default_factory=list, description="Explicit attacks (fgsm, pgd, apgd-ce, apgd-t, "
                               "square), replacing the preset's list.")
    eps: list[float] = Field(default_factory=list,
                             description="Perturbation budgets (default 8/255 for linf, 0.5 for l2).")
    norm: Literal["linf", "l2"] = Field("linf", description="Threat model norm.")
    attack_steps: int = Field(100, ge=1, description="Iterations of white-box attacks (APGD: 100 in AutoAttack).")
    attack_restarts: int = Field(1, ge=1, description="Random restarts of white-box attacks.")
    square_queries: int = Field(1000, ge=1, description="Query budget of the Square attack (5000 in AutoAttack).")


def attack_plan(settings: AdversarialConfig, model: Any, dataset: Any, seed: int) -> tuple[list[Any], list[str]]:
    """Attack specs of the run (validated; [] without a preset or attacks) and notes for the report."""
    from assay.engine import planning

    notes: list[str] = []
    if settings.adversarial is None and not settings.attacks:
        return [], notes
    preset = settings.adversarial or "quick"
    if preset == "auto":
        preset = "standard" if model.torch_module() is not None else "blackbox"
    eps = planning.parse_eps(settings.eps) if settings.eps else [planning.DEFAULT_EPS[settings.norm]]
    if preset == "standard" and len(eps) == 1:
        eps = [eps[0] / 4, eps[0] / 2, eps[0]]  # a robust-accuracy-vs-eps curve
    chosen = planning.parse_attacks(settings.attacks) if settings.attacks else preset
    specs = planning.attack_specs(chosen, eps, settings.norm, steps=settings.attack_steps,
                                  restarts=settings.attack_restarts, queries=settings.square_queries, seed=seed)
    if dataset.modality != "image":
        raise UserError(f"adversarial evaluation needs image inputs in [0, 1]; this data is {dataset.modality}",
                        where="adversarial", fix="drop --adversarial, or evaluate corruption robustness instead")
    lo, hi = float(np.min(dataset.x)), float(np.max(dataset.x))
    if lo < 0 or hi > 1:
        raise UserError(f"inputs range over [{lo:.3g}, {hi:.3g}]; attacks need inputs in [0, 1]",
                        where=dataset.source, fix="scale images to [0, 1] and move normalization into the model")
    if model.info.num_classes < 4 and any(s.attack == "apgd-t" for s in specs):
        specs = [s for s in specs if s.attack != "apgd-t"]  # the targeted DLR loss needs >= 4 classes
        notes.append(f"APGD-T was not run: its targeted DLR loss needs at least 4 classes "
                     f"(this model has {model.info.num_classes})")
    if any(s.white_box for s in specs) and model.torch_module() is None:
        raise UserError(
            f"--adversarial {preset} runs white-box attacks, which need gradients; "
            f"a {model.info.format} model has none",
            where="adversarial",
            fix="use --adversarial blackbox (Square attack, queries only), or evaluate the torch model "
                "(TorchScript, torch.export or factory + weights)",
        )
    return specs, notes


class AdversarialCheck(Check):
    """Robust accuracy under white- and black-box attacks, with threat-model sanity findings."""

    name = "adversarial"
    Config = AdversarialConfig
    needs = "--adversarial or --attacks"

    def wanted(self, settings: AdversarialConfig) -> bool:
        return settings.adversarial is not None or bool(settings.attacks)

    def prepare(self, plan: PlanContext, settings: AdversarialConfig) -> Preparation:
        from assay.engine import planning

        specs, notes = attack_plan(settings, plan.model, plan.dataset, plan.config.seed)

        def after_clean(clean: Any) -> tuple[list[Any], dict[str, Any]]:
            # Attacks start from the clean-correct points, and the sanity facts read the clean outputs.
            views = planning.adversarial_views(plan.model, plan.dataset, clean, specs, plan.config.batch_size)
            return views, {**planning.adversarial_facts(plan.model, plan.dataset, clean), "notes": notes}

        return Preparation(after_clean=after_clean)

    def run(self, ctx: CheckContext) -> Section:
        return check_adversarial(ctx)
