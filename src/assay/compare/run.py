"""``assay compare`` as one library call: resolve each side (an evidence bundle, or a model evaluated on
``data`` through the shared cache), run the gate, write comparison.json / .md / .html and junit.xml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from assay.compare.gate import Comparison, Side, compare_sides, side_from_bundle
from assay.compare.policy import Policy, load_policy
from assay.data.dataset import Dataset
from assay.errors import OptionError, UserError
from assay.progress import track

__all__ = ["compare", "evaluate_side", "flip_thumbnails", "is_bundle", "resolve_side", "select", "write_comparison"]

THUMBNAILS_PER_KIND = 12


def is_bundle(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / "evidence.json").is_file()) or (p.is_file() and p.name == "evidence.json")


def evaluate_side(model: str, dataset: Dataset, name: str, *, seed: int, n_bootstrap: int, suite: str | None,
                  cache_dir: Any, progress: bool, model_options: dict[str, Any] | None = None,
                  evaluate_options: dict[str, Any] | None = None, profile: bool = False) -> tuple[Side, Any]:
    """Evaluate a model file on ``dataset`` (through the shared output cache) into an in-memory side;
    ``profile`` adds the efficiency check (latency, size, FLOPs) so cost rules and constraints apply."""
    from assay.checks.base import EvaluateConfig
    from assay.checks.registry import DEFAULT_CHECKS as CHECKS
    from assay.engine.planning import apply_suite
    from assay.evaluation import run_evaluation

    config = EvaluateConfig(seed=seed, n_bootstrap=n_bootstrap, **apply_suite(suite, dict(evaluate_options or {})))
    checks = [*CHECKS, "efficiency"] if profile else list(CHECKS)
    run = run_evaluation(model, dataset, checks=checks, config=config, cache_dir=cache_dir, progress=progress,
                         model_options=model_options or {})
    return Side(name=name, evidence=run.evidence, predictions=run.predictions(), path=str(model)), run


def resolve_side(spec: str | os.PathLike[str], name: str, dataset: Dataset | None,
                 **evaluate: Any) -> tuple[Side, Any]:
    """One model to compare: an evidence bundle (read; run None) or a model file evaluated on ``dataset``
    through the shared cache (``evaluate``: :func:`evaluate_side`'s options; returns its run)."""
    if is_bundle(spec):
        return side_from_bundle(Path(spec).parent if Path(spec).is_file() else spec, name), None
    if Path(spec).is_dir():
        raise UserError(f"{spec} is a directory without evidence.json", where=f"{name} {spec}",
                        fix="give an evidence bundle written by `assay evaluate`, or a model file with --data")
    if dataset is None:
        raise UserError(f"the {name} {spec!r} is not an evidence bundle, so it must be evaluated, "
                        "and no --data was given", where=f"{name} {spec}",
                        fix="pass --data DATA to evaluate model files, or give evidence bundle directories")
    return evaluate_side(str(spec), dataset, name, **evaluate)


def flip_thumbnails(c: Comparison, dataset: Dataset | None) -> dict[str, list[dict[str, Any]]]:
    """Thumbnail rows of the first flipped examples (images only; the data must be the compared data)."""
    from assay.report.thumbnails import png_thumbnail

    if dataset is None or dataset.modality != "image" or dataset.fingerprint != c.data_fingerprint:
        return {}
    index = {str(i): k for k, i in enumerate(np.asarray(dataset.ids).astype(str))}
    rows: dict[str, list[dict[str, Any]]] = {}
    for kind, flips in c.flips.items():
        picked = [f for f in flips[:THUMBNAILS_PER_KIND] if f["id"] in index]
        if picked:
            rows[kind] = [{"label": f"{kind} flips",
                           "images": [png_thumbnail(dataset.x[index[f['id']]]) for f in picked],
                           "captions": [f"{f['id']}: {f['label']} / {f['baseline']}→{f['candidate']}" for f in picked]}]
    return rows


def write_comparison(c: Comparison, out: str | os.PathLike[str], candidate_evidence: Any,
                     thumbnails: dict[str, list[dict[str, Any]]] | None = None,
                     runs: dict[str, Any] | None = None, *, inputs: list[Path] | None = None,
                     force: bool = False) -> Path:
    """comparison.json, comparison.md, comparison.html and junit.xml into ``out`` (atomically; it replaces only
    an Assay comparison, and is never one of ``inputs``), plus the evidence bundles of sides that were
    evaluated here (``runs``: name -> EvaluationRun)."""
    from assay.evaluation import write_evaluation
    from assay.evidence.bundle import atomic_directory
    from assay.report.comparison import (
        render_comparison_html,
        render_junit,
        render_markdown,
    )

    with atomic_directory(out, "compare", inputs=inputs or [], force=force) as tmp:
        (tmp / "comparison.json").write_text(c.model_dump_json(indent=2), encoding="utf-8")
        (tmp / "comparison.md").write_text(render_markdown(c), encoding="utf-8")
        (tmp / "junit.xml").write_text(render_junit(c), encoding="utf-8")
        (tmp / "comparison.html").write_text(render_comparison_html(c, candidate_evidence, thumbnails),
                                             encoding="utf-8")
        for name, run in (runs or {}).items():
            write_evaluation(run, tmp / name)
    return Path(out)


def _check_resamples(n_bootstrap: int) -> None:
    """Paired intervals need enough resamples to mean anything (the evaluation's own lower bound)."""
    if n_bootstrap < 100:
        raise OptionError(f"n_bootstrap {n_bootstrap} is too small", where="n_bootstrap",
                          fix="use 100 or more (default 1000)")


def _output_inputs(kind: str, out: Any, force: bool, cache_dir: Any, *specs: Any) -> list[Path]:
    """The on-disk inputs among ``specs`` (model/bundle paths, data, policy, ``model_options`` weights) and
    the cache; checks ``out`` against them and its own rules before any work (None: nothing is written)."""
    from assay.evidence.output import check_output, input_paths

    flat = [spec.get("weights") if isinstance(spec, dict) else spec.source if isinstance(spec, Dataset) else spec
            for spec in specs]
    inputs = input_paths(*flat, cache_dir=cache_dir)
    if out is not None:
        check_output(out, kind, inputs=inputs, force=force)
    return inputs


def compare(
    baseline: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    *,
    data: Dataset | str | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = "assay-compare",
    n_bootstrap: int = 1000,
    seed: int = 0,
    suite: str | None = None,
    cache_dir: Any = True,
    progress: bool = False,
    model_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    evaluate_options: dict[str, Any] | None = None,
    profile: bool = False,
    force: bool = False,
) -> Comparison:
    """Compare a candidate with a baseline: each an evidence bundle directory, or a model file evaluated on
    ``data``. Returns the :class:`Comparison` (``.verdict``, ``.exit_code``) and writes ``out`` unless None
    (checked first: it replaces only an Assay comparison, ``force``: any Assay output)."""
    from assay.evaluation import as_dataset

    _check_resamples(n_bootstrap)
    inputs = _output_inputs("compare", out, force, cache_dir, baseline, candidate, data, policy, model_options)
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    dataset = as_dataset(data, data_options or {}) if data is not None else None
    sides: dict[str, Side] = {}
    runs: dict[str, Any] = {}
    pair = (("baseline", baseline), ("candidate", candidate))
    for name, spec in track(pair, "evaluating models", unit="models",
                            enabled=progress and not all(is_bundle(s) for _, s in pair), label=lambda m: m[0]):
        sides[name], run = resolve_side(spec, name, dataset, seed=seed, n_bootstrap=n_bootstrap, suite=suite,
                                        cache_dir=cache_dir, progress=progress, model_options=model_options,
                                        evaluate_options=evaluate_options, profile=profile)
        if run is not None:
            runs[name] = run
    result = compare_sides(sides["baseline"], sides["candidate"], pol, n_bootstrap=n_bootstrap, seed=seed)
    if out is not None:
        write_comparison(result, out, sides["candidate"].evidence, flip_thumbnails(result, dataset), runs,
                         inputs=inputs, force=force)
    return result


def select(
    models: list[str],
    data: Dataset | str,
    *,
    constraints: list[str] | None = None,
    objective: str = "accuracy",
    out: str | os.PathLike[str] | None = "assay-select",
    n_bootstrap: int = 1000,
    seed: int = 0,
    suite: str | None = None,
    cache_dir: Any = True,
    progress: bool = False,
    model_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    evaluate_options: dict[str, Any] | None = None,
    profile: bool = False,
    force: bool = False,
) -> Any:
    """Evaluate each model (or read each bundle) on ``data``, build the leaderboard and pick under
    ``constraints`` (``"latency_p95_ms<=5"``...). Writes selection.json/.md/.html into ``out`` unless None
    (checked first: it replaces only an Assay selection, ``force``: any Assay output)."""
    from assay.compare.select import parse_constraint, select_from
    from assay.evaluation import as_dataset

    _check_resamples(n_bootstrap)
    inputs = _output_inputs("select", out, force, cache_dir, models, data, model_options)

    parsed = [parse_constraint(c) for c in constraints or []]
    # Latency is only known when measured: profile model files when asked, or when a constraint or the
    # objective needs it.
    profile = profile or objective == "latency_p95_ms" or any(c.metric == "latency_p95_ms" for c in parsed)
    if len(models) < 2:
        raise UserError(f"select needs at least two models, got {len(models)}", where="MODELS",
                        fix="list two or more model files or evidence bundles")
    names = [Path(m).name or str(m) for m in models]
    if len(set(names)) != len(names):
        names = [str(m) for m in models]
    if len(set(names)) != len(names):
        raise UserError("the same model is listed twice", where="MODELS", fix="list each model once")
    dataset = as_dataset(data, data_options or {})
    sides = []
    for name, spec in track(list(zip(names, models, strict=True)), "evaluating models", unit="models",
                            enabled=progress and not all(map(is_bundle, models)), label=lambda m: m[0]):
        side, evaluated = resolve_side(spec, name, dataset, seed=seed, n_bootstrap=n_bootstrap, suite=suite,
                                  cache_dir=cache_dir, progress=progress, model_options=model_options,
                                  evaluate_options=evaluate_options, profile=profile)
        if evaluated is None and side.evidence.data.fingerprint != dataset.fingerprint:
            raise UserError(f"the bundle {spec} was evaluated on other data than --data", where=str(spec),
                            fix="evaluate every model on the same --data (or pass model files)")
        sides.append(side)
    selection = select_from(sides, parsed, objective, n_bootstrap=n_bootstrap, seed=seed)
    if out is not None:
        from assay.evidence.bundle import atomic_directory
        from assay.report.comparison import (
            render_selection_html,
            render_selection_markdown,
        )

        with atomic_directory(out, "select", inputs=inputs, force=force) as tmp:
            import json

            (tmp / "selection.json").write_text(json.dumps(selection.as_dict(), indent=2, default=float),
                                                encoding="utf-8")
            (tmp / "selection.md").write_text(render_selection_markdown(selection), encoding="utf-8")
            (tmp / "selection.html").write_text(render_selection_html(selection, {s.name: s.evidence for s in sides}),
                                                encoding="utf-8")
    return selection
