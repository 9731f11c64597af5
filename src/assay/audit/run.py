"""The data audit end to end: load train (and test), embed them, find duplicates and test->train leaks,
label issues and integrity problems, and assemble an :class:`~assay.evidence.schema.Evidence` plus a table of
flagged items; :func:`write_audit` writes the bundle (evidence.json, flagged.csv, report.html, report.md, and
DATASHEET.md when a datasheet was given).

The finders live beside this module (``duplicates``, ``leakage``, ``embeddings``: exact hashes, perceptual
hashes, 13-gram MinHash and ANN search; ``labels``: cleanlab on out-of-sample probabilities; ``integrity``).
This module only orders the work and turns their results into sections:

* ``duplicates``: within-split exact and near duplicates (share of redundant items, exact CI);
* ``leakage``: test items with a train duplicate (share with a Clopper-Pearson CI) and, when a model or
  test probabilities and test labels are given, accuracy on leaked vs clean test items with CIs: the
  inflation leakage causes (Barz & Denzler's ciFAIR);
* ``labels``: cleanlab label issues and Datalab issue types;
* ``integrity``: unreadable files, shapes, columns, class balance, train/test shift, PII;
* ``datasheet`` (when given) and ``examples`` (thumbnails of flagged pairs, or text snippets).

Bad input is reported, not fatal, where the rest can still be audited: an image folder's unreadable files and
a table's rows with missing values are left out of the other checks and listed by the integrity section. Train and
test of another modality or input shape are a DataError naming both.

Embeddings come from the model's features when a model is given (the input of its last linear layer),
else from a model-free embedding. Predicted probabilities for label issues come from ``pred_probs`` when
given (they must be out-of-sample), else from k-fold cross-validation of a linear probe on the embeddings.

Datasheets are read by :mod:`assay.govern.datasheet` (the same layer: :func:`datasheet_input`); ``run_audit``
takes a ``datasheet.yaml`` path or a :class:`DatasheetInput`.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.data.dataset import Dataset
from assay.environment import environment_info
from assay.errors import DataError, OptionError
from assay.evidence.schema import DataInfo, Evidence, Finding, Metric, ModelInfo, Section, Severity, Verdict
from assay.progress import scope as progress_scope
from assay.progress import stage

if TYPE_CHECKING:
    import pandas as pd

    from assay.models.base import Model

__all__ = [
    "FLAGGED_COLUMNS",
    "AuditRun",
    "AuditSettings",
    "DatasheetInput",
    "audit_inputs",
    "check_compatible",
    "flagged_summary",
    "read_pred_probs",
    "run_audit",
    "write_audit",
]

#: Columns of flagged.csv, one row per flagged item or pair.
FLAGGED_COLUMNS = ["kind", "split", "index", "id", "partner_split", "partner_index", "partner_id", "score", "reason"]
_SNIPPET_CHARS = 160


@dataclass(frozen=True)
class AuditSettings:
    """How the audit runs. ``max_leaked_share``: a leaked share of the test set at or above this fails the
    leakage section (ciFAIR found 3.3 % of CIFAR-10's test set duplicated in training); any leak warns.
    ``max_label_issue_share``: above it the labels section warns. ``folds``: k of the probe's k-fold
    out-of-sample probabilities. ``examples``: flagged pairs shown as thumbnails or snippets per kind.
    ``backend`` (``local``, ``processes``, ``ray``), ``ray_address``, ``num_workers``: where the model's forward
    passes run (as for ``evaluate``)."""

    seed: int = 0
    confidence: float = 0.95
    folds: int = 5
    max_leaked_share: float = 0.01
    max_label_issue_share: float = 0.05
    examples: int = 12
    batch_size: int = 256
    cache_dir: str | os.PathLike[str] | bool | None = None
    progress: bool = False
    backend: str = "local"
    ray_address: str | None = None
    num_workers: int | None = None

    def __post_init__(self) -> None:
        from assay.engine.backends import BACKENDS

        if self.backend not in BACKENDS:
            raise OptionError(f"unknown backend {self.backend!r}", where="backend",
                              fix=f"use one of: {', '.join(BACKENDS)}")
        if not 0.5 <= self.confidence < 1:
            raise OptionError(f"confidence {self.confidence} is not in [0.5, 1)", where="confidence", fix="e.g. 0.95")
        if self.folds < 2:
            raise OptionError(f"folds {self.folds} is below 2", where="folds", fix="use at least 2 folds, e.g. 5")
        for name in ("max_leaked_share", "max_label_issue_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise OptionError(f"{name} {value} is not a share in [0, 1]", where=name, fix="e.g. 0.01")
        if self.examples < 0:
            raise OptionError(f"examples {self.examples} is negative", where="examples", fix="e.g. 12, or 0 for none")

    def record(self) -> dict[str, Any]:
        return {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in self.__dict__.items()
                if k not in ("progress", "ray_address", "num_workers")}  # where it ran is not what it found


@dataclass(frozen=True)
class DatasheetInput:
    """What the audit takes from a datasheet (:func:`datasheet_input` builds it from datasheet.yaml).
    ``render`` turns the audit's evidence into DATASHEET.md (which quotes its
    numbers); ``licence``, ``obligations`` and ``gaps`` fill the datasheet section."""

    source: str
    licence: str | None
    obligations: list[str]
    gaps: list[str]
    render: Callable[[Evidence], str]


def datasheet_input(path: str | os.PathLike[str]) -> DatasheetInput:
    """``datasheet.yaml`` read and validated by :mod:`assay.govern.datasheet` (an invalid SPDX licence is a
    UserError naming it, before any work) as the audit takes it."""
    import functools

    from assay.govern.datasheet import gaps, licence_obligations, load_datasheet, render_datasheet

    sheet = load_datasheet(path)
    return DatasheetInput(source=os.fspath(path), licence=sheet.license, gaps=gaps(sheet),
                          obligations=licence_obligations(sheet.license) if sheet.license else [],
                          render=functools.partial(render_datasheet, sheet))


@dataclass
class AuditRun:
    """The audit's evidence, the flagged items (columns :data:`FLAGGED_COLUMNS`) and DATASHEET.md's text."""

    evidence: Evidence
    flagged: pd.DataFrame
    train: Dataset
    test: Dataset | None = None
    datasheet_markdown: str | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- inputs
def check_compatible(train: Dataset, test: Dataset | None) -> None:
    """DataError naming both sets when the test set is of another modality or input shape than train."""
    if test is None:
        return
    if train.modality != test.modality:
        raise DataError(f"the training data is {train.modality} data but the test data is {test.modality} data",
                        where=f"{train.source} vs {test.source}",
                        fix="audit a training and a test set of the same kind (both images, tables or texts)")
    if train.input_shape != test.input_shape:
        raise DataError(f"the training data has inputs of shape {train.input_shape} but the test data "
                        f"{test.input_shape}", where=f"{train.source} vs {test.source}",
                        fix="prepare both splits the same way (same image size and channels, same columns)")


def _probabilities(values: np.ndarray, n: int, where: str, role: str) -> np.ndarray:
    """``values`` checked as (n, K) probabilities: finite, in [0, 1], rows summing to 1 (within 1e-3)."""
    if values.ndim != 2 or values.shape[0] != n or values.shape[1] < 2:
        raise DataError(f"the {role} predicted probabilities have shape {values.shape}; expected ({n}, K) with K >= 2 "
                        f"classes, one row per {role} item", where=where,
                        fix=f"save one row of class probabilities per {role} item, in the data's order")
    if values.dtype.kind not in "fiu":
        raise DataError(f"the {role} predicted probabilities have dtype {values.dtype}, not numbers", where=where,
                        fix="save float probabilities")
    probs = values.astype(np.float64)
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1 or \
            not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(f"the {role} predicted probabilities are not probabilities (finite, in [0, 1], each row "
                        "summing to 1)", where=where,
                        fix="save softmax outputs, not logits (scipy.special.softmax(logits, axis=1))")
    return probs


def read_pred_probs(path: str | os.PathLike[str], n_train: int, n_test: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-sample predicted probabilities from a file, never unpickled: an ``.npy`` array (n_train, K), or an
    ``.npz`` with ``train`` (n_train, K) and optionally ``test`` (n_test, K; used for the inflation estimate
    when no model is given), or with one array. Every problem is a DataError naming the file."""
    where = os.fspath(path)
    suffix = Path(where).suffix.lower()
    if not Path(where).is_file():
        raise DataError("no such file", where=where, fix="give the .npy or .npz file of out-of-sample probabilities")
    test = None
    if suffix == ".npy":
        from assay.data.npz import load_npy

        train = load_npy(where, what="pred_probs")
    elif suffix == ".npz":
        try:
            with np.load(where, allow_pickle=False) as archive:
                keys = list(archive.files)
                key = "train" if "train" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DataError(f"the archive holds {sorted(keys)} but no 'train' array", where=where,
                                    fix="save numpy.savez(path, train=train_probs, test=test_probs)")
                train = archive[key]
                if "test" in keys and n_test is not None:
                    test = archive["test"]
        except DataError:
            raise
        except (ValueError, OSError, EOFError, KeyError) as exc:  # pickled members, corrupt archives
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DataError(f"cannot read the predicted probabilities ({detail}); pickled arrays are refused",
                            where=where, fix="save plain numeric arrays with numpy.savez(path, train=probs)") from None
    else:
        raise DataError(f"unsupported file type {suffix or '(none)'!r} for predicted probabilities", where=where,
                        fix="give an .npy array (n_train, K) or an .npz with 'train' (and optionally 'test')")
    probs = _probabilities(np.asarray(train), n_train, where, "training")
    if test is not None and n_test is not None:
        test_probs = _probabilities(np.asarray(test), n_test, where, "test")
        if test_probs.shape[1] != probs.shape[1]:
            raise DataError(f"train probabilities have {probs.shape[1]} classes, test {test_probs.shape[1]}",
                            where=where, fix="save both with one column per class")
        return probs, test_probs
    return probs, None


