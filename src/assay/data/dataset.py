"""The in-memory dataset every loader produces."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from assay.errors import DataError, OptionError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IN_MEMORY_SOURCE", "DataNote", "Dataset", "Modality", "image_range_note", "plain_array", "reject_nonfinite",
           "reject_rows", "sorted_classes_note"]

Modality = Literal["image", "tabular", "text"]
#: ``Dataset.source`` of a dataset built from arrays in memory (no file to point at).
IN_MEMORY_SOURCE = "<in-memory arrays>"
_SHOWN_CLASSES = 20


def reject_rows(bad: np.ndarray, what: str, *, where: str, fix: str) -> None:
    """Raise a DataError if any row is flagged: how many, and the first few row numbers."""
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise DataError(f"{int(bad.sum())} {what} (first at rows {rows})", where=where, fix=fix)


def reject_nonfinite(x: np.ndarray, *, where: str) -> None:
    """Raise a DataError if any row of float inputs holds NaN or an infinity (scikit-learn refuses them too:
    a model's output on them is meaningless, and one NaN poisons every mean)."""
    if x.dtype != object and np.issubdtype(x.dtype, np.floating) and len(x):
        reject_rows(~np.isfinite(x.reshape(len(x), -1)).all(axis=1), "input(s) contain NaN or infinite values",
                    where=where, fix="clean or impute the inputs before evaluation")


class DataNote(str):
    """A note on how data was read: a sentence (it *is* the string) with a ``severity`` for reports —
    ``"warning"`` (the default: results may be wrong, e.g. images outside [0, 1], classes in sorted-name
    order) or ``"info"`` (Assay changed the data in a documented way, e.g. uint8 images divided by 255)."""

    severity: str

    def __new__(cls, text: str, severity: str = "warning") -> DataNote:
        note = super().__new__(cls, text)
        note.severity = severity
        return note


@dataclass(eq=False)
class Dataset:
    """Inputs, labels and per-sample metadata.

    ``x``: float32 array (images NCHW, expected in [0, 1]; tabular (N, F)) or an object array of strings (text).
    ``y``: int64 labels, or None for unlabeled data. ``ids``: one identifier per sample.
    ``meta``: per-sample columns for slicing (``meta_<name>`` in NPZ, extra CSV columns).
    ``notes``: human-readable sentences on how the data was read that a reader of the results must know
    (uint8 images scaled by 1/255, images outside [0, 1] kept as they are, classes indexed by sorted folder
    names, alpha channels dropped, ...); a :class:`DataNote` carries its severity (plain strings count as
    warnings). Loaders fill it; empty when nothing needed saying. Reports show it in their header.
    """

    x: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray
    modality: Modality
    name: str
    source: str
    class_names: list[str] | None = None
    meta: pd.DataFrame | None = None  # see the ``meta`` property below: None = no metadata columns
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Declares the storage behind the ``meta`` property (set by ``__init__`` through it; not a dataclass field).
        self._meta: pd.DataFrame | None
        n = len(self.x)
        if n == 0:
            raise DataError("the dataset is empty", where=self.source, fix="give a dataset with at least one sample")
        if self.y is not None and len(self.y) != n:
            raise DataError(
                f"{n} inputs but {len(self.y)} labels", where=self.source, fix="give one label per input"
            )
        if len(self.ids) != n:
            raise DataError(f"{n} inputs but {len(self.ids)} ids", where=self.source, fix="give one id per input")
        if self._meta is not None and len(self._meta) not in (0, n):
            raise DataError(
                f"{n} inputs but {len(self._meta)} metadata rows", where=self.source, fix="give one row per input"
            )
        if self._meta is not None and len(self._meta.columns) == 0:
            self._meta = None
        reject_nonfinite(self.x, where=self.source)

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def from_arrays(
        cls,
        x: Any,
        y: Any = None,
        *,
        class_names: Sequence[str] | None = None,
        meta: Mapping[str, Any] | pd.DataFrame | None = None,
        ids: Any = None,
        modality: Modality | None = None,
        name: str = "arrays",
    ) -> Dataset:
        """A dataset from arrays in memory (numpy arrays, torch tensors on any device, or lists), read by the
        rules of an ``.npz`` file (:func:`assay.data.npz.load_npz`) so that both give the same dataset:

        - ``x``: images (``ndim >= 3``, NCHW; uint8 is divided by 255 and a note says so, float values outside
          [0, 1] are kept with a warning), tabular rows ``(N, F)``, or text (one string per sample). ``modality``
          is inferred from that; given, it must agree. Inputs with NaN or infinities are refused.
        - ``y``: class indices (whole-number floats pass) or class-name strings (indexed by ``class_names``, else
          by sorted name with a note, as for tables); None for unlabeled data.
        - ``class_names``: one name per class index; ``meta``: per-sample columns for slicing (a dict of 1-D
          arrays or a DataFrame with one row per sample); ``ids``: unique sample ids (default ``0..N-1``).

        The fingerprint (cache key, paired comparisons) comes from the content, as for every dataset. A bad
        argument is a DataError whose ``where`` is the parameter's name. float32 numpy inputs are not copied.
        """
        from assay.data.npz import _class_names, _ids, _inputs, integer_labels  # npz imports this module

        if modality not in (None, "image", "tabular", "text"):
            raise OptionError(f"modality must be 'image', 'tabular' or 'text', not {modality!r}", where="modality",
                              fix="leave it out: it is inferred from x's shape and dtype")
        raw = plain_array(x, "x")
        if raw.ndim == 0 or len(raw) == 0:
            raise DataError(f"x holds no samples (shape {raw.shape})", where="x",
                            fix="give one row per sample: (N, C, H, W) images, (N, F) features or N strings")
        if raw.dtype == object and all(isinstance(v, str) for v in raw.reshape(-1)):
            raw = raw.astype(str)  # a list or object array of Python strings is text
        values, found, notes = _inputs(raw, where="x")
        if modality is not None and modality != found:
            raise DataError(f"x of shape {raw.shape} and dtype {raw.dtype} is {found} data, not {modality}",
                            where="modality", fix="images are (N, C, H, W) numbers, tabular rows (N, F) numbers "
                            "and text one string per sample; reshape x or leave modality out")
        reject_nonfinite(values, where="x")
        n = len(values)
        names = None
        if class_names is not None:
            if isinstance(class_names, str):
                raise DataError("class_names is one string, not a list of names", where="class_names",
                                fix="give one name per class index, e.g. ['cat', 'dog']")
            names = [str(c) for c in class_names]
        labels = None
        if y is not None:
            y_values = plain_array(y, "y")
            if y_values.ndim == 1 and (y_values.dtype.kind in "US" or (
                    y_values.dtype == object and any(isinstance(v, str) for v in y_values))):
                import pandas as pd

                from assay.data.tabular import _labels

                labels, names, label_notes = _labels(pd.Series(y_values, dtype=object), names, where="y")
                notes += label_notes
            else:
                labels = integer_labels(y_values, where="y")
            if len(labels) != n:
                raise DataError(f"{n} inputs (x) but {len(labels)} labels (y)", where="y",
                                fix="give one label per input")
        if names is not None:
            names = _class_names(np.array(names, dtype=str), labels, where="class_names")
        return cls(x=values, y=labels, ids=np.arange(n) if ids is None else _ids(plain_array(ids, "ids"), n, "ids"),
                   modality=found, name=str(name), source=IN_MEMORY_SOURCE, class_names=names,
                   meta=None if meta is None else _meta_frame(meta, n), notes=notes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (empty for text)."""
        return tuple(self.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over inputs, labels and ids: same content, same fingerprint."""
        h = hashlib.sha256()
        h.update(self.modality.encode())
        h.update(str(self.x.shape).encode())
        if self.x.dtype == object:
            for s in self.x:
                h.update(str(s).encode("utf-8"))
                h.update(b"\0")
        else:
            h.update(str(self.x.dtype).encode())
            h.update(np.ascontiguousarray(self.x).reshape(-1).view(np.uint8).data)  # no bytes copy of the inputs
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        h.update("\0".join(map(str, self.ids)).encode("utf-8"))
        return h.hexdigest()

    def validate_labels(self, num_classes: int) -> None:
        """Raise a DataError if any label lies outside [0, num_classes)."""
        if self.y is None:
            return
        bad = (self.y < 0) | (self.y >= num_classes)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            values = sorted(set(self.y[bad].tolist()))[:5]
            raise DataError(
                f"{int(bad.sum())} label(s) outside [0, {num_classes}) — values {values} at rows {rows}",
                where=self.source,
                fix=f"labels must be class indices 0..{num_classes - 1} matching the model's outputs",
            )

    def relabelled(self, class_names: Sequence[str]) -> Dataset:
        """The same samples with labels re-indexed to the order of ``class_names``, matched by name (every
        name of this dataset must be among them); e.g. a model whose outputs are classes 9..0."""
        if self.class_names is None:
            raise ValueError("relabelled() needs a dataset with class names")
        position = {str(name): i for i, name in enumerate(class_names)}
        mapping = np.array([position[name] for name in self.class_names], dtype=np.int64)
        return dataclasses.replace(self, y=None if self.y is None else mapping[self.y],
                                   class_names=[str(c) for c in class_names], notes=list(self.notes), meta=self._meta)

    def subset(self, index: np.ndarray) -> Dataset:
        """A new dataset holding the given rows (in that order)."""
        index = np.asarray(index)
        return Dataset(
            x=self.x[index],
            y=None if self.y is None else self.y[index],
            ids=self.ids[index],
            modality=self.modality,
            name=self.name,
            source=self.source,
            class_names=self.class_names,
            meta=None if self._meta is None else self._meta.iloc[index].reset_index(drop=True),
            notes=list(self.notes),
        )

    @property
    def metadata_columns(self) -> list[str]:
        """Names of the metadata columns (without building the frame)."""
        return [] if self._meta is None else [str(c) for c in self._meta.columns]


def plain_array(value: Any, where: str) -> np.ndarray:
    """``value`` as a numpy array: a torch tensor is detached and brought to the CPU (half/bfloat16 as float32,
    which numpy can hold), anything else goes through ``np.asarray``; a DataError names ``where`` when that
    fails (ragged lists)."""
    torch = sys.modules.get("torch")  # a tensor can only exist once torch was imported
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()
        return tensor.numpy()
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where} is not an array: {exc}", where=where,
                        fix="give a numpy array, a torch tensor or a list with one entry per sample") from None


