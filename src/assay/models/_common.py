"""Helpers shared by the ONNX and torch loaders: hashing, class names, shape checks, short messages."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from assay._hashing import file_sha256
from assay.errors import UserError

__all__ = [
    "check_static_shape",
    "describe_error",
    "describe_shape",
    "dry_run",
    "first_line",
    "resolve_class_names",
    "resolve_num_classes",
    "run_in_fixed_batches",
    "sample_batch",
    "sha256_file",
    "short_list",
    "static_shape_mismatch",
]

T = TypeVar("T")


def sha256_file(path: str | Path, extra: Iterable[str | Path] = ()) -> str:
    """sha256 of a file's bytes, followed by the bytes of ``extra`` files (e.g. ONNX external data)."""
    return file_sha256(path, *extra)


def short_list(names: Sequence[str], limit: int = 8) -> str:
    """``'a', 'b', 'c' (and 12 more)`` — enough names to recognise the right one, not a wall of text."""
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f" (and {len(names) - limit} more)"
    return shown or "(none)"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The informative line of an exception message (TorchScript puts it last, after a traceback)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[-1] if "Traceback of TorchScript" in str(exc) else lines[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(exc: BaseException) -> str:
    """One line for a report of why something failed: a UserError's own message, otherwise the exception
    type and the first line of its message."""
    if isinstance(exc, UserError):
        return exc.what
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else '(no message)'}"


def describe_shape(shape: Sequence[int | None]) -> str:
    """``(1, 28, 28)``; free dimensions print as ``?``."""
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def static_shape_mismatch(model_shape: Sequence[int | None], data_shape: Sequence[int]) -> bool:
    """True when a known per-sample model shape (batch dim excluded) contradicts the data's."""
    if len(model_shape) != len(data_shape):
        return True
    return any(m is not None and m != d for m, d in zip(model_shape, data_shape, strict=True))


def sample_batch(sample: np.ndarray, n: int = 2) -> np.ndarray:
    """The first ``n`` rows of a sample: a dry run needs a batch, not the data set."""
    return np.asarray(sample)[:n]


def resolve_num_classes(*, found: int | None, given: int | None, where: str, how: str) -> int:
    """The number of classes from the model (``found``) or the caller (``given``); they must agree."""
    if found is not None and given is not None and found != given:
        raise UserError(
            f"the model has {found} outputs per input but num_classes={given} was given",
            where=where,
            fix="drop num_classes or give the model's number of classes",
        )
    result = found if found is not None else given
    if result is None:
        raise UserError(
            f"cannot tell how many classes the model has ({how})",
            where=where,
            fix="pass a data sample (sample=...) so Assay can run the model once, or num_classes=...",
        )
    if result < 2:
        raise UserError(
            f"the model returns {result} score(s) per input; Assay evaluates classifiers with at least 2 classes",
            where=where,
            fix="export a model that returns one logit per class (for a binary sigmoid model, "
            "return [-z/2, z/2] or [0, z])",
        )
    return int(result)


def resolve_class_names(given: Sequence[str] | None, stored: Sequence[str] | None, num_classes: int,
                        where: str) -> list[str]:
    """Given names, else names stored in the model file, else ``"0" .. "C-1"``; length must match."""
    for found, origin in ((given, "class_names"), (stored, "the model's stored class_names")):
        if found is None:
            continue
        names = [str(n) for n in found]
        if len(names) != num_classes:
            raise UserError(
                f"{origin} has {len(names)} names but the model has {num_classes} classes",
                where=where,
                fix="give exactly one name per model output, in output order",
            )
        return names
    return [str(i) for i in range(num_classes)]


def check_static_shape(model_shape: Sequence[int | None], model_dtype: str, sample: np.ndarray,
                       where: str) -> None:
    """UserError naming both shapes when the model's static input shape contradicts the data's."""
    sample = np.asarray(sample)
    if model_dtype == "string" or sample.dtype == object or len(model_shape) <= 1:
        return  # text, or a model whose per-sample shape is unknown
    expected, got = list(model_shape[1:]), list(sample.shape[1:])
    if static_shape_mismatch(expected, got):
        raise UserError(
            f"the model expects inputs of shape {describe_shape(expected)} but the data has {describe_shape(got)}",
            where=where,
            fix="evaluate the model on data of the shape it was trained on (check resizing, channel order "
            "NCHW, and flattening)",
        )


def dry_run(fn: Callable[[np.ndarray], T], batch: np.ndarray, where: str) -> T:
    """Run ``fn`` on a small batch; a runtime failure (shape, dtype) becomes a UserError naming the data."""
    try:
        return fn(batch)
    except UserError:
        raise
    except Exception as exc:
        shape = describe_shape(list(np.asarray(batch).shape[1:]))
        detail = first_line(exc)
        if not detail.startswith(type(exc).__name__):
            detail = f"{type(exc).__name__}: {detail}"
        raise UserError(
            f"the model fails on inputs of shape {shape} (dtype {np.asarray(batch).dtype}): {detail}",
            where=where,
            fix="check that the data matches what the model was trained on (shape, channel order NCHW, dtype)",
        ) from exc


def run_in_fixed_batches(run: Callable[[Any], Sequence[Any]], x: Any, batch: int | None,
                         concatenate: Callable[[list[Any]], Any] = np.concatenate) -> list[Any]:
    """Outputs of ``run`` on ``x`` for a graph exported with a fixed batch size ``batch``.

    ``run`` maps a batch to a sequence of outputs (arrays, or None for an output it did not compute).
    When ``len(x)`` differs from ``batch``, ``x`` is cut into chunks of exactly ``batch`` rows, the last
    one padded by repeating its final row; every output is trimmed back to the real rows and the chunks
    are joined. Works for numpy arrays and, with ``concatenate=torch.cat``, for tensors (gradients flow:
    the padding rows are dropped before anything reads them).
    """
    if batch is None or len(x) in (0, batch):
        return list(run(x))
    pieces: list[list[Any]] = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = concatenate([chunk] + [chunk[-1:]] * (batch - n))
        pieces.append([None if out is None else out[:n] for out in run(chunk)])
    return [None if column[0] is None else concatenate(list(column)) for column in zip(*pieces, strict=True)]