def audit_inputs(train: Any, test: Any = None, *, model: Any = None, pred_probs: Any = None,
                 datasheet: Any = None, cache_dir: Any = None) -> list[Path]:
    """Every input of an audit on disk: the output folder may not be, contain or lie inside any of them."""
    from assay.evidence.output import input_paths

    specs = [s.source if isinstance(s, Dataset) else s for s in (train, test)]
    return input_paths(*specs, model if isinstance(model, (str, os.PathLike)) else None,
                       pred_probs if isinstance(pred_probs, (str, os.PathLike)) else None,
                       datasheet.source if isinstance(datasheet, DatasheetInput) else datasheet, cache_dir=cache_dir)


# ---------------------------------------------------------------------------------------- helpers
def _proportion(successes: int, n: int, confidence: float, **config: Any) -> Metric:
    """A share with its exact binomial interval (Clopper-Pearson: valid at 0 and small counts)."""
    from assay.stats.bootstrap import clopper_pearson

    if n == 0:
        return Metric(value=None, n=0, method="clopper-pearson", config=config)
    low, high = clopper_pearson(int(successes), int(n), confidence)
    return Metric(value=successes / n, ci_low=low, ci_high=high, n=n,
                  method=f"clopper-pearson({confidence:g})", config={"count": int(successes), **config})


