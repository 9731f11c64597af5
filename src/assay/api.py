"""The library entry point: ``assay.evaluate(model, data) -> Evidence``.

Everything the CLI's ``evaluate`` does is this one call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from assay.checks.base import CheckContext, EvaluateConfig
from assay.data.dataset import Dataset
from assay.engine import planning
from assay.engine.backends import Backend, get_backend
from assay.engine.cache import OutputCache, default_cache_dir
from assay.engine.robust_views import AttackSpec, load_precomputed_corruptions
from assay.engine.run import Outputs, run_views
from assay.engine.views import CleanView
from assay.environment import environment_info
from assay.errors import DataError, UserError
from assay.evidence.bundle import read_evidence
from assay.evidence.schema import DataInfo, Evidence, Finding, Section
from assay.models.base import Model

__all__ = ["CHECKS", "EvaluationRun", "evaluate", "evaluation_inputs", "run_evaluation", "write_evaluation"]


#: check name -> (module, function); a check's module is imported only when the check runs (the modules
#: pull in scipy, torch and friends that a plain performance/calibration run does not need).
_CHECK_FUNCTIONS: dict[str, tuple[str, str]] = {
    "performance": ("assay.checks.performance", "check_performance"),
    "calibration": ("assay.checks.calibration", "check_calibration"),
    "efficiency": ("assay.checks.efficiency", "check_efficiency"),
    "corruption": ("assay.checks.corruption", "check_corruption"),
    "adversarial": ("assay.checks.adversarial", "check_adversarial"),
    "label_free": ("assay.checks.label_free_check", "check_label_free"),
    "ood": ("assay.checks.ood", "check_ood"),
    "slices": ("assay.checks.slices", "check_slices"),
    "fairness": ("assay.checks.slices", "check_fairness"),
}


def _check_function(name: str) -> Callable[[CheckContext], Section]:
    import importlib

    module, function = _CHECK_FUNCTIONS[name]
    return getattr(importlib.import_module(module), function)


CHECKS: tuple[str, ...] = ("performance", "calibration")


class EvaluationRun:
    """Everything an evaluation produced: the evidence, the cached outputs and the dataset."""

    def __init__(self, evidence: Evidence, outputs: Outputs, dataset: Dataset) -> None:
        self.evidence = evidence
        self.outputs = outputs
        self.dataset = dataset

    def reference(self) -> dict[str, np.ndarray]:
        """What monitoring compares live traffic with (``reference.npz``): validation confidences, ATC
        thresholds, class and prediction frequencies, feature means and standard deviations."""
        from assay.checks.label_free import ATCEstimator, max_confidence

        logits = self.outputs.clean.logits
        arrays: dict[str, np.ndarray] = {"val_confidence": max_confidence(logits).astype(np.float32),
                                         "prediction_frequency": np.bincount(logits.argmax(1), minlength=logits.shape[1]) / len(logits)}
        if self.dataset.y is not None:
            arrays["class_frequency"] = np.bincount(self.dataset.y, minlength=logits.shape[1]) / len(logits)
            arrays["atc_threshold_maxconf"] = np.array(ATCEstimator("maxconf").fit(logits, self.dataset.y).threshold_)
            arrays["atc_threshold_negentropy"] = np.array(
                ATCEstimator("negentropy").fit(logits, self.dataset.y).threshold_)
        clean = self.outputs.clean
        if clean.features is not None:
            arrays["feature_mean"] = clean.features.mean(axis=0)
            arrays["feature_std"] = clean.features.std(axis=0)
        elif clean.feature_mean is not None and clean.feature_std is not None:
            arrays["feature_mean"], arrays["feature_std"] = clean.feature_mean, clean.feature_std
        return arrays

    def predictions(self) -> dict[str, np.ndarray]:
        """Per-sample arrays for ``predictions.npz``: ids, labels, clean logits, and ``slice_<column>``
        group labels of every ``--slice-by``/``--sensitive`` column (so ``compare`` can test per slice)."""
        arrays = {"ids": self.dataset.ids, "logits": self.outputs.clean.logits}
        if self.dataset.y is not None:
            arrays["labels"] = self.dataset.y
        columns = [*self.evidence.config.get("slice_by", []), *self.evidence.config.get("sensitive", [])]
        if columns:
            from assay.checks.slices import slice_labels

            for column in dict.fromkeys(columns):
                arrays[f"slice_{column}"] = slice_labels(self.dataset.meta, column, "--slice-by")
        return arrays


def _as_model(model: Model | str | os.PathLike[str], sample: np.ndarray, class_names: list[str] | None,
              model_options: dict[str, Any]) -> Model:
    if isinstance(model, Model):
        return model
    from assay.models.loader import load_model

    return load_model(str(model), sample=sample, class_names=class_names, **model_options)


def _as_dataset(data: Dataset | str | os.PathLike[str], data_options: dict[str, Any]) -> Dataset:
    if isinstance(data, Dataset):
        return data
    from assay.data.loader import load_data

    return load_data(str(data), **data_options)


def align_classes(model: Model, dataset: Dataset, role: str) -> tuple[Dataset, list[Finding]]:
    """Re-index ``dataset``'s labels to the class order the model file declares (matched by name), or
    refuse when the names disagree; the model's info then carries its own names. Models that declare no
    names take the data's (as given to the loader)."""
    declared = model.info.declared_class_names
    if declared is None:
        return dataset, []
    model.info = model.info.model_copy(update={"class_names": list(declared)})
    names = dataset.class_names
    if names is None or list(names) == list(declared):
        return dataset, []
    if len(set(declared)) == len(declared) and len(set(names)) == len(names) and set(names) <= set(declared):
        moved = sum(1 for i, name in enumerate(names) if declared.index(name) != i)
        return dataset.relabelled(declared), [Finding(severity="info", evidence=f"data:{role}", message=(
            f"the {role}'s class names were matched to the model's by name: {moved} of {len(names)} classes "
            f"have another index in the model's outputs (model order: {_shown(declared)}; data order: "
            f"{_shown(names)})"))]
    missing = [n for n in names if n not in declared]
    raise DataError(
        f"the model declares the classes {_shown(declared)} but the {role} names its classes {_shown(names)}"
        + (f" ({len(missing)} not among the model's, e.g. {missing[:3]})" if missing else " (repeated names)"),
        where=f"{model.info.path} vs {dataset.source}",
        fix="make the names agree: correct the data's class names (NPZ 'class_names', folder names, "
            "--class-names) or the model's metadata, so labels can be matched to outputs by name")


