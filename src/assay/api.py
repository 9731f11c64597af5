"""The public facade: one call per thing Assay does, each validating its own parameters.

``assay.evaluate``, ``assay.compare``, ``assay.select``, ``assay.compress`` and ``assay.profile`` delegate to
the library (:mod:`assay.evaluation`, :mod:`assay.compare.run`, :mod:`assay.compress.run`,
:mod:`assay.profiling`); a parameter of the wrong type or out of range is an :class:`~assay.errors.OptionError`
naming the Python parameter (the CLI turns parameter names into its flags in one place).

Models may be objects in memory (a ``torch.nn.Module`` or a loaded Model) and data may be arrays
(``(x, y)``, ``(x,)``, ``x``) or a :class:`~assay.data.dataset.Dataset`, wherever a path is accepted
(:mod:`assay.evaluation.inputs`); ``compress`` alone needs a model file, since it rebuilds its variants from one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assay._validation import validated_call
from assay.checks.base import EvaluateConfig
from assay.checks.registry import DEFAULT_CHECKS
from assay.data.dataset import Dataset
from assay.evaluation import EvaluationRun, evaluation_inputs, run_evaluation, write_evaluation
from assay.evaluation.inputs import (
    InMemoryInputs,
    as_model,
    bind_data_settings,
    call_with_in_memory_inputs,
    check_model_argument,
    data_argument,
)
from assay.evidence.schema import Evidence
from assay.models.base import Model

__all__ = ["CHECKS", "EvaluationRun", "card", "compare", "compress", "evaluate", "evaluation_inputs", "profile",
           "run_evaluation", "select", "write_evaluation"]

#: The checks ``evaluate`` runs by default (every check whose input is given runs too).
CHECKS: tuple[str, ...] = DEFAULT_CHECKS

MODEL_OPTIONS = frozenset({"weights", "outputs", "feature_layer", "feature_output", "threads", "untrained"})
DATA_OPTIONS = frozenset({"label_col", "text_col", "feature_cols", "image_size", "class_names"})


def evaluate(
    model: Model | str | os.PathLike[str] | Any,
    data: Dataset | str | os.PathLike[str] | Any,
    *,
    out: str | os.PathLike[str] | None = None,
    suite: str | None = None,
    checks: Sequence[str] = CHECKS,
    calibration_data: Dataset | str | os.PathLike[str] | Any | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    cache_dir: str | os.PathLike[str] | bool | None = True,
    progress: bool = False,
    force: bool = False,
    backend: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    budget: str | None = None,
    budget_objective: str = "widest",
    **options: Any,
) -> Evidence:
    """Evaluate a classifier on labelled data; return the evidence (and write the bundle to ``out``).

    ``model`` is a path (``.onnx``, ``.pt``, ``.pt2``, ``pkg.mod:factory`` with ``weights=``), a loaded
    :class:`~assay.models.Model`, or a ``torch.nn.Module``: Assay evaluates an eval-mode copy of the module on
    the CPU, so the module itself keeps its training mode, device and weights (no file needed; it cannot run
    on the ``processes`` backend). ``data`` is a spec (``digits``, ``.npz``, image folder, ``.csv``/``.parquet``),
    an :class:`assay.Dataset` (``assay.Dataset.from_arrays(x, y, class_names=..., meta=...)``) or arrays
    ``(x, y)`` (numpy or torch; images NCHW in [0, 1]); ``calibration_data`` likewise, and ``ood=[...]``,
    ``unlabeled=[...]`` (``(x,)`` or ``x``: no labels needed) and ``train_data=(x, y)`` also take arrays.
    Model options (``weights``, ``untrained``, ``outputs``, ``feature_layer``,
    ``feature_output``, ``threads``) and data options (``label_col``, ``text_col``, ``feature_cols``,
    ``image_size``, ``class_names`` — fixes the label order of folders/tables) are keywords, and so is every
    check's setting (``corruptions=["standard"]``, ``severities``, ``adversarial="quick"``, ``eps=[8/255]``,
    ``norm``, ``baseline``, ``ood``, ``slice_by``, ...; see each check's ``Config`` in :mod:`assay.checks`).
    ``suite`` ("quick", "standard", "full") fills in corruptions and attacks the caller did not choose.
    ``cache_dir=True`` uses ``~/.cache/assay``; None/False disables. ``out`` replaces only an Assay evaluation
    bundle (``force=True``: any Assay output), never a folder holding other files, and is checked before the
    evaluation starts. ``backend`` runs the forward passes, corruptions and attacks in this process (``local``),
    in worker processes (``processes``) or on Ray actors (``ray``, with ``ray_address`` and ``num_workers``;
    ``pip install 'assay[ray]'``); the evidence is the same. ``budget`` (``"5m"``, ``"20000passes"``, ``"10%"``)
    samples the corruption, attack and OOD views within that budget instead of running them in full: their
    checks are replaced by a ``budget`` section of estimates with finite-population intervals
    (:mod:`assay.checks.budget`; ``budget_objective``: ``"widest"`` or ``"total"``); Ctrl-C then stops the
    sampling and the evidence so far is returned.
    """
    from assay.engine.planning import apply_suite

    options = apply_suite(suite, dict(options))
    model_options = {k: v for k, v in options.items() if k in MODEL_OPTIONS and v is not None}
    data_options = {k: v for k, v in options.items() if k in DATA_OPTIONS and v is not None}
    check_model_argument(model)
    with InMemoryInputs() as memory:  # names the in-memory OOD/unlabeled/training sets until the run is done
        data = data_argument(data, "data", data_options)
        calibration_data = data_argument(calibration_data, "calibration_data", data_options)
        settings = bind_data_settings(memory, {k: v for k, v in options.items()
                                               if k not in MODEL_OPTIONS | DATA_OPTIONS}, data_options)
        config = EvaluateConfig(seed=seed, n_bootstrap=n_bootstrap, confidence=confidence, budget=budget,
                                budget_objective=budget_objective, **settings)
        inputs: list[Path] = []
        if out is not None:  # a bad output path fails before the evaluation, not after it
            from assay.evidence.output import check_output

            inputs = evaluation_inputs(model, data, calibration_data=calibration_data, config=config,
                                       cache_dir=cache_dir, model_options=model_options)
            check_output(out, "evaluate", inputs=inputs, force=force)
        run = run_evaluation(model, data, checks=checks, calibration_data=calibration_data, config=config,
                             cache_dir=cache_dir, progress=progress, model_options=model_options,
                             data_options=data_options, backend=backend, ray_address=ray_address,
                             num_workers=num_workers)
    if out is not None:
        write_evaluation(run, out, inputs=inputs, force=force)
    return run.evidence


def compare(baseline: Any, candidate: Any, **options: Any) -> Any:
    """Regression gate of ``candidate`` against ``baseline`` (bundles, or models evaluated on ``data=``: files,
    loaded Models or ``torch.nn.Module`` objects; ``data`` may be arrays); returns a ``Comparison``
    (``.verdict``, ``.exit_code``, ``.rules``). Options: see :func:`assay.compare.run.compare`."""
    from assay.compare.run import compare as run

    return call_with_in_memory_inputs(run, baseline, candidate, **options)


def select(models: list[Any], data: Any, **options: Any) -> Any:
    """Leaderboard and pick among ``models`` (files, bundles, loaded Models or ``torch.nn.Module`` objects) on
    ``data`` (a spec, a Dataset or arrays) under ``constraints=[...]``; returns a ``Selection`` (``.pick``,
    ``.reasons``, ``.rows``). Options: see :func:`assay.compare.run.select`."""
    from assay.compare.run import select as run

    return call_with_in_memory_inputs(run, models, data, **options)


def compress(model: Any, data: Any, **options: Any) -> Any:
    """Compressed variants with a measured speed-up and a damage audit; returns a ``CompressionResult``
    (``.recommended``, ``.reasons``, ``.rows``). ``model`` is a file or factory spec (variants are rebuilt from
    it); ``data``, ``calibration`` and ``train_data`` may be arrays. Options: see
    :func:`assay.compress.run.compress`."""
    from assay.compress.run import compress as run

    return call_with_in_memory_inputs(run, model, data, **options)


def profile(model: Any, sample: Any, **options: Any) -> Any:
    """What ``model`` costs on this machine on inputs like ``sample`` (latency with CIs, throughput, memory,
    FLOPs, energy, cost); returns an ``EfficiencyProfile``. ``model`` is a loaded Model, a ``torch.nn.Module``
    or a path/factory spec (then ``weights=``/``untrained=``/``threads=`` load it); ``sample`` an array or
    tensor of inputs. Options: see ``profile_model``."""
    from assay.data.dataset import plain_array
    from assay.errors import DataError
    from assay.profiling.profile import profile_model

    check_model_argument(model)
    inputs = plain_array(sample, "sample")
    if inputs.ndim == 0 or len(inputs) == 0:
        raise DataError(f"the sample holds no inputs (shape {inputs.shape})", where="sample",
                        fix="give a batch of model inputs, e.g. the first 32 rows of the evaluation data")
    if not isinstance(model, Model):
        load: dict[str, Any] = {k: options.pop(k) for k in ("weights", "untrained") if k in options}
        model = as_model(model, inputs[:2], None, {**load, "threads": options.get("threads")})
    return validated_call(profile_model, model, inputs, **options)


def card(sources: Sequence[str | os.PathLike[str]], *, facts: Any = None, out: str | os.PathLike[str] | None = None,
         registry: str | None = None, artifacts: str | os.PathLike[str] | None = None, force: bool = False,
         datasheet: Any = None, audit: str | os.PathLike[str] | None = None,
         scan: str | os.PathLike[str] | None = None) -> Any:
    """Model card of the model evaluated in ``sources``; returns a ``ModelCard`` (``.markdown``, ``.html``,
    ``.crosswalk``, ``.todos``, ``.findings``) and writes MODEL_CARD.md, model_card.html and crosswalk.json to
    ``out`` when given (an Assay output folder of kind ``card``).

    ``sources`` are evaluation bundle folders or ``NAME@VERSION`` / ``NAME@ALIAS`` of registered models (a
    source that is not an existing path), resolved in ``registry`` (a database URL; default ASSAY_REGISTRY or
    .assay/registry.db) whose history becomes the card's change log. ``facts``: a card.yaml path or a
    ``CardFacts`` (intended use, licence, contact, ...; missing ones are marked TODO). ``datasheet``: a
    datasheet.yaml path or a ``Datasheet`` (rendered as DATASHEET.md next to the card, which links it);
    ``audit``: a folder ``assay audit`` wrote (linked, quoted, and filling the crosswalk's data entries); ``scan``:
    a folder ``assay scan MODEL --out`` wrote (quoted under Security and privacy, filling MEASURE 2.7)."""
    import re

    from assay.evidence.output import check_output, input_paths
    from assay.govern import CARD_KIND, CardFacts, build_card, load_card_facts, write_card
    from assay.govern.datasheet import Datasheet, load_datasheet

    card_facts = load_card_facts(facts) if isinstance(facts, (str, os.PathLike)) else facts
    sheet = load_datasheet(datasheet) if isinstance(datasheet, (str, os.PathLike)) else datasheet
    if sheet is not None and not isinstance(sheet, Datasheet):
        from assay.errors import OptionError

        raise OptionError(f"datasheet must be a datasheet.yaml path or a Datasheet, got {type(sheet).__name__}",
                          where="datasheet", fix="pass the path of datasheet.yaml")
    if card_facts is not None and not isinstance(card_facts, CardFacts):
        from assay.errors import OptionError

        raise OptionError(f"facts must be a card.yaml path or CardFacts, got {type(card_facts).__name__}",
                          where="facts", fix="pass the path of card.yaml")
    items = [os.fspath(s) for s in ([sources] if isinstance(sources, (str, os.PathLike)) else sources)]
    ref = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}@[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
    refs = {s for s in items if not os.path.lexists(s) and ref.fullmatch(s)}
    local = [s for s in items if s not in refs]
    if out is not None:  # a bad output path fails before any work
        check_output(out, CARD_KIND, inputs=input_paths(local, card_facts.source if card_facts else None,
                                                        sheet.source_file if sheet else None, audit, scan),
                     force=force)
    paths: list[Any] = list(items)
    labels, history, name = None, None, None
    if refs:
        from assay.errors import RegistryError
        from assay.registry import open_registry
        from assay.registry.db import resolve_url

        _, file = resolve_url(registry)
        if file is not None and not file.exists():  # a card only reads: it never creates an empty registry
            raise RegistryError(f"no registry at {file} to resolve {', '.join(sorted(refs))}", where=str(file),
                                fix="give --registry (or ASSAY_REGISTRY), or register the model first: `assay "
                                    "registry register NAME MODEL --evidence BUNDLE`; a bundle folder needs no "
                                    "registry")
        reg = open_registry(registry, artifacts=artifacts)
        try:
            versions = {s: reg.resolve(s) for s in refs}
            paths = [reg.evidence_dir(versions[s]) if s in versions else s for s in items]
            labels = [versions[s].ref if s in versions else f"B{i}" for i, s in enumerate(items, start=1)]
            names = list(dict.fromkeys(v.name for v in versions.values()))
            history = [dataclasses.asdict(m) for n in names for m in reg.history(n)]
            name = names[0] if len(names) == 1 else None
        finally:
            reg.close()
    built = build_card(paths, card_facts, history, labels=labels, name=name, datasheet=sheet, audit=audit,
                       scan=scan)
    if out is not None:
        write_card(built, out, force=force)
    return built