def _records(frame: Any, limit: int = 500) -> list[dict[str, Any]]:
    """Rows of a DataFrame as JSON-safe dicts (numpy scalars to Python), at most ``limit``."""
    rows = []
    for row in frame.head(limit).to_dict(orient="records"):
        rows.append({str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    return rows


def _split_name(split: str) -> str:
    return {"train": "training", "test": "test"}.get(split, split)


def _item_id(data: dict[str, Dataset | None], split: str, index: int) -> str:
    dataset = data.get(split)
    return str(dataset.ids[index]) if dataset is not None and 0 <= index < len(dataset) else ""


def _model_info(model: Model | None, train: Dataset) -> ModelInfo:
    """The model audited with, or a placeholder saying there was none (Evidence always names one)."""
    if model is not None:
        return model.info
    names = list(train.class_names or ([str(i) for i in range(int(train.y.max()) + 1)] if train.y is not None else []))
    return ModelInfo(path="(no model: model-free audit)", format="none", sha256="",
                     input_shape=[None, *train.input_shape], input_dtype=str(train.x.dtype),
                     num_classes=len(names), class_names=names)


def _class_names(train: Dataset, k: int) -> list[str]:
    names = list(train.class_names or [])
    return names if len(names) >= k else [*names, *[str(i) for i in range(len(names), k)]]


# --------------------------------------------------------------------------------------------- embeddings
@dataclass
class _ModelOutputs:
    train_features: np.ndarray | None
    test_features: np.ndarray | None
    test_logits: np.ndarray | None


def _run_model(model: Model, train: Dataset, test: Dataset | None, settings: AuditSettings) -> _ModelOutputs:
    from assay.engine.backends import get_backend
    from assay.engine.cache import OutputCache, default_cache_dir
    from assay.engine.run import run_views
    from assay.engine.views import CleanView

    cache_dir = settings.cache_dir
    cache = OutputCache(default_cache_dir() if cache_dir is True else cache_dir or None)
    with get_backend(settings.backend, address=settings.ray_address, workers=settings.num_workers) as backend:
        outs = [run_views(model, d, [CleanView()], cache_dir=cache, batch_size=settings.batch_size, backend=backend,
                          progress=settings.progress, keep_features=True).clean if d is not None else None
                for d in (train, test)]
    return _ModelOutputs(train_features=outs[0].features if outs[0] is not None else None,
                         test_features=outs[1].features if outs[1] is not None else None,
                         test_logits=outs[1].logits if outs[1] is not None else None)


def _model_free(dataset: Dataset, reference: Dataset | None = None) -> np.ndarray:
    from assay.audit.embeddings import model_free_embeddings

    return np.asarray(model_free_embeddings(dataset, reference=reference), dtype=np.float32)


# ----------------------------------------------------------------------------------------------- sections
def _duplicate_sections(found: Any, train: Dataset, test: Dataset | None, settings: AuditSettings,
                        correct: np.ndarray | None) -> tuple[Section, Section | None]:
    pairs = found.pairs
    conf = settings.confidence
    within = pairs[pairs["a_split"] == pairs["b_split"]] if len(pairs) else pairs
    metrics: dict[str, Metric] = {}
    findings: list[Finding] = []
    for split, data in (("train", train), ("test", test)):
        if data is None:
            continue
        rows = within[within["a_split"] == split] if len(within) else within
        for kind in ("exact", "near"):
            chosen = rows[rows["kind"] == kind] if len(rows) else rows
            # an item is redundant when it duplicates an earlier one: count distinct later members of pairs
            redundant = len(set(np.maximum(chosen["a_index"], chosen["b_index"]).tolist())) if len(chosen) else 0
            metrics[f"{split}_{kind}_duplicate_share"] = _proportion(
                redundant, len(data), conf, split=split, kind=kind, lower_is_better=True)
            if redundant:
                findings.append(Finding(
                    severity="warning", sets_verdict=True,
                    evidence=f"duplicates.metrics.{split}_{kind}_duplicate_share",
                    message=f"{redundant} {_split_name(split)} item(s) are {kind} duplicates of another "
                            f"{_split_name(split)} item ({len(chosen)} pairs); they over-weight those examples"))
    findings += [Finding(severity="info", message=str(n)) for n in getattr(found, "notes", [])]
    verdict: Verdict = "warn" if any(f.severity == "warning" for f in findings) else "pass"
    n_pairs = len(within)
    duplicates = Section(
        name="duplicates", title="Duplicates", verdict=verdict,
        summary=f"{n_pairs} within-split duplicate pair(s) found" if n_pairs else "no within-split duplicates found",
        metrics=metrics, findings=findings,
        tables={"pairs": _records(within.sort_values("similarity", ascending=False))} if n_pairs else {},
        config={"methods": sorted(set(pairs["method"].astype(str))) if len(pairs) else []})
    if test is None:
        return duplicates, None
    leaked = np.asarray(found.leaked_test, dtype=bool)
    cross = pairs[(pairs["a_split"] == "test") & (pairs["b_split"] == "train")] if len(pairs) else pairs
    lmetrics = {"leaked_test_share": _proportion(int(leaked.sum()), len(test), conf, lower_is_better=True)}
    exact_leaks = cross[cross["kind"] == "exact"]["a_index"].nunique() if len(cross) else 0
    lmetrics["exact_leaked_test_share"] = _proportion(int(exact_leaks), len(test), conf, lower_is_better=True)
    lfindings: list[Finding] = []
    share = float(leaked.mean())
    if leaked.any():
        severity: Severity = "critical" if share >= settings.max_leaked_share else "warning"
        lfindings.append(Finding(
            severity=severity, sets_verdict=True, evidence="leakage.metrics.leaked_test_share",
            message=f"{int(leaked.sum())} of {len(test)} test items ({share:.1%}) have a duplicate in the training "
                    f"data ({exact_leaks} exact); accuracy on them measures memory, not generalisation"
                    + (f" (at or above the {settings.max_leaked_share:.0%} limit)" if severity == "critical" else "")))
    if correct is not None:
        from assay.audit.leakage import leakage_inflation

        inflation = leakage_inflation(correct, leaked, confidence=conf)
        for key in ("accuracy_leaked", "accuracy_clean", "difference"):
            part = inflation.get(key) or {}
            ci = part.get("ci") or (None, None)
            value = part.get("value")
            lmetrics[key] = Metric(value=None if value is None or not np.isfinite(value) else float(value),
                                   ci_low=None if ci[0] is None else float(ci[0]),
                                   ci_high=None if ci[1] is None else float(ci[1]),
                                   n=int(part.get("n", leaked.sum() if key == "accuracy_leaked" else
                                                  (~leaked).sum() if key == "accuracy_clean" else len(leaked))),
                                   method=(f"newcombe-hybrid-score({conf:g})" if key == "difference"
                                           else f"clopper-pearson({conf:g})"),
                                   config={"confidence": conf, "leaked_minus_clean": key == "difference"})
        lfindings += [Finding(severity="info", message=str(note)) for note in inflation.get("notes", [])]
        diff = lmetrics["difference"]
        if diff.value is not None and diff.ci_low is not None and diff.ci_low > 0:
            lfindings.append(Finding(
                severity="warning", evidence="leakage.metrics.difference",
                message=f"accuracy is higher on leaked test items than on clean ones by {diff.value:.3f} "
                        f"[{diff.ci_low:.3f}, {diff.ci_high:.3f}]: the reported test accuracy is inflated; report "
                        "accuracy on the clean items"))
    elif leaked.any():
        lfindings.append(Finding(severity="info", message="no model or test probabilities (and test labels) were "
                                 "given, so the accuracy inflation the leak causes was not estimated"))
    worst = {"critical": "fail", "warning": "warn"}
    lverdict: Verdict = "pass"
    for f in lfindings:
        if f.sets_verdict:
            lverdict = worst.get(f.severity, "pass")  # type: ignore[assignment]
    leakage = Section(
        name="leakage", title="Train/test leakage", verdict=lverdict,
        summary=(f"{int(leaked.sum())} of {len(test)} test items leaked from training" if leaked.any()
                 else "no test item has a duplicate in the training data"),
        metrics=lmetrics, findings=lfindings,
        tables={"leaks": _records(cross.sort_values("similarity", ascending=False))} if len(cross) else {},
        lead_tables=[], config={"max_leaked_share": settings.max_leaked_share})
    return duplicates, leakage


def _labels_section(found: Any, train: Dataset, settings: AuditSettings, source: str) -> Section:
    items = found.items
    issues = items[items["is_label_issue"].astype(bool)] if len(items) else items
    names = _class_names(train, int(max(items["given_label"].max(), items["suggested_label"].max())) + 1
                         if len(items) else 0)
    share = _proportion(len(issues), len(train), settings.confidence, lower_is_better=True, source=source)
    findings: list[Finding] = []
    verdict: Verdict = "pass"
    if len(issues):
        over = len(issues) / len(train) > settings.max_label_issue_share
        verdict = "warn" if over else "pass"
        findings.append(Finding(
            severity="warning" if over else "info", sets_verdict=over, evidence="labels.metrics.label_issue_share",
            message=f"{len(issues)} training label(s) look wrong ({len(issues) / len(train):.1%}); review them "
                    "(flagged.csv, kind label_issue) before training or trusting per-class numbers"))
    findings += [Finding(severity="info", message=str(n)) for n in getattr(found, "notes", [])]
    table = issues.sort_values("label_quality").head(200).copy() if len(issues) else issues
    if len(table):
        table["given"] = [names[int(i)] for i in table["given_label"]]
        table["suggested"] = [names[int(i)] for i in table["suggested_label"]]
        table["id"] = [str(train.ids[int(i)]) for i in table["index"]]
    summary_table = getattr(found, "issue_summary", None)
    tables = {"label_issues": _records(table)} if len(table) else {}
    if summary_table is not None and len(summary_table):
        tables["issue_summary"] = _records(summary_table)
    return Section(name="labels", title="Label issues", verdict=verdict,
                   summary=f"{len(issues)} likely label error(s) among {len(train)} training items ({source})",
                   metrics={"label_issue_share": share}, findings=findings, tables=tables,
                   lead_tables=[t for t in ("issue_summary",) if t in tables], config={"pred_probs": source})


def _integrity_section(found: Any) -> Section:
    findings = []
    for f in getattr(found, "findings", []):
        get = f.get if isinstance(f, dict) else (lambda k, d=None, f=f: getattr(f, k, d))
        given = str(get("severity", "info"))
        severity: Severity = "critical" if given == "critical" else "info" if given == "info" else "warning"
        where = get("where")
        count = get("count")
        message = str(get("what", "")) + (f" ({count})" if count not in (None, "") else "")
        findings.append(Finding(severity=severity, message=message, evidence=None if where is None else str(where),
                                sets_verdict=severity != "info"))
    worst = "fail" if any(f.severity == "critical" for f in findings) else (
        "warn" if any(f.severity == "warning" for f in findings) else "pass")
    tables = {str(k): _records(v) for k, v in (getattr(found, "tables", None) or {}).items() if v is not None}
    problems = sum(f.severity != "info" for f in findings)
    return Section(name="integrity", title="Data integrity", verdict=worst,  # type: ignore[arg-type]
                   summary=f"{problems} integrity problem(s)" if problems else "no integrity problem found",
                   findings=findings, tables=tables)


def _datasheet_section(datasheet: DatasheetInput) -> Section:
    findings = [Finding(severity="info", message=f"licence obligation: {o}") for o in datasheet.obligations]
    findings += [Finding(severity="warning", message=f"datasheet gap: {g}", sets_verdict=True) for g in datasheet.gaps]
    return Section(name="datasheet", title="Datasheet", verdict="warn" if datasheet.gaps else "pass",
                   summary=f"licence {datasheet.licence or 'not stated'}; "
                           f"{len(datasheet.gaps)} gap(s) in the datasheet",
                   findings=findings, tables={"gaps": [{"gap": g} for g in datasheet.gaps]} if datasheet.gaps else {},
                   config={"source": datasheet.source, "licence": datasheet.licence})


def _snippet(text: Any) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "\u2026"


def _examples_section(flagged: Any, data: dict[str, Dataset | None], limit: int) -> Section | None:
    """Thumbnails (images: each flagged pair side by side as small PNGs) or text snippets of the first
    ``limit`` flagged items of each kind, so a reader can judge the finder by eye."""
    if limit == 0 or not len(flagged):
        return None
    train = data["train"]
    assert train is not None
    kinds = [k for k in ("leak", "exact_duplicate", "near_duplicate", "label_issue") if (flagged["kind"] == k).any()]
    plots: dict[str, dict[str, Any]] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        rows = flagged[flagged["kind"] == kind].head(limit)
        if train.modality == "image":
            from assay.report.thumbnails import png_thumbnail

            entries = []
            for r in rows.itertuples(index=False):
                a = data[r.split]
                images = [png_thumbnail(a.x[int(r.index)])] if a is not None else []
                captions = [f"{r.split} {r.id}"]
                if r.partner_split and isinstance(r.partner_index, (int, np.integer, float)) and r.partner_index >= 0:
                    b = data[str(r.partner_split)]
                    if b is not None:
                        images.append(png_thumbnail(b.x[int(r.partner_index)]))
                        captions.append(f"{r.partner_split} {r.partner_id}")
                label = str(r.reason) if kind == "label_issue" else f"{r.score:.3f}"
                entries.append({"label": label, "images": images, "captions": captions})
            plots[kind] = {"kind": "images", "title": f"{kind.replace('_', ' ')}: first {len(entries)}"
                           + (" items" if kind == "label_issue" else " pairs, similarity at left"),
                           "rows": entries}
        elif train.modality == "text":
            table = []
            for r in rows.itertuples(index=False):
                a = data[r.split]
                row = {"item": f"{r.split} {r.id}", "text": _snippet(a.x[int(r.index)]) if a is not None else ""}
                if r.partner_split:
                    b = data[str(r.partner_split)]
                    row |= {"partner": f"{r.partner_split} {r.partner_id}",
                            "partner_text": _snippet(b.x[int(r.partner_index)]) if b is not None else ""}
                table.append(row | {"score": r.score, "reason": r.reason})
            tables[kind] = table
        else:
            tables[kind] = [{"item": f"{r.split} {r.id}", "partner": f"{r.partner_split} {r.partner_id}"
                             if r.partner_split else "", "score": r.score, "reason": r.reason}
                            for r in rows.itertuples(index=False)]
    return Section(name="examples", title="Flagged examples", verdict="info",
                   summary=f"the first {limit} flagged items of each kind; every one is in flagged.csv",
                   tables=tables, plots=plots)


# ---------------------------------------------------------------------------------------------- flagged
def _flagged(duplicates: Any, labels: Any, data: dict[str, Dataset | None], names: list[str]) -> pd.DataFrame:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    if duplicates is not None and len(duplicates.pairs):
        for p in duplicates.pairs.itertuples(index=False):
            leak = p.a_split != p.b_split
            kind = "leak" if leak else f"{p.kind}_duplicate"
            rows.append({"kind": kind, "split": p.a_split, "index": int(p.a_index),
                         "id": _item_id(data, p.a_split, int(p.a_index)), "partner_split": p.b_split,
                         "partner_index": int(p.b_index), "partner_id": _item_id(data, p.b_split, int(p.b_index)),
                         "score": float(p.similarity),
                         "reason": f"{p.kind} duplicate ({p.method})" + (f" of {p.b_split} item" if leak else "")})
    if labels is not None and len(labels.items):
        items = labels.items[labels.items["is_label_issue"].astype(bool)].sort_values("label_quality")
        for r in items.itertuples(index=False):
            given, suggested = int(r.given_label), int(r.suggested_label)
            rows.append({"kind": "label_issue", "split": "train", "index": int(r.index),
                         "id": _item_id(data, "train", int(r.index)), "partner_split": "", "partner_index": -1,
                         "partner_id": "", "score": float(r.label_quality),
                         "reason": f"labelled {names[given] if given < len(names) else given}, looks like "
                                   f"{names[suggested] if suggested < len(names) else suggested}"})
    frame = pd.DataFrame(rows, columns=FLAGGED_COLUMNS)
    return frame.astype({"index": "int64", "partner_index": "int64", "score": "float64"})


# -------------------------------------------------------------------------------------------------- run
def _as_dataset(spec: Any, role: str, options: dict[str, Any] | None) -> tuple[Dataset, Any]:
    """The split as a Dataset, and what the integrity checks should read: the folder itself when an image folder
    holds files that cannot be read (listed there, not fatal: the readable ones are audited), else the Dataset."""
    from assay.evaluation.inputs import as_dataset

    try:
        dataset = as_dataset(spec, options, role=role)
    except DataError:
        if not isinstance(spec, (str, os.PathLike)):
            raise
        if Path(spec).is_dir():
            return _readable_images(Path(spec), options), spec
        from assay.data.tabular import TABLE_EXTENSIONS

        if Path(spec).suffix.lower() in TABLE_EXTENSIONS:
            return _complete_rows(Path(spec), options), spec
        raise
    return dataset, dataset


def _complete_rows(path: Path, options: dict[str, Any] | None) -> Dataset:
    """A table without its rows that miss a value (a Dataset refuses them; the integrity checks read the raw
    table and list the columns): the other rows keep their row numbers as ids. Re-raises the loader's error when
    no row misses a value (the problem was something else)."""
    from assay.data.loader import load_data
    from assay.data.tabular import ID_COLUMN, dataset_from_frame, read_table

    frame = read_table(path)
    complete = ~frame.isna().any(axis=1)
    if complete.all() or not complete.any():
        return load_data(path, **(options or {}))  # raises the loader's own error
    if ID_COLUMN not in frame.columns:
        frame.insert(0, ID_COLUMN, np.arange(len(frame)))
    dataset = dataset_from_frame(frame[complete.to_numpy()], name=path.stem, source=str(path),
                                 **{k: v for k, v in (options or {}).items() if k != "image_size"})
    dataset.notes.append(f"{int((~complete).sum())} of {len(frame)} rows miss a value and were left out of the "
                         "duplicate and label checks (the integrity section lists the columns)")
    return dataset


def _readable_images(folder: Path, options: dict[str, Any] | None) -> Dataset:
    """An image folder without its unreadable files (zero-byte, corrupt, truncated, too large): a tree of links
    to the readable ones is loaded (same class folders, same relative ids), so the loader's rules still apply.
    Re-raises the loader's error when every file reads (the problem was not a file)."""
    import dataclasses
    import tempfile

    from assay.audit.integrity import scan_image_folder
    from assay.data.loader import load_data

    files = scan_image_folder(folder)
    good = files[files["status"] == "ok"]
    if len(good) == len(files) or not len(good):
        return load_data(folder, **(options or {}))  # raises the loader's own error
    with tempfile.TemporaryDirectory(prefix="assay-audit-") as tmp:
        for rel in good["path"].astype(str):
            link = Path(tmp) / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((folder / rel).resolve())
        for cls in (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            (Path(tmp) / cls.name).mkdir(exist_ok=True)  # a class whose files are all broken keeps its index
        dataset = load_data(tmp, **(options or {}))
    return dataclasses.replace(dataset, source=str(folder), name=folder.resolve().name, notes=list(dataset.notes),
                               meta=dataset.meta)


def run_audit(
    train: Dataset | str | os.PathLike[str] | Any,
    test: Dataset | str | os.PathLike[str] | Any = None,
    *,
    model: Model | str | os.PathLike[str] | Any = None,
    pred_probs: np.ndarray | str | os.PathLike[str] | None = None,
    datasheet: DatasheetInput | str | os.PathLike[str] | None = None,
    settings: AuditSettings | None = None,
    data_options: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
) -> AuditRun:
    """Audit ``train`` (and ``test``): duplicates, test->train leakage (with the accuracy inflation when a model
    or test probabilities and test labels are given), label issues, integrity, datasheet. See the module
    docstring. ``pred_probs``: out-of-sample probabilities of the training items (an array, or a file as
    :func:`read_pred_probs` reads it)."""
    settings = settings or AuditSettings()
    if datasheet is not None and not isinstance(datasheet, DatasheetInput):
        datasheet = datasheet_input(datasheet)  # an invalid datasheet fails here, before any work
    timings: dict[str, float] = {}
    started = time.perf_counter()
    t = started
    train_ds, train_checked = _as_dataset(train, "train", data_options)
    test_ds, test_checked = (None, None) if test is None else _as_dataset(test, "test", data_options)
    check_compatible(train_ds, test_ds)
    test_probs = None
    probs_source = "k-fold linear probe"
    if isinstance(pred_probs, (str, os.PathLike)):
        probs, test_probs = read_pred_probs(pred_probs, len(train_ds), None if test_ds is None else len(test_ds))
        probs_source = f"given ({os.fspath(pred_probs)})"
    elif pred_probs is not None:
        probs = _probabilities(np.asarray(pred_probs), len(train_ds), "pred_probs", "training")
        probs_source = "given"
    else:
        probs = None
    model_obj = None
    if model is not None:
        from assay.evaluation.inputs import as_model, check_shapes

        model_obj = as_model(model, train_ds.x[:2], train_ds.class_names, model_options or {})
        check_shapes(model_obj, train_ds, "training data")
        if test_ds is not None:
            check_shapes(model_obj, test_ds, "test data")
    timings["load"] = time.perf_counter() - t
    data: dict[str, Dataset | None] = {"train": train_ds, "test": test_ds}
    run_findings: list[Finding] = []

    with progress_scope(settings.progress):
        t = time.perf_counter()
        outputs = None
        if model_obj is not None:
            outputs = _run_model(model_obj, train_ds, test_ds, settings)
            if outputs.train_features is None:
                run_findings.append(Finding(severity="warning", evidence="model", message=(
                    "the model exposes no features, so a model-free embedding was used for near duplicates and "
                    "the label probe")))
        if outputs is not None and outputs.train_features is not None:
            train_emb: np.ndarray = np.asarray(outputs.train_features, dtype=np.float32)
            test_emb = None if outputs.test_features is None else np.asarray(outputs.test_features, np.float32)
            embedding = "model features"
        else:
            with stage("embedding", total=1 + (test_ds is not None), unit="splits") as advance:
                train_emb = _model_free(train_ds)
                advance()
                test_emb = None if test_ds is None else _model_free(test_ds, reference=train_ds)
                advance()
            embedding = "model-free"
        timings["embeddings"] = time.perf_counter() - t

        t = time.perf_counter()
        from assay.audit.duplicates import find_duplicates

        with stage("duplicates", total=None, unit="steps"):
            dups = find_duplicates(train_ds, test_ds, train_embeddings=train_emb, test_embeddings=test_emb)
        timings["duplicates"] = time.perf_counter() - t

        correct = None
        if test_ds is not None and test_ds.y is not None:
            scores = test_probs if test_probs is not None else (outputs.test_logits if outputs is not None else None)
            if scores is not None:
                correct = np.asarray(scores).argmax(axis=1) == test_ds.y
        duplicates_section, leakage_section = _duplicate_sections(dups, train_ds, test_ds, settings, correct)

        t = time.perf_counter()
        labels = None
        sections: dict[str, Section] = {"duplicates": duplicates_section}
        if leakage_section is not None:
            sections["leakage"] = leakage_section
        if train_ds.y is not None and len(np.unique(train_ds.y)) >= 2:
            from assay.audit.labels import label_issues, out_of_sample_probs

            with stage("label issues", total=None, unit="steps"):
                if probs is None:
                    probs = out_of_sample_probs(train_emb, train_ds.y, folds=settings.folds, seed=settings.seed)
                with contextlib.redirect_stdout(io.StringIO()) as said:  # cleanlab prints to stdout
                    labels = label_issues(train_ds.y, probs, features=train_emb)
            labels.notes.extend(f"cleanlab: {line}" for line in said.getvalue().splitlines() if line.strip())
            sections["labels"] = _labels_section(labels, train_ds, settings, probs_source)
        else:
            sections["labels"] = Section(name="labels", title="Label issues", verdict="info",
                                         summary="the training data has fewer than two labelled classes: no label "
                                                 "audit")
        timings["labels"] = time.perf_counter() - t

        t = time.perf_counter()
        from assay.audit.integrity import integrity_findings

        sections["integrity"] = _integrity_section(integrity_findings(train_checked, test_checked))
        timings["integrity"] = time.perf_counter() - t

    if datasheet is not None:
        sections["datasheet"] = _datasheet_section(datasheet)
    names = _class_names(train_ds, probs.shape[1] if probs is not None else 0)
    flagged = _flagged(dups, labels, data, names)
    examples = _examples_section(flagged, data, settings.examples)
    if examples is not None:
        sections["examples"] = examples
    timings["total"] = time.perf_counter() - started

    from assay.evaluation.inputs import input_findings

    run_findings = input_findings({"data": train_ds, "test data": test_ds}) + run_findings
    info = _model_info(model_obj, train_ds)
    evidence = Evidence(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=info,
        data=DataInfo(name=train_ds.name, source=train_ds.source, modality=train_ds.modality,
                      fingerprint=train_ds.fingerprint, n=len(train_ds), num_classes=len(names),
                      class_names=names, input_shape=list(train_ds.input_shape),
                      metadata_columns=train_ds.metadata_columns),
        environment=environment_info(),
        seed=settings.seed,
        config={"command": "audit", **settings.record(), "embedding": embedding, "pred_probs": probs_source,
                "test": None if test_ds is None else {"name": test_ds.name, "source": test_ds.source,
                                                      "n": len(test_ds), "fingerprint": test_ds.fingerprint},
                "datasheet": None if datasheet is None else datasheet.source},
        timings={k: round(v, 4) for k, v in timings.items()},
        sections=sections,
        findings=run_findings,
    )
    run = AuditRun(evidence=evidence, flagged=flagged, train=train_ds, test=test_ds)
    if datasheet is not None:
        run.datasheet_markdown = datasheet.render(evidence)
    return run


# ------------------------------------------------------------------------------------------------ write
def write_audit(run: AuditRun, out: str | os.PathLike[str], force: bool = False, *,
                inputs: Sequence[Path] = ()) -> Path:
    """Write the audit bundle into ``out`` (kind ``audit``; see :mod:`assay.evidence.output`): evidence.json,
    flagged.csv, report.html, report.md and DATASHEET.md when a datasheet was given. ``out`` may replace only
    an Assay audit bundle (another Assay output with ``force``) and may not be, contain or lie in an input."""
    from assay.evidence.output import atomic_directory
    from assay.report import render_html, render_markdown

    with atomic_directory(out, "audit", inputs=inputs, force=force) as tmp:
        (tmp / "evidence.json").write_text(run.evidence.model_dump_json(indent=2), encoding="utf-8")
        run.flagged.to_csv(tmp / "flagged.csv", index=False)
        (tmp / "report.html").write_text(render_html(run.evidence, title="Assay data audit"), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(run.evidence), encoding="utf-8")
        if run.datasheet_markdown is not None:
            (tmp / "DATASHEET.md").write_text(run.datasheet_markdown, encoding="utf-8")
    return Path(out)


def flagged_summary(run: AuditRun) -> str:
    """What the audit flagged, in one sentence (the CLI prints it)."""
    counts = run.flagged["kind"].value_counts().to_dict() if len(run.flagged) else {}
    parts = [f"{counts[k]} {label}" for k, label in (("leak", "test->train leak pair(s)"),
                                                     ("exact_duplicate", "exact duplicate pair(s)"),
                                                     ("near_duplicate", "near-duplicate pair(s)"),
                                                     ("label_issue", "likely label error(s)")) if counts.get(k)]
    return ("Flagged " + ", ".join(parts) + " (flagged.csv lists every one)") if parts else \
        "Nothing flagged: no duplicates, leaks or label issues found"
