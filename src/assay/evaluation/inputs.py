"""Loading and validating what an evaluation reads: the model, the data sets, and how they fit together
(input shape, label range, class order), plus the run-level findings about how each input was read.

A model is a path or factory spec, a loaded :class:`~assay.models.base.Model` or a ``torch.nn.Module``; a data
set is a path or built-in name, a :class:`~assay.data.dataset.Dataset` or arrays (``(x, y)``, ``(x,)``, ``x``:
numpy arrays or torch tensors). Anything else is an OptionError naming the parameter and the accepted types.
Settings typed as paths (``ood=``, ``unlabeled=``, ``train_data=``, ``select``'s models) take in-memory objects
through :class:`InMemoryInputs`, which names them for the duration of one call."""

from __future__ import annotations

import os
import sys
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from assay.checks.base import EvaluateConfig
from assay.data.dataset import Dataset
from assay.errors import DataError, OptionError
from assay.evidence.schema import Finding
from assay.models.base import Model

__all__ = [
    "DATA_SETTINGS",
    "DATA_TYPES",
    "MODEL_TYPES",
    "InMemoryInputs",
    "align_classes",
    "as_dataset",
    "as_model",
    "bind_data_settings",
    "call_with_in_memory_inputs",
    "check_model_argument",
    "check_shapes",
    "data_argument",
    "evaluation_inputs",
    "input_findings",
    "is_in_memory_data",
    "is_in_memory_model",
    "labelled",
]

#: What a model argument may be (for messages).
MODEL_TYPES = ("a model file (.onnx, .pt, .pt2), a factory 'package.module:callable' (with weights=), a loaded "
               "assay Model (assay.models.load_model) or a torch.nn.Module")
#: What a data argument may be (for messages).
DATA_TYPES = ("a data path or built-in name ('digits', .npz, .csv, .parquet, an image folder), an assay.Dataset "
              "(assay.Dataset.from_arrays(x, y, class_names=..., meta=...)) or arrays (x, y), (x,) or x as numpy "
              "arrays or torch tensors")
#: Load options that apply to a file or factory but not to a module already in memory, and what to do instead.
_FILE_ONLY_OPTIONS = {
    "weights": "load the weights into the module first (module.load_state_dict(...))",
    "untrained": "drop untrained: the module is evaluated with the weights it holds",
    "feature_output": "use feature_layer (the name of a submodule) for a torch module",
}
_BOUND: ContextVar[Mapping[str, Any] | None] = ContextVar("assay_in_memory_inputs", default=None)
T = TypeVar("T")


def _is_torch(value: Any, kind: str) -> bool:
    torch = sys.modules.get("torch")  # an nn.Module or a tensor can only exist once torch was imported
    return torch is not None and isinstance(value, torch.nn.Module if kind == "module" else torch.Tensor)


def is_in_memory_model(value: Any) -> bool:
    """A loaded Model or a ``torch.nn.Module`` (no path to load)."""
    return isinstance(value, Model) or _is_torch(value, "module")


def is_in_memory_data(value: Any) -> bool:
    """A Dataset, a tuple of arrays, or one array (numpy or torch)."""
    return isinstance(value, (Dataset, tuple, np.ndarray)) or _is_torch(value, "tensor")


def _bound(value: Any) -> Any:
    """The object an :class:`InMemoryInputs` name stands for, or None."""
    named = _BOUND.get()
    return named.get(value) if named is not None and isinstance(value, str) else None


def check_model_argument(model: Any, role: str = "model", *, also: str = "") -> None:
    """OptionError naming ``role`` and the accepted types (``also``: more of them, e.g. evidence bundles) unless
    ``model`` is a path, a spec or a model."""
    if isinstance(model, (str, os.PathLike)) or is_in_memory_model(model):
        return
    hint = ""
    if type(model).__name__ == "ExportedProgram":
        hint = "; for a torch.export program pass program.module(), or save it (.pt2) and pass the path"
    elif isinstance(model, (list, tuple)):
        hint = "; several models are compared with assay.compare / assay.select"
    raise OptionError(f"{role} is {_kind(model)}, which Assay cannot evaluate as a model", where=role,
                      fix=f"give {MODEL_TYPES}{also}{hint}")


