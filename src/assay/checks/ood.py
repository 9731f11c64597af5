"""Out-of-distribution detection and selective prediction as a check over cached outputs.

Each OOD set is an engine view (its own inputs, no labels). Detectors score every input, higher = more
in-distribution; metrics treat OOD as the positive class (OpenOOD convention). Feature detectors
(Mahalanobis, KNN) are fitted on ``--train-data`` features, or, without it, on a seeded half of the
evaluation set, whose other half then provides the ID scores (stated in a finding). ODIN (torch models
only) needs input gradients, so its perturbed inputs are engine views of their own (:class:`ODINView`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from assay.checks.base import Check, CheckConfig, CheckContext, PlanContext, Preparation, make_metric
from assay.checks.ood_scores import (
    LOGIT_SCORES,
    KNNDetector,
    MahalanobisDetector,
    ViMDetector,
)
from assay.data.dataset import Dataset
from assay.engine.views import InputSetView, View, ViewSpec, spec_state
from assay.errors import UserError
from assay.evidence.schema import Finding, Metric, Section
from assay.stats.bootstrap import percentile_ci, spawn_seed
from assay.stats.ranking import (
    OOD_METRICS,
    aurc,
    aurc_weighted,
    ood_metrics,
    risk_coverage_curve,
    selective_risk_at_coverage,
)

if TYPE_CHECKING:
    from assay.engine.work import Shard
    from assay.models.base import Model

__all__ = [
    "CONFIDENCE_DETECTORS",
    "INVERTED_AUROC_POINT",
    "ODIN_EPS",
    "ODIN_TEMPERATURE",
    "WARN_MSP_AUROC",
    "ODINView",
    "OODCheck",
    "OODConfig",
    "OODView",
    "auroc_inverted",
    "check_ood",
    "last_layer",
    "odin_perturb",
    "synthetic_ood_sets",
]

#: ODIN defaults (Liang et al. 2018; pytorch-ood's defaults): T = 1000 and a step of 0.0014 in input units.
ODIN_TEMPERATURE = 1000.0
ODIN_EPS = 0.0014

#: Detectors that score the model's own confidence (from its logits). AUROC well below 0.5 for one of them
#: means the model is *more* confident on the OOD set than on real data, not that detection works in reverse.
CONFIDENCE_DETECTORS = (*LOGIT_SCORES, "odin")
#: The section warns when the MSP baseline's AUROC on an OOD set is below this (it separates the set poorly).
WARN_MSP_AUROC = 0.8
#: Without a bootstrap interval, a confidence detector's AUROC below this counts as inverted.
INVERTED_AUROC_POINT = 0.3


class OODView(InputSetView):
    """The inputs of one OOD set (its own dataset; labels, if any, are ignored)."""

    kind = "ood"

    def __init__(self, name: str, dataset: Dataset | None, synthetic: bool = False) -> None:
        super().__init__(name, dataset)
        self.synthetic = synthetic
        self.spec = self.spec.with_state(synthetic=synthetic)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        """In a worker: the rows come in each shard, so the view holds no data (its transform is the identity)."""
        p = spec_state(spec)
        view = cls(p["name"], None, synthetic=p.get("synthetic", False))
        view.spec = spec
        return view


def odin_perturb(module: Any, x: np.ndarray, *, eps: float = ODIN_EPS,
                 temperature: float = ODIN_TEMPERATURE) -> np.ndarray:
    """ODIN input preprocessing (Liang et al. 2018): ``x - eps * sign(grad_x CE(f(x) / T, argmax f(x)))``,
    a small step that raises the temperature-scaled softmax of the predicted class (more for ID inputs).

    Gradients are taken with respect to the inputs only; no clipping to the input range, as in the paper.
    """
    import torch
    import torch.nn.functional as F

    with torch.inference_mode(False), torch.enable_grad():
        xt = torch.from_numpy(np.array(x, dtype=np.float32)).requires_grad_(True)
        logits = module(xt) / temperature
        loss = F.cross_entropy(logits, logits.argmax(dim=1).detach(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xt)
    return (xt.detach() - eps * grad.sign()).numpy()


class ODINView(View):
    """ODIN-perturbed inputs of another view (the clean ID set or one OOD set); the ODIN score is the
    max softmax at temperature T of this view's logits."""

    def __init__(self, base: View, module: Any, eps: float = ODIN_EPS, temperature: float = ODIN_TEMPERATURE) -> None:
        self.base, self._module, self.eps, self.temperature = base, module, float(eps), float(temperature)
        self.spec = ViewSpec.make("odin", of=base.spec.name, eps=self.eps, temperature=self.temperature).with_state(
            base=base.spec)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        """In a worker: the base view rebuilt from its own spec, gradients through the worker's model."""
        from assay.engine.robust_views import logit_module
        from assay.engine.views import gradient_model

        p = spec_state(spec)
        view = cls(View.from_spec(p["base"], model), logit_module(gradient_model(model, spec)), p["eps"],
                   p["temperature"])
        return view

    def row_data(self, source: Dataset) -> dict[str, np.ndarray]:
        return self.base.row_data(source)

    def source(self, dataset: Dataset) -> Dataset:
        return self.base.source(dataset)

    def transform(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        return odin_perturb(self._module, self.base.transform(x, index), eps=self.eps, temperature=self.temperature)

    def transform_shard(self, shard: Shard) -> np.ndarray:
        return odin_perturb(self._module, self.base.transform_shard(shard), eps=self.eps, temperature=self.temperature)


def odin_score(logits: np.ndarray, temperature: float = ODIN_TEMPERATURE) -> np.ndarray:
    """ODIN's score on perturbed-input logits: max softmax at temperature T. Higher = more in-distribution."""
    return LOGIT_SCORES["msp"](np.asarray(logits, dtype=np.float64) / temperature)


def synthetic_ood_sets(reference: Dataset, n: int = 500, seed: int = 0) -> dict[str, Dataset]:
    """Uniform noise, gaussian noise and blurred low-frequency blobs shaped like the evaluation images."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(spawn_seed(seed, "synthetic-ood"))
    shape = (min(n, len(reference)), *reference.input_shape)
    blobs = gaussian_filter(rng.random(shape), sigma=(0, 0, max(1.0, shape[2] / 8), max(1.0, shape[3] / 8)))
    blobs = (blobs - blobs.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(blobs, axis=(1, 2, 3), keepdims=True)
    sets = {
        "synthetic:uniform_noise": rng.random(shape),
        "synthetic:gaussian_noise": np.clip(rng.normal(0.5, 0.25, shape), 0, 1),
        "synthetic:low_frequency_blobs": blobs,
    }
    return {name: Dataset(x=x.astype(np.float32), y=None, ids=np.arange(len(x)), modality="image", name=name,
                          source="<synthetic>") for name, x in sets.items()}


def auroc_inverted(auroc: float, ci_high: float | None) -> bool:
    """Whether an AUROC is below chance beyond sampling noise: the upper end of its interval is below 0.5,
    or, without an interval (no bootstrap), the point estimate is below :data:`INVERTED_AUROC_POINT`."""
    if ci_high is not None and np.isfinite(ci_high):
        return bool(ci_high < 0.5)
    return bool(auroc < INVERTED_AUROC_POINT)


def _auroc_text(row: dict[str, Any], label: str = " AUROC") -> str:
    """``msp AUROC 0.203 [0.171, 0.239]`` (the interval only when there is one)."""
    lo, hi = row["auroc_ci_low"], row["auroc_ci_high"]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None and np.isfinite([lo, hi]).all() else ""
    return f"{row['detector']}{label} {row['auroc']:.3f}{ci}"


def _verdict_findings(set_name: str, by_set: list[dict[str, Any]]) -> list[Finding]:
    """The warnings that set the section's verdict for one OOD set: the model is more confident on it than
    on the evaluation data (a confidence detector's AUROC below chance, see :func:`auroc_inverted`), or else
    the MSP baseline separates it poorly (AUROC below :data:`WARN_MSP_AUROC`)."""
    pointer = f"ood.tables.detectors[{set_name}]"
    inverted = [r for r in by_set if r["detector"] in CONFIDENCE_DETECTORS
                and auroc_inverted(r["auroc"], r["auroc_ci_high"])]
    if inverted:
        separating = [r for r in by_set if r["detector"] not in CONFIDENCE_DETECTORS and r["auroc"] >= WARN_MSP_AUROC]
        feature_note = ""
        if separating:
            top = max(separating, key=lambda r: r["auroc"])
            feature_note = f"; the feature detector {_auroc_text(top)} does separate it"
        return [Finding(severity="warning", sets_verdict=True, evidence=pointer, message=(
            f"the model is more confident on OOD set {set_name} than on the evaluation data "
            f"(AUROC {', '.join(_auroc_text(r, label='') for r in inverted)}; below 0.5: the OOD inputs look more "
            f"in-distribution than real ones): confidence-based rejection would keep the OOD inputs and reject real "
            f"ones"
            f"{feature_note}"))]
    msp = next((r for r in by_set if r["detector"] == "msp"), None)
    if msp is not None and msp["auroc"] < WARN_MSP_AUROC:
        return [Finding(severity="warning", sets_verdict=True, evidence=pointer, message=(
            f"max-softmax confidence separates OOD set {set_name} poorly from the evaluation data "
            f"({_auroc_text(msp)}, warn below {WARN_MSP_AUROC}): a confidence threshold that keeps 95% of real "
            f"inputs still accepts {msp['fpr_at_95_tpr']:.0%} of these OOD inputs"))]
    return []


def _per_set_tables(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """One short table per OOD set (``detectors[<set>]``): detectors x AUROC and FPR@95TPR with their CIs."""
    tables: dict[str, list[dict[str, Any]]] = {}
    keep = [f"{m}{suffix}" for m in ("auroc", "fpr_at_95_tpr") for suffix in ("", "_ci_low", "_ci_high")]
    for row in rows:
        tables.setdefault(f"detectors[{row['ood_set']}]", []).append(
            {"detector": row["detector"], **{k: row[k] for k in keep}})
    return tables


def check_ood(ctx: CheckContext) -> Section:
    cfg = ctx.config
    views = [(name, v) for name, v in ctx.views.items() if isinstance(v, OODView)]
    findings: list[Finding] = []
    n = len(ctx.labels)
    id_index = np.arange(n)
    clean = ctx.outputs.clean
    train_out = ctx.facts.get("train_outputs")
    train_feats = None if train_out is None or ctx.train is None else train_out.features
    train_labels = None if ctx.train is None else ctx.train.y
    if clean.features is not None and train_feats is None:
        perm = np.random.default_rng(spawn_seed(cfg.seed, "ood/split")).permutation(n)
        fit_index, id_index = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        train_feats, train_labels = clean.features[fit_index], ctx.labels[fit_index]
        findings.append(Finding(severity="warning", message=(
            f"feature detectors were fitted on a seeded half of the evaluation set ({len(fit_index)} samples; "
            f"no --train-data); all detectors are scored on the other {len(id_index)} ID samples")))
    # Each detector maps a view name ("clean" or an OOD view) to one score per input of that view.
    detectors: dict[str, Any] = {name: (lambda v, f=fn: f(ctx.outputs[v].logits)) for name, fn in LOGIT_SCORES.items()}
    if clean.features is not None and train_feats is not None:
        assert train_labels is not None  # the evaluation set's labels, or --train-data (checked to be labelled)

        def features_of(view: str) -> np.ndarray:
            features = ctx.outputs[view].features
            assert features is not None  # the model exposes features (clean has them), so every view has them
            return features

        maha = MahalanobisDetector().fit(train_feats, train_labels)
        knn = KNNDetector(k=min(50, len(train_feats) - 1)).fit(train_feats)
        detectors["mahalanobis"] = lambda v: maha.score(features_of(v))
        detectors["knn"] = lambda v: knn.score(features_of(v))
        last = ctx.facts.get("ood", {}).get("last_layer")
        if last is not None and last[0].shape[1] == train_feats.shape[1]:
            vim = ViMDetector().fit(train_feats, *last)
            detectors["vim"] = lambda v: vim.score(features_of(v))
    else:
        findings.append(Finding(severity="info", message="the model exposes no features: Mahalanobis and KNN "
                                "were not run"))
    if "vim" not in detectors:
        findings.append(Finding(severity="info", message="ViM was not run: it needs the last linear layer's weights "
                                "and its input as features (torch models, or ONNX models whose last layer is a "
                                "Gemm or MatMul + Add with constant weights, with default features)"))
    odin = {v.base.spec.name: v for v in ctx.views.values() if isinstance(v, ODINView)}
    odin_settings: dict[str, float] = {}
    if odin:
        odin_view = next(iter(odin.values()))
        odin_settings = {"temperature": odin_view.temperature, "eps": odin_view.eps}
        detectors["odin"] = lambda v: odin_score(ctx.outputs[odin[v].spec.name].logits, odin_view.temperature)
    else:
        findings.append(Finding(severity="info", message="ODIN was not run: it needs input gradients (torch models "
                                "with floating-point inputs)"))

    metrics: dict[str, Metric] = {}
    rows: list[dict[str, Any]] = []
    plots: dict[str, dict[str, Any]] = {}
    from sklearn.metrics import roc_curve

    auroc_samples: dict[tuple[str, str], np.ndarray] = {}

    for det, score in detectors.items():
        id_scores = score("clean")[id_index]
        series = []
        for name, view in views:
            ood_scores = score(name)
            # One seed stream per OOD set (not per detector): every detector sees the same ID and OOD
            # resamples, so differences between detectors are paired.
            res = ood_metrics(id_scores, ood_scores, n_resamples=cfg.n_bootstrap, seed=cfg.seed,
                              confidence=cfg.confidence, name=view.name)
            auroc_samples[(det, view.name)] = res["auroc"].samples
            row = {"detector": det, "ood_set": view.name, "synthetic": view.synthetic,
                   "n_id": int(id_scores.size), "n_ood": int(ood_scores.size)}
            for metric in OOD_METRICS:
                r = res[metric]
                row.update({metric: r.value, f"{metric}_ci_low": r.ci_low, f"{metric}_ci_high": r.ci_high})
                metrics[f"{metric}[{det},{view.name}]"] = Metric(
                    value=r.value, ci_low=r.ci_low, ci_high=r.ci_high, n=int(id_scores.size + ood_scores.size),
                    method=f"bootstrap percentile, {int(cfg.confidence * 100)}% (ID and OOD resampled separately, "
                           f"B={cfg.n_bootstrap}, seed={cfg.seed})",
                    config={"positive": "OOD", "score": "higher = more in-distribution", "detector": det})
            rows.append(row)
            fpr, tpr, _ = roc_curve(np.r_[np.zeros(id_scores.size), np.ones(ood_scores.size)],
                                    -np.r_[id_scores, ood_scores])
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
            series.append({"label": view.name, "x": fpr[keep].tolist(), "y": tpr[keep].tolist()})
        plots[f"roc_{det}"] = {"kind": "line", "title": f"ROC — {det} (OOD positive)", "series": series,
                               "xlabel": "false positive rate (ID flagged)",
                               "ylabel": "true positive rate (OOD caught)"}

    # Selective prediction on the ID set: abstain on the least confident inputs.
    confidence = LOGIT_SCORES["msp"](clean.logits)
    correct = clean.logits.argmax(axis=1) == ctx.labels
    curve = risk_coverage_curve(confidence, correct)
    aurc_samples = np.concatenate([aurc_weighted(confidence, correct, w) for w in ctx.resample_weights()])
    metrics["aurc"] = make_metric(aurc(confidence, correct), aurc_samples, n=n, config=cfg, metric_config={
        "definition": "area under the risk-coverage curve of max-softmax confidence (Geifman & El-Yaniv 2017)",
        "lower_is_better": True})
    for cov in (0.9, 0.8):
        achieved, risk = selective_risk_at_coverage(confidence, correct, cov)
        findings.append(Finding(severity="info", message=(
            f"abstaining on the least-confident {1 - achieved:.0%} of inputs raises accuracy from "
            f"{correct.mean():.3f} to {1 - risk:.3f}"), evidence="ood.plots.risk_coverage"))
    keep = np.unique(np.linspace(0, len(curve.coverage) - 1, min(len(curve.coverage), 200)).astype(int))
    plots["risk_coverage"] = {"kind": "line", "title": "Risk vs coverage (max-softmax confidence)",
                              "series": [{"label": "selective risk", "x": np.asarray(curve.coverage)[keep].tolist(),
                                          "y": np.asarray(curve.risk)[keep].tolist()}],
                              "xlabel": "coverage", "ylabel": "risk (error among accepted)"}
    best = max(rows, key=lambda r: r["auroc"]) if rows else None
    if best is not None:
        findings.append(Finding(severity="info", message=(
            f"best detector: {best['detector']} on {best['ood_set']} (AUROC {best['auroc']:.3f}, "
            f"FPR@95TPR {best['fpr_at_95_tpr']:.3f})"), evidence="ood.tables.detectors"))
    for _name, view in views:  # is the best detector on each set really better than the MSP baseline?
        by_set = [r for r in rows if r["ood_set"] == view.name]
        top = max(by_set, key=lambda r: r["auroc"], default=None)
        msp_row = next((r for r in by_set if r["detector"] == "msp"), None)
        if top is None or msp_row is None or top["detector"] == "msp" or cfg.n_bootstrap == 0:
            continue
        delta = top["auroc"] - msp_row["auroc"]
        lo, hi = percentile_ci(auroc_samples[(top["detector"], view.name)] - auroc_samples[("msp", view.name)],
                               cfg.confidence)
        verdict = "better than" if lo > 0 else "not distinguishable from"
        findings.append(Finding(severity="info", message=(
            f"{view.name}: {top['detector']} is {verdict} the MSP baseline (AUROC {delta:+.3f}, paired "
            f"{int(cfg.confidence * 100)}% CI {lo:+.3f} to {hi:+.3f})"), evidence="ood.tables.detectors"))
    causes = [f for _name, view in views
              for f in _verdict_findings(view.name, [r for r in rows if r["ood_set"] == view.name])]
    findings[:0] = causes
    feature_fit = ("no features: feature detectors not run" if clean.features is None else "--train-data"
                   if train_out is not None and train_out.features is not None else "half of the evaluation set")
    per_set = _per_set_tables(rows)
    return Section(
        name="ood", title="Out-of-distribution detection", verdict="warn" if causes else "pass",
        summary=_summary(len(detectors), len(views), rows, best),
        metrics=metrics, findings=findings, tables={**per_set, "detectors": rows}, plots=plots,
        lead_tables=list(per_set),
        config={"positive_class": "OOD (OpenOOD convention)", "fpr_at_95_tpr": "fraction of OOD accepted when 95% "
                "of ID is accepted", "feature_fit": feature_fit, "warn_if_msp_auroc_below": WARN_MSP_AUROC,
                "warn_if_more_confident_on_ood": (
                    f"a confidence detector's ({', '.join(CONFIDENCE_DETECTORS)}) AUROC is below chance: the upper "
                    f"end of its interval below 0.5, or without an interval the AUROC below {INVERTED_AUROC_POINT}"),
                "odin": odin_settings or None, "key_metrics": ["aurc"]})


def _summary(n_detectors: int, n_sets: int, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """One line: how much ran, the MSP baseline's AUROC range over the sets, and the best detector."""
    text = f"{n_detectors} detectors x {n_sets} OOD set(s)"
    msp = sorted((r for r in rows if r["detector"] == "msp"), key=lambda r: r["auroc"])
    if len(msp) == 1:
        text += f"; MSP baseline AUROC {msp[0]['auroc']:.3f}"
    elif msp:
        text += (f"; MSP baseline AUROC from {msp[0]['auroc']:.3f} ({msp[0]['ood_set']}) to {msp[-1]['auroc']:.3f} "
                 f"({msp[-1]['ood_set']})")
    if best is not None:
        text += f"; best detector {best['detector']} (AUROC {best['auroc']:.3f} on {best['ood_set']})"
    return text + "."


class OODConfig(CheckConfig):
    ood: list[str] = Field(default_factory=list, description="OOD sets: data specs, or 'synthetic' for built-in "
                           "noise/blob images.")


def last_layer(model: Any, clean: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's final affine layer (for ViM), kept only if it reproduces the cached logits from the
    cached features (so a misread graph cannot silently produce a wrong detector)."""
    layer = model.last_layer()
    if layer is None or clean.features is None or layer[0].shape != (clean.logits.shape[1], clean.features.shape[1]):
        return None
    k = min(64, len(clean.logits))
    rebuilt = clean.features[:k].astype(np.float64) @ layer[0].T + layer[1]
    scale = max(1.0, float(np.abs(clean.logits[:k]).max(initial=0.0)))
    return layer if np.abs(rebuilt - clean.logits[:k]).max(initial=0.0) <= 1e-3 * scale else None


class OODCheck(Check):
    """OOD detection (logit and feature detectors, ViM, ODIN) on each ``--ood`` set, and selective prediction."""

    name = "ood"
    Config = OODConfig
    needs = "--ood"

    def wanted(self, settings: OODConfig) -> bool:
        return bool(settings.ood)

    def prepare(self, plan: PlanContext, settings: OODConfig) -> Preparation:
        """One view per OOD set (``synthetic`` expands to three built-in image sets), shape-checked, and the
        ODIN-perturbed clean and OOD inputs when the model has gradients and the inputs are continuous."""
        from assay.engine.robust_views import logit_module
        from assay.engine.views import CleanView

        views: list[View] = []
        for spec in settings.ood:
            if spec == "synthetic":
                if plan.dataset.modality != "image":
                    raise UserError(f"synthetic OOD sets are images; this data is {plan.dataset.modality}",
                                    where="ood", fix="give an OOD data set of your own (--ood FILE)")
                views += [OODView(name, ds, synthetic=True)
                          for name, ds in synthetic_ood_sets(plan.dataset, seed=plan.config.seed).items()]
                continue
            assert plan.load_inputs is not None
            other = plan.load_inputs(spec, f"OOD set {spec!r}")
            views.append(OODView(other.name, other))
        if (views and plan.model.torch_module() is not None
                and np.issubdtype(np.asarray(plan.dataset.x).dtype, np.floating)):
            module = logit_module(plan.model)
            views += [ODINView(base, module) for base in [CleanView(), *views]]
        return Preparation(views=views, features=True, train_outputs=plan.train is not None,
                           after_clean=lambda clean: ([], {"last_layer": last_layer(plan.model, clean)}))

    def run(self, ctx: CheckContext) -> Section:
        return check_ood(ctx)