def _shown(names: Sequence[str], limit: int = 12) -> str:
    text = ", ".join(str(n) for n in names[:limit])
    return f"[{text}{', ...' if len(names) > limit else ''}]"


def _check_shapes(model: Model, dataset: Dataset, what: str) -> None:
    expected = model.info.input_shape[1:]
    got = list(dataset.input_shape)
    if dataset.modality == "text" or not expected:
        return
    mismatch = len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got))
    if mismatch:
        shown = tuple("N" if e is None else e for e in expected)
        raise UserError(
            f"the model expects inputs of shape {shown} but the {what} has inputs of shape {tuple(got)}",
            where=f"{model.info.path} vs {dataset.source}",
            fix="evaluate the model on data prepared the way it was trained (size, channels, features)",
        )


def _attack_plan(config: EvaluateConfig, model: Model, dataset: Dataset) -> tuple[list[AttackSpec], list[str]]:
    """Attack specs of the run (validated; [] without --adversarial or --attacks) and notes for the report."""
    notes: list[str] = []
    if config.adversarial is None and not config.attacks:
        return [], notes
    if config.adversarial is None:
        config = config.model_copy(update={"adversarial": "quick"})
    preset = config.adversarial
    if preset == "auto":
        preset = "standard" if model.torch_module() is not None else "blackbox"
    eps = planning.parse_eps(config.eps) if config.eps else [planning.DEFAULT_EPS[config.norm]]
    if preset == "standard" and len(eps) == 1:
        eps = [eps[0] / 4, eps[0] / 2, eps[0]]  # a robust-accuracy-vs-eps curve
    chosen = planning.parse_attacks(config.attacks) if config.attacks else preset
    specs = planning.attack_specs(chosen, eps, config.norm, steps=config.attack_steps,
                                  restarts=config.attack_restarts, queries=config.square_queries, seed=config.seed)
    if dataset.modality != "image":
        raise UserError(f"adversarial evaluation needs image inputs in [0, 1]; this data is {dataset.modality}",
                        where="--adversarial", fix="drop --adversarial, or evaluate corruption robustness instead")
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
            where="--adversarial",
            fix="use --adversarial blackbox (Square attack, queries only), or evaluate the torch model "
                "(TorchScript, torch.export or factory + weights)",
        )
    return specs, notes