def _kind(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def as_model(model: Model | str | os.PathLike[str] | Any, sample: np.ndarray, class_names: list[str] | None,
             model_options: dict[str, Any], *, role: str = "model") -> Model:
    """A loaded model (dry-run on ``sample``), ``model`` itself when it is one already, or a ``torch.nn.Module``
    wrapped as one (:func:`assay.models.torch_models.wrap_module`: an eval-mode CPU copy, the caller's module
    untouched). Any other type is an OptionError naming ``role``."""
    name = None
    if (bound := _bound(model)) is not None:
        model, name = bound, model
    if isinstance(model, Model):
        return model
    if _is_torch(model, "module"):
        return _wrap_module(model, name, sample, class_names, model_options)
    check_model_argument(model, role)
    from assay.models.loader import load_model

    return load_model(os.fspath(model), sample=sample, class_names=class_names, **model_options)


def _wrap_module(module: Any, name: str | None, sample: np.ndarray, class_names: list[str] | None,
                 options: dict[str, Any]) -> Model:
    """An in-memory module as a Model, with the load options that apply to it (``outputs``, ``feature_layer``,
    ``threads`` -- set for the process, as for a torch file -- and ``num_classes``)."""
    from assay.models.loader import check_input_compatible
    from assay.models.torch_models import wrap_module

    for option, fix in _FILE_ONLY_OPTIONS.items():
        if options.get(option) not in (None, False):
            raise OptionError(f"{option} does not apply to a torch.nn.Module in memory", where=option, fix=fix)
    unknown = sorted(set(options) - {"outputs", "feature_layer", "threads", "num_classes", *_FILE_ONLY_OPTIONS})
    if unknown:
        raise OptionError(f"unknown model option {unknown[0]!r}", where=unknown[0],
                          fix="a module in memory takes outputs, feature_layer and threads")
    if options.get("outputs") not in (None, "logits", "probabilities"):
        raise OptionError(f"outputs must be 'logits' or 'probabilities', not {options['outputs']!r}",
                          where="outputs", fix="say what the module returns")
    model = wrap_module(module, sample=sample, name=name,
                        outputs="probabilities" if options.get("outputs") == "probabilities" else "logits",
                        feature_layer=options.get("feature_layer"), class_names=class_names,
                        num_classes=options.get("num_classes"))
    if options.get("threads") is not None:
        model.set_threads(options["threads"])
    check_input_compatible(model, sample)
    return model


def as_dataset(data: Dataset | str | os.PathLike[str] | Any, data_options: dict[str, Any] | None = None, *,
               role: str = "data") -> Dataset:
    """A loaded dataset (``load_data`` with ``data_options``), ``data`` itself when it is one already, or arrays
    as a :meth:`Dataset.from_arrays` (``(x, y)``, ``(x,)`` or ``x``; of the data options only ``class_names``
    applies). Errors name ``role`` (the parameter: ``data``, ``calibration_data``, ``ood[0]``...)."""
    if (bound := _bound(data)) is not None:
        data = bound
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        from assay.data.loader import load_data

        return load_data(os.fspath(data), **(data_options or {}))
    arrays = _arrays(data, role)
    given = [k for k, v in (data_options or {}).items() if v is not None and k != "class_names"]
    if given:
        raise OptionError(f"{given[0]} does not apply to arrays in memory", where=given[0],
                          fix=f"drop {given[0]}: arrays are already inputs and labels (of the data options only "
                              "class_names applies)")
    try:
        return Dataset.from_arrays(*arrays, class_names=(data_options or {}).get("class_names"))
    except DataError as exc:
        raise DataError(exc.what, where=f"{role} ({exc.where})", fix=exc.fix) from None


def _arrays(data: Any, role: str) -> tuple[Any, ...]:
    """``(x,)`` or ``(x, y)`` from a tuple or a single array; OptionError naming the accepted types otherwise."""
    if isinstance(data, tuple):
        if len(data) in (1, 2):
            return data
        raise OptionError(f"{role} is a tuple of {len(data)} items; arrays are given as (x, y) or (x,)", where=role,
                          fix="for ids and metadata columns build assay.Dataset.from_arrays(x, y, ids=..., meta=...)")
    if isinstance(data, np.ndarray) or _is_torch(data, "tensor"):
        return (data,)
    hint = ""
    if isinstance(data, list):
        hint = ("; a list is not read as data (text inputs: pass (np.array(texts), labels); several data sets go "
                "to a setting that takes a list, such as ood=[...])")
    elif isinstance(data, Mapping):
        hint = "; for a dict of arrays pass (d['x'], d['y']) or assay.Dataset.from_arrays(**d)"
    raise OptionError(f"{role} is {_kind(data)}, which Assay cannot read as a data set", where=role,
                      fix=f"give {DATA_TYPES}{hint}")


#: Evaluation settings that name further data sets (strings in the evidence), and whether each takes a list.
DATA_SETTINGS: dict[str, bool] = {"ood": True, "unlabeled": True, "train_data": False, "nonmember_data": False}


def bind_data_settings(memory: InMemoryInputs, options: dict[str, Any],
                       data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` with every in-memory data set among :data:`DATA_SETTINGS` (``ood=[x_ood]``,
    ``unlabeled=(x,)``, ``train_data=(x, y)``) bound to a name in ``memory``; a single in-memory set given to a
    list setting counts as a list of one. ``data_options`` (``class_names``) apply to the training data only:
    OOD and unlabeled sets keep their own classes, as the pipeline reads them."""
    bound = dict(options)
    for key, many in DATA_SETTINGS.items():
        value = bound.get(key)
        if value is None or isinstance(value, str):
            continue
        if not many:
            bound[key] = memory.data(value, key, data_options)
            continue
        values = [value] if is_in_memory_data(value) else value
        if isinstance(values, list):
            bound[key] = [memory.data(v, f"{key}[{i}]") for i, v in enumerate(values)]
    return bound


def data_argument(data: Any, role: str, data_options: dict[str, Any] | None = None) -> Any:
    """A path (or None) unchanged, for the pipeline to read; in-memory data as a Dataset now, so that its errors
    name ``role`` (``data``, ``calibration_data``) rather than the pipeline's generic one."""
    if data is None or isinstance(data, (str, os.PathLike)):
        return data
    return as_dataset(data, data_options, role=role)


#: Parameters of the library's comparison and compression calls that name models or data sets.
_MODEL_PARAMETERS = ("baseline", "candidate")
_DATA_PARAMETERS = ("data", "calibration", "train_data")


def call_with_in_memory_inputs(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``validated_call(fn, ...)`` for :func:`assay.compare.run.compare`, ``select`` and
    :func:`assay.compress.run.compress`, whose parameters are typed as paths, with objects in memory accepted:
    ``baseline``, ``candidate`` and each of ``models`` may be a Model or a ``torch.nn.Module`` (named through
    :class:`InMemoryInputs` for the call), ``data``/``calibration``/``train_data`` arrays or a Dataset, and
    ``evaluate_options`` may hold in-memory OOD/unlabeled/training sets. ``model`` (compress, which rebuilds
    its variants from the file) must stay a path: an object there is an OptionError that says how to save it."""
    import inspect

    from assay._validation import validated_call

    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return validated_call(fn, *args, **kwargs)  # it names the missing or unknown parameter
    arguments = bound.arguments
    if is_in_memory_model(arguments.get("model")):
        raise OptionError(f"{fn.__name__} needs the model as a file or factory spec, not an object in memory",
                          where="model", fix="save it and pass the path: torch.jit.save(torch.jit.script(module), "
                          "'model.pt'), an ONNX export, or a factory 'package.module:callable' with weights=")
    if "model" in arguments:
        check_model_argument(arguments["model"])
    with InMemoryInputs() as memory:
        for key in _MODEL_PARAMETERS:
            if key in arguments:
                arguments[key] = memory.model(arguments[key], key)
        if isinstance(arguments.get("models"), (list, tuple)):
            arguments["models"] = [memory.model(m, f"models[{i}]") for i, m in enumerate(arguments["models"])]
        data_options = arguments.get("data_options")
        for key in _DATA_PARAMETERS:
            if key in arguments:
                arguments[key] = data_argument(arguments[key], key, data_options)
        if isinstance(arguments.get("evaluate_options"), dict):
            arguments["evaluate_options"] = bind_data_settings(memory, arguments["evaluate_options"], data_options)
        return validated_call(fn, *bound.args, **bound.kwargs)


class InMemoryInputs:
    """Names for one call's in-memory models and data sets, where a parameter or setting is typed as a path.

    Settings such as ``ood=[...]``, ``unlabeled=[...]`` and ``train_data=`` are recorded in the evidence as
    strings, and ``select``/``compare`` hand models on by name. Inside ``with InMemoryInputs() as memory:``,
    ``memory.model(net, "models[0]")`` and ``memory.data((x, y), "ood[0]")`` return a name such as
    ``<in-memory Net>`` or ``<in-memory ood[0]>`` that :func:`as_model` and :func:`as_dataset` resolve to the
    object (the evidence records that name); paths pass through unchanged. Outside the block the names are
    plain strings again. Data is read when bound, so its errors name the setting."""

    def __init__(self) -> None:
        self._named: dict[str, Any] = {}
        self._token: Token[Mapping[str, Any] | None] | None = None

    def __enter__(self) -> InMemoryInputs:
        outer = _BOUND.get()
        self._token = _BOUND.set(self._named if outer is None else ChainMap(self._named, dict(outer)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _BOUND.reset(self._token)
            self._token = None

    def model(self, value: Any, role: str) -> Any:
        """A path, spec or bundle unchanged; a name for a Model or ``torch.nn.Module``; OptionError for anything
        else."""
        if isinstance(value, (str, os.PathLike)):
            return value
        check_model_argument(value, role, also=", or an evidence bundle written by assay.evaluate(..., out=...)")
        if isinstance(value, Model):
            path = value.info.path
            label = path.removeprefix("<in-memory ").removesuffix(">") if path.startswith("<") else Path(path).name
        else:
            label = getattr(value, "original_name", type(value).__qualname__)
        return self._bind(label, value)

    def data(self, value: Any, role: str, data_options: dict[str, Any] | None = None) -> Any:
        """A path (or None) unchanged; in-memory data read now (errors name ``role``) and named; OptionError for
        anything else."""
        if value is None or isinstance(value, (str, os.PathLike)):
            return value
        dataset = as_dataset(value, data_options, role=role)
        return self._bind(role if dataset.name == "arrays" else dataset.name, dataset)

    def _bind(self, label: str, value: Any) -> str:
        name, k = f"<in-memory {label}>", 1
        while name in self._named and self._named[name] is not value:
            k += 1
            name = f"<in-memory {label} #{k}>"
        self._named[name] = value
        return name


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
