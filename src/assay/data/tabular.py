"""Load a CSV or Parquet table into a tabular or text Dataset.

Column roles, in order:

- label: ``label_col`` (default ``"label"``). Integer (or whole-number float) labels are class indices;
  string labels become indices into ``class_names`` — the given list, or else the sorted unique labels
  (``Dataset.notes`` then records that order: a model trained with another order would score near chance).
- ids: an ``id`` column when present (values must be unique), else ``0..N-1``.
- text: ``text_col`` when given; otherwise the table is text when it has no numeric feature column and
  exactly one non-numeric column besides the label and id. ``x`` is then an object array of str.
- features: ``feature_cols`` when given, else every numeric column except label and id; cast to float32.
  Missing values are an error (impute first): we never guess a fill value.
- meta: every remaining column (kept for slicing, e.g. a ``region`` or ``device`` column).

Tables are not images: values are never rescaled or range-checked. A Parquet footer's row count and
uncompressed sizes are checked against :func:`assay.data.limits.memory_limit` before reading (a footer can
claim 10**13 rows, which pyarrow would try to allocate); a table that still does not fit in memory while
being read is a ``DataError``, not a crash.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assay.data.dataset import Dataset, Modality, reject_rows, sorted_classes_note
from assay.data.limits import require_fits
from assay.data.npz import integer_labels, require_unique_ids
from assay.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ID_COLUMN", "TABLE_EXTENSIONS", "load_table", "read_table"]

ID_COLUMN = "id"
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV (pandas) or Parquet (pyarrow) file, turning parse failures into DataErrors."""
    import pandas as pd

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise DataError("no such file", where=where, fix="check the path to the table")
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise DataError(
            f"unsupported table extension {suffix!r}", where=where, fix=f"use one of {list(TABLE_EXTENSIONS)}"
        )
    if suffix != ".csv":
        _require_parquet_fits(path, where)
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path, engine="pyarrow")
    except MemoryError as exc:  # includes pyarrow's ArrowMemoryError
        raise DataError(
            f"the table does not fit in the free memory ({type(exc).__name__}: {exc})",
            where=where,
            fix="evaluate a smaller table (e.g. a random subset of the rows) or use a machine with more memory",
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            "the CSV file is empty", where=where, fix="write a header row and at least one data row"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise DataError(
            f"cannot parse the {kind} file ({type(exc).__name__}: {exc})",
            where=where,
            fix=f"check that it is a valid {kind} file (CSV: UTF-8, comma-separated, one header row)",
        ) from exc
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _require_parquet_fits(path: Path, where: str) -> None:
    """Check the footer's declared size (rows x columns x 8 bytes, or the uncompressed column chunks if
    larger) against the memory limit before pyarrow allocates anything."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"cannot parse the Parquet file ({type(exc).__name__}: {exc})",
            where=where,
            fix="check that it is a valid Parquet file",
        ) from exc
    uncompressed = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    needed = max(uncompressed, metadata.num_rows * metadata.num_columns * 8)
    require_fits(
        needed,
        what=f"a table of {metadata.num_rows:,} rows x {metadata.num_columns} columns (as its footer declares)",
        where=where,
        fix="evaluate a smaller table (e.g. a random subset of the rows) or use a machine with more memory",
    )


def load_table(
    path: str | os.PathLike[str],
    *,
    label_col: str | None = None,
    text_col: str | None = None,
    feature_cols: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a ``.csv`` / ``.parquet`` / ``.pq`` table; see the module docstring for column roles."""
    path = Path(path)
    where = str(path)
    frame = read_table(path)
    if len(frame) == 0:
        raise DataError("the table has no rows", where=where, fix="give a table with at least one row")
    return dataset_from_frame(
        frame,
        label_col=label_col,
        text_col=text_col,
        feature_cols=feature_cols,
        class_names=class_names,
        name=name or path.stem,
        source=where,
    )


def dataset_from_frame(
    frame: pd.DataFrame,
    *,
    label_col: str | None = None,
    text_col: str | None = None,
    feature_cols: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    name: str,
    source: str,
) -> Dataset:
    """The column-role logic of :func:`load_table`, on a DataFrame already in memory."""
    where = source
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1).reset_index(drop=True)
    if text_col is not None and feature_cols is not None:
        raise DataError(
            "give either a text column or feature columns, not both",
            where=where,
            fix="drop --text-col or --feature-cols",
        )
    label_col = "label" if label_col is None else label_col
    _require_columns([label_col], columns, where, role="label column", flag="--label-col")
    reserved = {label_col, ID_COLUMN}

    if feature_cols is not None:
        feature_cols = [str(c) for c in feature_cols]
        _require_columns(feature_cols, columns, where, role="feature column", flag="--feature-cols")
        clash = [c for c in feature_cols if c in reserved]
        if clash:
            raise DataError(
                f"feature columns {clash} are also the label or id column",
                where=where,
                fix="drop them from --feature-cols",
            )
    if text_col is not None:
        _require_columns([text_col], columns, where, role="text column", flag="--text-col")
        if text_col in reserved:
            raise DataError(
                f"the text column {text_col!r} is also the label or id column",
                where=where,
                fix="pick a different --text-col",
            )

    others = [c for c in columns if c not in reserved]
    numeric = [c for c in others if _is_numeric(frame[c])]
    non_numeric = [c for c in others if c not in numeric]
    if text_col is None and feature_cols is None and not numeric and len(non_numeric) == 1:
        text_col = non_numeric[0]

    modality: Modality
    if text_col is not None:
        x = _text(frame[text_col], where)
        used = [text_col]
        modality = "text"
    else:
        used = list(feature_cols) if feature_cols is not None else numeric
        if not used:
            raise DataError(
                f"no numeric feature columns (columns: {columns})",
                where=where,
                fix="encode features as numbers, name them with --feature-cols, or pick the text with --text-col",
            )
        x = _features(frame, used, where)
        modality = "tabular"

    y, names, notes = _labels(frame[label_col], class_names, where=f"{where} [column {label_col!r}]")
    ids = _ids(frame[ID_COLUMN], where) if ID_COLUMN in frame.columns else np.arange(len(frame))
    meta_cols = [c for c in others if c not in used]
    return Dataset(
        x=x,
        y=y,
        ids=ids,
        modality=modality,
        name=name,
        source=source,
        class_names=names,
        meta=frame[meta_cols].reset_index(drop=True),
        notes=notes,
    )


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype)