def _load_other_inputs(spec: str, model: Model, data_options: dict[str, Any], what: str) -> Dataset:
    """A further input set (OOD, unlabeled) loaded like --data (its own classes, if any) and shape-checked."""
    other = _as_dataset(spec, {k: v for k, v in data_options.items() if k != "class_names"})
    _check_shapes(model, other, what)
    return other


def _last_layer(model: Model, clean: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's final affine layer (for ViM), kept only if it reproduces the cached logits from the
    cached features (so a misread graph cannot silently produce a wrong detector)."""
    layer = model.last_layer()
    if layer is None or clean.features is None or layer[0].shape != (clean.logits.shape[1], clean.features.shape[1]):
        return None
    k = min(64, len(clean.logits))
    rebuilt = clean.features[:k].astype(np.float64) @ layer[0].T + layer[1]
    scale = max(1.0, float(np.abs(clean.logits[:k]).max(initial=0.0)))
    return layer if np.abs(rebuilt - clean.logits[:k]).max(initial=0.0) <= 1e-3 * scale else None


def _unlabeled_views(config: EvaluateConfig, model: Model, data_options: dict[str, Any]) -> list:
    from assay.checks.label_free_check import UnlabeledView

    views = []
    for spec in config.unlabeled:
        target = _load_other_inputs(spec, model, data_options, f"unlabeled set {spec!r}")
        views.append(UnlabeledView(target.name, target))
    return views


def _ood_views(config: EvaluateConfig, model: Model, dataset: Dataset, data_options: dict[str, Any]) -> list:
    """One view per OOD set (``synthetic`` expands to three built-in image sets), shape-checked."""
    from assay.checks.ood import OODView, synthetic_ood_sets

    views = []
    for spec in config.ood:
        if spec == "synthetic":
            if dataset.modality != "image":
                raise UserError(f"synthetic OOD sets are images; this data is {dataset.modality}", where="--ood",
                                fix="give an OOD data set of your own (--ood FILE)")
            views += [OODView(name, ds, synthetic=True)
                      for name, ds in synthetic_ood_sets(dataset, seed=config.seed).items()]
            continue
        ood = _load_other_inputs(spec, model, data_options, f"OOD set {spec!r}")
        views.append(OODView(ood.name, ood))
    return views + _odin_views(model, dataset, views)


def _odin_views(model: Model, dataset: Dataset, ood_views: list) -> list:
    """ODIN-perturbed clean and OOD inputs, when the model has gradients and the inputs are continuous."""
    from assay.checks.ood import ODINView

    if not ood_views or model.torch_module() is None or not np.issubdtype(np.asarray(dataset.x).dtype, np.floating):
        return []
    module = planning.logit_module(model)
    return [ODINView(base, module) for base in [CleanView(), *ood_views]]


def run_evaluation(
    model: Model | str | os.PathLike[str],
    data: Dataset | str | os.PathLike[str],
    *,
    checks: Sequence[str] = CHECKS,
    calibration_data: Dataset | str | os.PathLike[str] | None = None,
    config: EvaluateConfig | None = None,
    cache_dir: str | os.PathLike[str] | None | bool = True,
    backend: str | Backend = "local",
    progress: bool = False,
    model_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
) -> EvaluationRun:
    """Evaluate and return the evidence together with the outputs behind it (see :func:`evaluate`)."""
    config = config or EvaluateConfig()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    unknown = [c for c in checks if c not in _CHECK_FUNCTIONS]
    if unknown:
        raise UserError(f"unknown check(s) {unknown}", where="--checks", fix=f"choose from {sorted(_CHECK_FUNCTIONS)}")
    if cache_dir is True:
        cache_dir = default_cache_dir()
    elif cache_dir is False:
        cache_dir = None
    cache = OutputCache(cache_dir)  # a --cache-dir that is a file fails here, before anything is loaded

    t = time.perf_counter()
    dataset = _as_dataset(data, data_options or {})
    if dataset.y is None:
        raise UserError(
            "the evaluation data has no labels", where=dataset.source,
            fix="give labelled --data (NPZ key 'y', a label column, or class folders); unlabeled data goes to "
                "--unlabeled, which estimates its accuracy from the labelled set",
        )
    model_obj = _as_model(model, dataset.x[:2], dataset.class_names, model_options or {})
    _check_shapes(model_obj, dataset, "data")
    dataset, class_findings = align_classes(model_obj, dataset, "data")
    dataset.validate_labels(model_obj.info.num_classes)
    calibration = _as_dataset(calibration_data, data_options or {}) if calibration_data is not None else None
    if calibration is not None:
        if calibration.y is None:
            raise UserError("the calibration data has no labels", where=calibration.source,
                            fix="temperature scaling is fitted on labelled data")
        _check_shapes(model_obj, calibration, "calibration data")
        calibration, found = align_classes(model_obj, calibration, "calibration data")
        class_findings += found
        calibration.validate_labels(model_obj.info.num_classes)
    timings["load"] = time.perf_counter() - t

    engine_backend = get_backend(backend) if isinstance(backend, str) else backend
    # Validate every robustness option before any forward pass: a typo must not cost an inference run.
    corruption_names = planning.resolve_corruptions(config.corruptions, dataset.modality)
    precomputed = (load_precomputed_corruptions(config.corruption_data, dataset)
                   if config.corruption_data else [])
    attack_specs, attack_notes = _attack_plan(config, model_obj, dataset)
    ood_views = _ood_views(config, model_obj, dataset, data_options or {})
    ood_views += _unlabeled_views(config, model_obj, data_options or {})
    train = None
    if config.train_data:
        train = _as_dataset(config.train_data, data_options or {})
        _check_shapes(model_obj, train, "training data")
        train, found = align_classes(model_obj, train, "training data")
        class_findings += found
        if train.y is None:
            raise UserError("the training data has no labels", where=f"--train-data {config.train_data}",
                            fix="the class-conditional detectors (Mahalanobis) need labels: give labelled training "
                                "data (NPZ with y, a labelled image folder or table)")
    baseline = read_evidence(config.baseline) if config.baseline else None
    checks = list(checks)
    for name, wanted in (("corruption", corruption_names or precomputed), ("adversarial", attack_specs),
                         ("slices", config.slice_by), ("fairness", config.sensitive),
                         ("ood", config.ood), ("label_free", config.unlabeled)):
        if wanted and name not in checks:
            checks.append(name)
        if name in checks and not wanted:
            raise UserError(f"the {name} check has nothing to evaluate", where="--checks",
                            fix="give its input: --corruptions/--suite (corruption), --adversarial (adversarial), "
                                "--slice-by (slices), --sensitive (fairness), --ood (ood), --unlabeled (label_free)")
    t = time.perf_counter()
    features = bool(ood_views)  # only the OOD detectors read (N, D) features; the rest keep mean and std
    outputs = run_views(model_obj, dataset, [CleanView()], cache_dir=cache, batch_size=config.batch_size,
                        backend=engine_backend, progress=progress, keep_features=features)
    views: dict[str, Any] = {}
    facts: dict[str, Any] = {"ood": {"last_layer": _last_layer(model_obj, outputs.clean)}} if ood_views else {}
    if train is not None:
        train_out = run_views(model_obj, train, [CleanView()], cache_dir=cache, batch_size=config.batch_size,
                              backend=engine_backend, progress=progress, keep_features=features)
        facts.setdefault("ood", {}).update(train_features=train_out.clean.features, train_labels=train.y)
    if ood_views:
        outputs.absorb(run_views(model_obj, dataset, ood_views, cache_dir=cache, batch_size=config.batch_size,
                                 backend=engine_backend, progress=progress))
        views.update({v.spec.name: v for v in ood_views})
    if corruption_names or precomputed or attack_specs:
        perturbed = planning.corruption_views(dataset, corruption_names, config.severities, seed=config.seed,
                                              table=config.corruption_table)
        perturbed += [v for v in precomputed if v.severity in config.severities]
        if attack_specs:
            perturbed += planning.adversarial_views(model_obj, dataset, outputs.clean, attack_specs, config.batch_size)
            facts["adversarial"] = planning.adversarial_facts(model_obj, dataset, outputs.clean)
            facts["adversarial"]["notes"] = attack_notes
        outputs.absorb(run_views(model_obj, dataset, perturbed, cache_dir=cache, batch_size=config.batch_size,
                                 backend=engine_backend, progress=progress, keep_features=False))
        views.update({v.spec.name: v for v in perturbed})
    if "efficiency" in checks:
        from assay.compress.latency import profile_model

        sizes = sorted(set(config.latency_batch_sizes))
        path = model_obj.info.path
        facts["efficiency"] = profile_model(
            model_obj, np.asarray(dataset.x[: max(sizes)]), batch_sizes=tuple(sizes), budget_s=config.latency_budget,
            price_per_hour=config.price_per_hour, confidence=config.confidence, seed=config.seed,
            model_path=path if path and os.path.isfile(path) else None)
    calib_pair = None
    if calibration is not None:
        calib_out = run_views(model_obj, calibration, [CleanView()], cache_dir=cache,
                              batch_size=config.batch_size, backend=engine_backend, progress=progress,
                              keep_features=False)
        outputs.forward_batches += calib_out.forward_batches
        outputs.cache_hits += calib_out.cache_hits
        calib_pair = (calib_out.clean.logits, calibration.y)
    timings["inference"] = time.perf_counter() - t
    timings["inference:perturbation"] = outputs.transform_seconds
    timings["inference:forward"] = outputs.forward_seconds

    ctx = CheckContext(outputs=outputs, dataset=dataset, config=config, calibration=calib_pair, views=views,
                       facts=facts, baseline=baseline)
    sections: dict[str, Section] = {}
    for name in checks:
        t = time.perf_counter()
        sections[name] = _check_function(name)(ctx)
        timings[f"check:{name}"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started

    class_names = model_obj.info.class_names
    findings = _input_findings({"data": dataset, "calibration data": calibration, "training data": train})
    findings += class_findings
    if model_obj.info.untrained:
        findings.append(Finding(severity="warning", evidence="model", message=(
            "the model was evaluated untrained: a factory built without weights (--untrained), so every number "
            "describes its random initial weights")))
    findings += [Finding(severity="warning", message=note) for note in getattr(outputs, "notes", [])]
    evidence = Evidence(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=model_obj.info,
        data=DataInfo(
            name=dataset.name, source=dataset.source, modality=dataset.modality, fingerprint=dataset.fingerprint,
            n=len(dataset), num_classes=model_obj.info.num_classes,
            class_names=dataset.class_names or class_names, input_shape=list(dataset.input_shape),
            metadata_columns=dataset.metadata_columns,
        ),
        environment=environment_info(),
        seed=config.seed,
        config={**config.model_dump(), "checks": list(checks), "backend": engine_backend.name,
                "calibration_data": None if calibration is None else calibration.source,
                "cache": {"dir": None if cache_dir is None else str(cache_dir), "hits": outputs.cache_hits,
                          "forward_batches": outputs.forward_batches}},
        timings={k: round(v, 4) for k, v in timings.items()},
        sections=sections,
        findings=findings,
    )
    return EvaluationRun(evidence, outputs, dataset)


def _input_findings(inputs: dict[str, Dataset | None]) -> list[Finding]:
    """Run-level warnings from how each input set was read (``Dataset.notes``: uint8 scaling, values
    outside [0, 1], class order taken from sorted names, image conversions)."""
    findings = []
    for role, data in inputs.items():
        for note in getattr(data, "notes", None) or []:
            message = str(note) if role == "data" else f"{role} ({data.source}): {note}"
            findings.append(Finding(severity=getattr(note, "severity", "warning"), message=message,
                                    evidence=f"data:{role}"))
    return findings


def evaluate(
    model: Model | str | os.PathLike[str],
    data: Dataset | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    suite: str | None = None,
    checks: Sequence[str] = CHECKS,
    calibration_data: Dataset | str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    cache_dir: str | os.PathLike[str] | None | bool = True,
    progress: bool = False,
    force: bool = False,
    **options: Any,
) -> Evidence:
    """Evaluate a classifier on labelled data; return the evidence (and write the bundle to ``out``).

    ``model`` is a :class:`~assay.models.Model` or a path (``.onnx``, ``.pt``, ``.pt2``, ``pkg.mod:factory``
    with ``weights=``); ``data`` a :class:`~assay.data.Dataset` or a spec (``digits``, ``.npz``, image
    folder, ``.csv``/``.parquet``). Model options (``weights``, ``outputs``, ``feature_layer``,
    ``feature_output``, ``threads``) and data options (``label_col``, ``text_col``, ``feature_cols``,
    ``image_size``, ``class_names`` — fixes the label order of folders/tables) are passed as keywords, and
    so are robustness settings (``corruptions=["standard"]``, ``severities``, ``adversarial="quick"``,
    ``eps=[8/255]``, ``norm``, ``baseline``; see :class:`~assay.checks.base.EvaluateConfig`). ``suite``
    ("quick", "standard", "full") fills in corruptions and attacks the caller did not choose. ``cache_dir=True`` uses ``~/.cache/assay``; None/False disables.
    ``out`` replaces only an Assay evaluation bundle (``force=True``: any Assay output), never a folder
    holding other files, and is checked before the evaluation starts.
    """
    options = planning.apply_suite(suite, dict(options))
    model_keys = {"weights", "outputs", "feature_layer", "feature_output", "threads", "untrained"}
    data_keys = {"label_col", "text_col", "feature_cols", "image_size", "class_names"}
    config_keys = set(EvaluateConfig.model_fields) - {"seed", "n_bootstrap", "confidence"}
    unknown = set(options) - model_keys - data_keys - config_keys
    if unknown:
        raise TypeError(f"evaluate() got unexpected keyword(s) {sorted(unknown)}")
    config = EvaluateConfig(seed=seed, n_bootstrap=n_bootstrap, confidence=confidence,
                            **{k: v for k, v in options.items() if k in config_keys})
    model_options = {k: v for k, v in options.items() if k in model_keys and v is not None}
    inputs: list[Path] = []
    if out is not None:  # a bad output path fails before the evaluation, not after it
        from assay.evidence.output import check_output

        inputs = evaluation_inputs(model, data, calibration_data=calibration_data, config=config,
                                   cache_dir=cache_dir, model_options=model_options)
        check_output(out, "evaluate", inputs=inputs, force=force)
    run = run_evaluation(
        model, data, checks=checks, calibration_data=calibration_data, config=config, cache_dir=cache_dir,
        progress=progress,
        model_options=model_options,
        data_options={k: v for k, v in options.items() if k in data_keys and v is not None},
    )
    if out is not None:
        write_evaluation(run, out, inputs=inputs, force=force)
    return run.evidence


def evaluation_inputs(model: Any, data: Any, *, calibration_data: Any = None, config: EvaluateConfig | None = None,
                      cache_dir: Any = None, model_options: dict[str, Any] | None = None) -> list[Path]:
    """Every input of an evaluation that lies on disk (model, weights, data sets, bundles, cache): the
    output folder may not be, contain or lie inside any of them."""
    from assay.evidence.output import input_paths

    config = config or EvaluateConfig()
    specs: list[Any] = [model, data, calibration_data, (model_options or {}).get("weights"), config.train_data,
                        config.ood, config.unlabeled, config.corruption_data, config.baseline]
    specs += [getattr(x, "source", None) for x in (data, calibration_data) if isinstance(x, Dataset)]
    if isinstance(model, Model):
        specs.append(model.info.path)
    return input_paths(*specs, cache_dir=cache_dir)


def write_evaluation(run: EvaluationRun, out: str | os.PathLike[str],
                     extra_files: dict[str, str | os.PathLike[str]] | None = None, *,
                     inputs: Sequence[Path] = (), force: bool = False) -> Path:
    """Write the bundle: evidence.json, predictions.npz, reference.npz, report.html, report.md (plus copies of
    ``extra_files``, e.g. the model). ``out`` may replace only an Assay evaluation bundle (any Assay output
    with ``force``), and may not be, contain or lie inside any of ``inputs`` (see
    :mod:`assay.evidence.output`)."""
    from assay.evidence.bundle import write_bundle
    from assay.report import render_html, render_markdown

    return write_bundle(out, run.evidence, run.predictions(),
                        renderers={"report.html": render_html, "report.md": render_markdown},
                        extra_arrays={"reference.npz": run.reference()}, extra_files=extra_files,
                        inputs=inputs, force=force)
