"""Loading and validating what an evaluation reads: the model, the data sets, and how they fit together
(input shape, label range, class order), plus the run-level findings about how each input was read."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.checks.base import EvaluateConfig
from assay.data.dataset import Dataset
from assay.errors import DataError
from assay.evidence.schema import Finding
from assay.models.base import Model

__all__ = [
    "align_classes",
    "as_dataset",
    "as_model",
    "check_shapes",
    "evaluation_inputs",
    "input_findings",
    "labelled",
]


def as_model(model: Model | str | os.PathLike[str], sample: np.ndarray, class_names: list[str] | None,
             model_options: dict[str, Any]) -> Model:
    """A loaded model (dry-run on ``sample``), or ``model`` itself when it is one already."""
    if isinstance(model, Model):
        return model
    from assay.models.loader import load_model

    return load_model(str(model), sample=sample, class_names=class_names, **model_options)


def as_dataset(data: Dataset | str | os.PathLike[str], data_options: dict[str, Any] | None = None) -> Dataset:
    """A loaded dataset (``load_data`` with ``data_options``), or ``data`` itself when it is one already."""
    if isinstance(data, Dataset):
        return data
    from assay.data.loader import load_data

    return load_data(str(data), **(data_options or {}))


def labelled(dataset: Dataset, role: str, fix: str) -> Dataset:
    """``dataset``, or a DataError when it has no labels."""
    if dataset.y is None:
        raise DataError(f"the {role} has no labels", where=dataset.source, fix=fix)
    return dataset


def check_shapes(model: Model, dataset: Dataset, what: str) -> None:
    """DataError naming both shapes when ``dataset``'s inputs cannot be fed to ``model``."""
    expected = model.info.input_shape[1:]
    got = list(dataset.input_shape)
    if dataset.modality == "text" or not expected:
        return
    mismatch = len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got))
    if mismatch:
        shown = tuple("N" if e is None else e for e in expected)
        raise DataError(
            f"the model expects inputs of shape {shown} but the {what} has inputs of shape {tuple(got)}",
            where=f"{model.info.path} vs {dataset.source}",
            fix="evaluate the model on data prepared the way it was trained (size, channels, features)",
        )


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


def input_findings(inputs: dict[str, Dataset | None]) -> list[Finding]:
    """Run-level findings from how each input set was read (``Dataset.notes``: uint8 scaling, values
    outside [0, 1], class order taken from sorted names, image conversions), with their severities."""
    findings = []
    for role, data in inputs.items():
        if data is None:
            continue
        for note in data.notes:
            message = str(note) if role == "data" else f"{role} ({data.source}): {note}"
            findings.append(Finding(severity=getattr(note, "severity", "warning"), message=message,
                                    evidence=f"data:{role}"))
    return findings


def evaluation_inputs(model: Any, data: Any, *, calibration_data: Any = None, config: EvaluateConfig | None = None,
                      cache_dir: Any = None, model_options: dict[str, Any] | None = None) -> list[Path]:
    """Every input of an evaluation that lies on disk (model, weights, data sets, every path a check's
    settings name, the cache): the output folder may not be, contain or lie inside any of them."""
    from assay.evidence.output import input_paths

    config = config or EvaluateConfig()
    specs: list[Any] = [model, data, calibration_data, (model_options or {}).get("weights")]
    for value in config.record().values():  # OOD and unlabeled sets, -C folders, baselines, training data
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            specs.append(value)
    specs += [x.source for x in (data, calibration_data) if isinstance(x, Dataset)]
    if isinstance(model, Model):
        specs.append(model.info.path)
    return input_paths(*specs, cache_dir=cache_dir)