def _require_columns(wanted: Sequence[str], columns: list[str], where: str, *, role: str, flag: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(
            f"{role} {missing[0]!r} not found" + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
            + f"; columns present: {columns}",
            where=where,
            fix=f"pass {flag} with one of the columns present",
        )


def _features(frame: pd.DataFrame, cols: list[str], where: str) -> np.ndarray:
    non_numeric = [c for c in cols if not _is_numeric(frame[c])]
    if non_numeric:
        raise DataError(
            f"feature columns {non_numeric} are not numeric",
            where=where,
            fix="encode them as numbers first (e.g. one-hot), "
            "or leave them out of --feature-cols to keep them as metadata",
        )
    block = frame[cols]
    missing = block.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing.any(axis=1))
        bad_cols = [c for c, bad in zip(cols, missing.any(axis=0)) if bad]
        raise DataError(
            f"{int(missing.sum())} missing feature value(s) in {len(rows)} row(s) "
            f"(first rows {rows[:5].tolist()}, columns {bad_cols})",
            where=where,
            fix="impute the missing values (e.g. sklearn.impute.SimpleImputer) or drop those rows before evaluation",
        )
    return block.to_numpy(dtype=np.float32)


def _text(series: pd.Series, where: str) -> np.ndarray:
    reject_rows(series.isna().to_numpy(), f"missing text value(s) in column {series.name!r}", where=where,
                fix="fill or drop the rows without text")
    return np.array([str(v) for v in series], dtype=object)


def _labels(
    series: pd.Series, class_names: Sequence[str] | None, *, where: str
) -> tuple[np.ndarray, list[str] | None, list[str]]:
    """Class indices, class names, and the note on the class order when we chose it."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(series.cat.categories.dtype)
    reject_rows(series.isna().to_numpy(), "label(s) are missing", where=where,
                fix="drop the unlabeled rows or give every row a label")
    names = None if class_names is None else [str(c) for c in class_names]
    notes: list[str] = []
    if _is_numeric(series):
        y = integer_labels(series.to_numpy(), where=where)
        if names is not None and (y.min() < 0 or y.max() >= len(names)):
            raise DataError(
                f"labels range over [{int(y.min())}, {int(y.max())}] but {len(names)} class names are given",
                where=where,
                fix="give one class name per class index 0..C-1",
            )
        return y, names, notes
    values = np.array([str(v) for v in series], dtype=object)
    if names is None:
        names = sorted(set(values.tolist()))
        notes.append(sorted_classes_note(names, "sorted label values"))
    index_of = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(values.tolist()) - index_of.keys())
    if unknown:
        raise DataError(
            f"labels {unknown[:5]} are not among the given class names {names}",
            where=where,
            fix="use the model's class names as labels, or pass integer class indices",
        )
    return np.array([index_of[v] for v in values], dtype=np.int64), names, notes


def _ids(series: pd.Series, where: str) -> np.ndarray:
    import pandas as pd

    if series.isna().any():
        raise DataError(f"the {ID_COLUMN!r} column has missing values", where=where, fix="give every row an id")
    if _is_numeric(series) and pd.api.types.is_integer_dtype(series.dtype):
        ids = series.to_numpy(dtype=np.int64)
    else:
        ids = np.array([str(v) for v in series])
    require_unique_ids(
        ids, where=where, fix=f"make the {ID_COLUMN!r} column unique, or rename it if it is not a sample identifier"
    )
    return ids
