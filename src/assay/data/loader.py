"""One entry point, :func:`load_data`, that picks the loader from the spec.

Dispatch, in order:

1. a built-in name — ``digits`` (the test split), ``digits:train``, ``digits:test``, or any of these
   prefixed with ``builtin:``. Built-in names win over a same-named file in the working directory;
   write ``./digits`` to mean the path.
2. an existing directory — an image folder ``ROOT/<class>/<image>``;
3. an existing file by extension — ``.npz``, ``.csv``, ``.parquet`` / ``.pq`` (case-insensitive).

Options only apply where they make sense (``label_col``/``text_col``/``feature_cols`` to tables,
``image_size`` to image folders, ``class_names`` to tables and image folders); giving one that does not
apply is an OptionError rather than being silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from assay.data.builtin import BUILTIN_DATASETS, is_builtin, load_builtin
from assay.data.dataset import Dataset
from assay.data.images import load_image_folder
from assay.data.npz import load_npz
from assay.data.tabular import TABLE_EXTENSIONS, load_table
from assay.errors import DataError, OptionError

__all__ = ["SUPPORTED_EXTENSIONS", "load_data"]

SUPPORTED_EXTENSIONS = (".npz", *TABLE_EXTENSIONS)
_BUILTIN_PREFIX = "builtin:"


def load_data(
    spec: str | os.PathLike[str],
    *,
    label_col: str | None = None,
    text_col: str | None = None,
    feature_cols: Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a dataset from a built-in name, an image folder, or an ``.npz`` / ``.csv`` / ``.parquet`` file.

    ``name`` overrides the dataset name (default: the file stem, folder name, or built-in spec).
    ``class_names`` fixes the class order for string labels / class folders (e.g. the model's classes);
    without it, classes are the sorted unique labels / sorted subfolder names.
    """
    text = os.fspath(spec)
    options = {
        "label_col": label_col,
        "text_col": text_col,
        "feature_cols": feature_cols,
        "image_size": image_size,
        "class_names": class_names,
    }

    builtin = text[len(_BUILTIN_PREFIX) :] if text.startswith(_BUILTIN_PREFIX) else text
    if is_builtin(builtin):
        _reject_options(options, allowed=(), kind="a built-in dataset", where=builtin)
        return load_builtin(builtin, name=name)

    path = Path(text)
    if not path.exists():
        raise DataError(
            "no such file or directory",
            where=text,
            fix=f"check the path, or use a built-in dataset: {', '.join(BUILTIN_DATASETS)}",
        )
    if path.is_dir():
        _reject_options(options, allowed=("image_size", "class_names"), kind="an image folder", where=text)
        return load_image_folder(path, image_size=image_size, class_names=class_names, name=name)

    suffix = path.suffix.lower()
    if suffix == ".npz":
        _reject_options(options, allowed=(), kind="an .npz file", where=text)
        return load_npz(path, name=name)
    if suffix in TABLE_EXTENSIONS:
        _reject_options(
            options, allowed=("label_col", "text_col", "feature_cols", "class_names"), kind="a table", where=text
        )
        return load_table(
            path,
            label_col=label_col,
            text_col=text_col,
            feature_cols=feature_cols,
            class_names=class_names,
            name=name,
        )
    raise DataError(
        f"unsupported data file extension {path.suffix!r}",
        where=text,
        fix=f"give an image folder or a file ending in {', '.join(SUPPORTED_EXTENSIONS)}",
    )


def _reject_options(options: Mapping[str, object], *, allowed: tuple[str, ...], kind: str, where: str) -> None:
    given = [key for key, value in options.items() if value is not None and key not in allowed]
    if given:
        flags = _flags(given)
        raise OptionError(
            f"{flags} cannot be used with {kind}",
            where=where,
            fix=f"drop {flags}" + (f"; {kind} takes only {_flags(allowed)}" if allowed else ""),
        )


def _flags(keys: Sequence[str]) -> str:
    return ", ".join("--" + key.replace("_", "-") for key in keys)