def _meta_frame(meta: Any, n: int) -> pd.DataFrame | None:
    """``Dataset.from_arrays``'s ``meta`` (a dict of 1-D columns or a DataFrame) as a frame of ``n`` rows."""
    import pandas as pd

    if isinstance(meta, pd.DataFrame):
        if len(meta) != n:
            raise DataError(f"meta has {len(meta)} rows for {n} inputs", where="meta", fix="give one row per input")
        return meta.set_axis([str(c) for c in meta.columns], axis=1).reset_index(drop=True)
    if not isinstance(meta, Mapping):
        raise DataError(f"meta must be a dict of columns or a pandas DataFrame, not {type(meta).__name__}",
                        where="meta", fix="e.g. meta={'region': regions} with one value per input")
    columns: dict[str, np.ndarray] = {}
    for key, value in meta.items():
        column = plain_array(value, f"meta[{key!r}]")
        if column.ndim != 1 or len(column) != n:
            raise DataError(f"metadata column {key!r} has shape {column.shape}; expected ({n},)",
                            where=f"meta[{key!r}]", fix="give one value per input for each column")
        columns[str(key)] = column.astype(str) if column.dtype.kind in "US" else column
    return pd.DataFrame(columns, index=pd.RangeIndex(n)) if columns else None


def _get_meta(self: Dataset) -> pd.DataFrame:
    """Per-sample metadata columns as a DataFrame (an empty frame with one row per sample when there are
    none). Built on first use: pandas (and the pyarrow it loads, ~100 MiB) is imported only by runs that
    read metadata, not by every evaluation."""
    if self._meta is None:
        import pandas as pd

        self._meta = pd.DataFrame(index=pd.RangeIndex(len(self.x)))
    return self._meta


def _set_meta(self: Dataset, value: pd.DataFrame | None) -> None:
    self._meta = value


# A property over the dataclass field: ``Dataset(meta=...)`` and ``ds.meta = frame`` still work, but the empty
# frame of a dataset without metadata is only made (and pandas only imported) when someone reads it.
Dataset.meta = property(_get_meta, _set_meta)  # type: ignore[assignment]


def image_range_note(x: np.ndarray) -> str | None:
    """A warning when float images leave [0, 1], the range Assay feeds models (normalization belongs inside
    the model, as RobustBench requires); None when they stay inside. The values are not changed: a model
    that normalizes 0-255 inputs itself is right to get them, and we cannot tell the two apart."""
    if x.size == 0:
        return None
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo >= 0.0 and hi <= 1.0:
        return None
    return (
        f"image values range over [{lo:.4g}, {hi:.4g}], outside [0, 1]; they were given to the model unchanged. "
        "Assay expects images in [0, 1] with any normalization inside the model: unless the model rescales "
        "its inputs itself, rescale them (e.g. divide 0-255 data by 255); corruption severities and attack "
        "budgets (eps) assume [0, 1]"
    )


def sorted_classes_note(names: Sequence[str], by: str) -> str:
    """The note that classes were indexed in an order we chose (a model trained with another order scores
    near chance, silently); ``by`` says what was sorted."""
    shown = list(names[:_SHOWN_CLASSES])
    more = f" ... ({len(names)} in all)" if len(names) > _SHOWN_CLASSES else ""
    return (
        f"classes were indexed by {by}: {shown}{more}; if the model's outputs are in another order "
        "pass --class-names (class_names= in Python)"
    )
