"""Data integrity: files that cannot be read, inconsistent images, broken columns, class balance, train/test
shift and personal data.

:func:`integrity_findings` takes the training data and optionally the test data, each a
:class:`~assay.data.dataset.Dataset`, a pandas DataFrame (a raw table: NaNs allowed, which a Dataset refuses),
or a path (an image folder — scanned file by file with :func:`scan_image_folder`, so a corrupt file is listed
instead of stopping the audit — or a ``.csv``/``.parquet`` table read raw, or anything
:func:`assay.data.loader.load_data` reads). It returns :class:`IntegrityFindings`: ``findings`` (dicts
``{severity, what, where, count}``, severity ``info``/``warning``/``critical`` as in the evidence schema) and
``tables`` (DataFrames by name). What is checked:

* files (image folders): zero-byte, unreadable (not an image), truncated or corrupt (the full decode fails),
  and images above Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``; refused from the header,
  never decoded) — ``critical``, listed in ``tables["files"]``; colour modes and sizes that differ across
  images — ``warning`` (``tables["images"]``). A Dataset's loading notes (``Dataset.notes``: alpha dropped,
  grayscale copied to RGB, values outside [0, 1], ...) become findings with their own severity.
* columns (tables): missing values, constant columns, identical columns (``tables["columns"]``).
* class balance: counts and shares per class and split, imbalance ratio (largest / smallest non-empty class;
  ``warning`` at ``imbalance_ratio`` or more), declared classes without items (``tables["class_balance"]``).
* label shift: Pearson chi-squared test of homogeneity of the train and test class counts
  (:func:`assay.stats.drift.class_mix_test`, always the chi-squared branch here, since an audit compares two
  fixed samples) with the Jensen-Shannon distance as effect size (``tables["label_shift"]``).
* feature shift: a two-sample Kolmogorov-Smirnov test per feature on histograms over the training data's
  quantile bins (or one bin per distinct value when there are at most ``bins`` of them, where the statistic is
  exact) — :func:`assay.stats.drift.binned_ks_test` — with Benjamini-Hochberg at ``alpha`` over the features
  (:func:`assay.stats.multiple_testing.benjamini_hochberg`), as the monitor does (Rabanser et al. 2019).
  Features: table columns; for images per-channel mean, standard deviation, minimum and maximum of each
  image; for text length in characters and words and the shares of digits and upper-case letters; or
  embeddings given as ``train_features``/``test_features`` (``tables["feature_shift"]``).
* PII (:func:`assay.audit.pii.find_pii`) in text inputs and string columns — ``warning``, masked
  (``tables["pii"]``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.data.dataset import Dataset
from assay.errors import DataError, OptionError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FILE_STATUSES", "IntegrityFindings", "integrity_findings", "scan_image_folder"]

#: What :func:`scan_image_folder` says of a file; all but ``ok`` are problems.
FILE_STATUSES = ("ok", "zero_byte", "unreadable", "corrupt", "too_large")
_SEVERITIES = ("info", "warning", "critical")


@dataclass
class IntegrityFindings:
    """``findings``: ``{severity, what, where, count}`` dicts, worst first; ``tables``: DataFrames by name
    (files, images, columns, class_balance, label_shift, feature_shift, pii — those that apply)."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def add(self, severity: str, what: str, where: str | None = None, count: int | None = None) -> None:
        self.findings.append({"severity": severity, "what": what, "where": where, "count": count})


# ------------------------------------------------------------------------------------------ image folders


def scan_image_folder(root: str | os.PathLike[str], *, max_pixels: int | None = None) -> pd.DataFrame:
    """One row per file under ``root/<class>/`` (or directly in ``root``) with an image extension: ``path``
    (relative), ``label`` (the class folder, None for loose files), ``status`` (:data:`FILE_STATUSES`),
    ``mode``, ``width``, ``height``, ``bytes``, ``detail``. Each image's header is read first; one with more
    pixels than ``max_pixels`` (default ``PIL.Image.MAX_IMAGE_PIXELS``) is ``too_large`` and never decoded
    (the decompression-bomb bound); the others are fully decoded so truncated files are caught."""
    import pandas as pd
    from PIL import Image

    from assay.data.images import IMAGE_EXTENSIONS

    folder = Path(root)
    if not folder.is_dir():
        raise DataError("no such directory", where=str(folder), fix="give a folder laid out as ROOT/<class>/<image>")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    rows = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        label = relative.parts[0] if len(relative.parts) > 1 else None
        row: dict[str, Any] = {"path": relative.as_posix(), "label": label, "status": "ok", "mode": None,
                               "width": None, "height": None, "bytes": path.stat().st_size, "detail": ""}
        rows.append(row)
        if row["bytes"] == 0:
            row.update(status="zero_byte", detail="the file is empty")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    row.update(mode=image.mode, width=image.width, height=image.height)
                    if limit is not None and image.width * image.height > limit:
                        row.update(status="too_large", detail=f"{image.width}x{image.height} = "
                                   f"{image.width * image.height:,} pixels > {limit:,} (decompression-bomb bound)")
                        continue
                    image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            row.update(status="too_large", detail=f"Pillow: {exc}")
        except Image.UnidentifiedImageError as exc:
            row.update(status="unreadable", detail=f"not an image Pillow can identify ({exc})")
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data (PNG CRC errors are SyntaxError)
            row.update(status="corrupt", detail=f"{type(exc).__name__}: {exc}")
    columns = ["path", "label", "status", "mode", "width", "height", "bytes", "detail"]
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------------------------ inputs


@dataclass
class _Side:
    """One split, reduced to what the checks need."""

    split: str
    modality: str
    labels: np.ndarray | None = None  # class names as str
    declared: list[str] | None = None  # declared classes (may include empty ones)
    features: np.ndarray | None = None
    feature_names: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None  # columns to check (tables) and to scan for PII
    texts: np.ndarray | None = None
    files: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    shape: tuple[int, ...] | None = None


def _as_side(data: Any, split: str, label_column: str) -> _Side:
    import pandas as pd

    if isinstance(data, Dataset):
        return _from_dataset(data, split)
    if isinstance(data, pd.DataFrame):
        return _from_frame(data, split, label_column)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            return _from_folder(path, split)
        if path.suffix.lower() in (".csv", ".parquet", ".pq"):
            from assay.data.tabular import read_table

            return _from_frame(read_table(path), split, label_column)
        from assay.data.loader import load_data

        return _from_dataset(load_data(path), split)
    raise DataError(f"cannot audit a {type(data).__name__} as {split} data", where=split,
                    fix="pass a Dataset, a pandas DataFrame, or a path to an image folder or table")


def _class_labels(y: np.ndarray, names: list[str] | None) -> np.ndarray:
    if names is not None and len(y) and int(y.max()) < len(names):
        return np.asarray(names, dtype=object)[y].astype(str)
    return y.astype(str)


def _from_dataset(data: Dataset, split: str) -> _Side:
    import pandas as pd

    side = _Side(split=split, modality=data.modality, notes=list(data.notes), shape=data.input_shape)
    if data.y is not None:
        side.labels = _class_labels(data.y, data.class_names)
        side.declared = list(data.class_names) if data.class_names is not None else None
    if data.modality == "image":
        side.features, side.feature_names = _image_features(data.x)
    elif data.modality == "text":
        side.texts = np.asarray(data.x, dtype=object)
        side.features, side.feature_names = _text_features(side.texts)
    else:
        side.feature_names = [f"feature_{j}" for j in range(data.x.shape[1])]
        side.features = np.asarray(data.x, dtype=np.float64)
        side.frame = pd.DataFrame(side.features, columns=side.feature_names)
    if data.meta is not None:
        meta = data.meta.drop(columns=[c for c in ("path",) if c in data.meta.columns])
        side.frame = meta if side.frame is None else pd.concat([side.frame, meta.reset_index(drop=True)], axis=1)
    return side


def _from_frame(frame: pd.DataFrame, split: str, label_column: str) -> _Side:
    import pandas as pd

    side = _Side(split=split, modality="tabular", frame=frame)
    rest = frame
    if label_column in frame.columns:
        labels = frame[label_column]
        side.labels = labels.dropna().astype(str).to_numpy()
        rest = frame.drop(columns=[label_column])
    numeric = [c for c in rest.columns if pd.api.types.is_numeric_dtype(rest[c]) and not
               pd.api.types.is_bool_dtype(rest[c])]
    side.feature_names = [str(c) for c in numeric]
    side.features = rest[numeric].to_numpy(dtype=np.float64) if numeric else None
    side.shape = (len(numeric),)
    return side


def _from_folder(folder: Path, split: str) -> _Side:
    files = scan_image_folder(folder)
    side = _Side(split=split, modality="image", files=files)
    good = files[files["status"] == "ok"]
    if good["label"].notna().any():
        side.labels = good["label"].dropna().astype(str).to_numpy()
    return side


def _image_features(x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per image and channel: mean, standard deviation, minimum, maximum (in blocks of about 32 MB of float64
    temporaries, so a large image set is never copied whole)."""
    channels = x.shape[1]
    per_image = max(1, int(np.prod(x.shape[1:])))
    block = max(1, (32 * 2**20) // (8 * per_image))
    out = np.empty((len(x), 4 * channels), dtype=np.float64)
    for start in range(0, len(x), block):
        flat = x[start:start + block].reshape(-1, channels, per_image // channels)
        out[start:start + len(flat)] = np.concatenate(
            [flat.mean(axis=2, dtype=np.float64), flat.std(axis=2, dtype=np.float64), flat.min(axis=2),
             flat.max(axis=2)], axis=1)
    names = [f"channel{c}_{stat}" for stat in ("mean", "std", "min", "max") for c in range(channels)]
    return out, names


def _text_features(texts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    rows = []
    for text in texts:
        s = str(text)
        n = max(len(s), 1)
        rows.append((len(s), len(s.split()), sum(ch.isdigit() for ch in s) / n, sum(ch.isupper() for ch in s) / n))
    return np.asarray(rows, dtype=np.float64), ["characters", "words", "digit_share", "upper_share"]


# ------------------------------------------------------------------------------------------ checks


def _check_files(side: _Side, out: IntegrityFindings) -> None:
    import pandas as pd

    if side.files is None:
        return
    files = side.files
    bad = files[files["status"] != "ok"]
    if len(bad):
        table = bad[["path", "status", "detail"]].assign(split=side.split)
        out.tables["files"] = pd.concat([out.tables["files"], table]) if "files" in out.tables else table
        for status, group in bad.groupby("status", sort=True):
            shown = ", ".join(group["path"].head(3))
            out.add("critical", f"{side.split}: {len(group)} image file(s) {status.replace('_', '-')}, skipped "
                    f"(first: {shown})", where=side.split, count=len(group))
    good = files[files["status"] == "ok"]
    if len(good):
        kinds = good.groupby(["mode", "width", "height"]).size().rename("count").reset_index().assign(split=side.split)
        out.tables["images"] = pd.concat([out.tables["images"], kinds]) if "images" in out.tables else kinds
        modes = sorted(good["mode"].unique())
        sizes = good.groupby(["width", "height"]).ngroups
        if len(modes) > 1:
            out.add("warning", f"{side.split}: images have {len(modes)} colour modes ({', '.join(modes)})",
                    where=side.split, count=len(modes))
        if sizes > 1:
            out.add("warning", f"{side.split}: images come in {sizes} sizes (resizing needed)", where=side.split,
                    count=sizes)


def _check_notes(side: _Side, out: IntegrityFindings) -> None:
    for note in side.notes:
        severity = getattr(note, "severity", "warning")
        out.add(severity if severity in _SEVERITIES else "warning", f"{side.split}: {note}", where=side.split)


def _check_columns(side: _Side, out: IntegrityFindings) -> None:
    import pandas as pd

    frame = side.frame
    if frame is None or frame.shape[1] == 0:
        return
    rows = []
    for name in frame.columns:
        column = frame[name]
        missing = int(column.isna().sum())
        if missing:
            rows.append((str(name), "missing", missing, f"{missing} of {len(column)} values missing"))
        if column.nunique(dropna=False) <= 1:
            rows.append((str(name), "constant", len(column), f"every value is {column.iloc[0]!r}"))
    hashes: dict[int, list[Any]] = {}
    for name in frame.columns:
        key = int(pd.util.hash_pandas_object(frame[name], index=False).sum())
        hashes.setdefault(key, []).append(name)
    for names in hashes.values():
        first = names[0]
        for other in names[1:]:
            if frame[first].equals(frame[other]):
                rows.append((str(other), "duplicate", len(frame), f"identical to column {first!r}"))
    if not rows:
        return
    table = pd.DataFrame(rows, columns=["column", "problem", "count", "detail"]).assign(split=side.split)
    out.tables["columns"] = pd.concat([out.tables["columns"], table]) if "columns" in out.tables else table
    for problem, group in table.groupby("problem", sort=False):
        shown = ", ".join(group["column"].head(5))
        out.add("warning", f"{side.split}: {len(group)} {problem} column(s): {shown}", where=side.split,
                count=len(group))


def _check_balance(sides: list[_Side], out: IntegrityFindings, imbalance_ratio: float) -> None:
    import pandas as pd

    rows = []
    for side in sides:
        if side.labels is None or len(side.labels) == 0:
            continue
        classes, counts = np.unique(side.labels, return_counts=True)
        count_of = dict(zip(classes.tolist(), counts.tolist(), strict=True))
        declared = side.declared or []
        for name in sorted(set(count_of) | set(declared)):
            count = count_of.get(name, 0)
            rows.append((side.split, name, count, count / len(side.labels)))
        empty = [c for c in declared if c not in count_of]
        if empty:
            out.add("warning", f"{side.split}: {len(empty)} declared class(es) have no items ({', '.join(empty[:5])})",
                    where=side.split, count=len(empty))
        ratio = float(counts.max() / counts.min())
        severity = "warning" if ratio >= imbalance_ratio else "info"
        out.add(severity, f"{side.split}: class imbalance ratio {ratio:.1f} (largest class "
                f"{classes[counts.argmax()]!s}: {counts.max()}, smallest {classes[counts.argmin()]!s}: {counts.min()})",
                where=side.split, count=len(classes))
    if rows:
        out.tables["class_balance"] = pd.DataFrame(rows, columns=["split", "class", "count", "share"])


def _check_label_shift(train: _Side, test: _Side, out: IntegrityFindings, alpha: float) -> None:
    import pandas as pd

    from assay.stats.drift import class_mix_test, js_distance

    if train.labels is None or test.labels is None or not len(train.labels) or not len(test.labels):
        return
    classes = np.union1d(train.labels, test.labels)
    ref = np.array([np.sum(train.labels == c) for c in classes], dtype=np.float64)
    cur = np.array([np.sum(test.labels == c) for c in classes], dtype=np.float64)
    test_result = class_mix_test(ref, cur, small_window=len(test.labels) + 1, name="label_shift")
    distance = float(js_distance(ref, cur))
    out.tables["label_shift"] = pd.DataFrame([{
        "test": test_result.method, "statistic": test_result.statistic, "p_value": test_result.p_value,
        "js_distance": distance, "n_train": test_result.n_reference, "n_test": test_result.n_current,
        "shifted": bool(test_result.p_value is not None and test_result.p_value < alpha)}])
    only_test = [c for c in classes if c not in set(train.labels)]
    if only_test:
        out.add("warning", f"test: {len(only_test)} class(es) absent from train ({', '.join(only_test[:5])})",
                where="test", count=len(only_test))
    p = test_result.p_value
    if p is not None and p < alpha:
        out.add("warning", f"label shift between train and test: chi-squared p = {p:.2g} < {alpha}, Jensen-Shannon "
                f"distance {distance:.3f}", where="train/test", count=int(cur.sum()))
    else:
        out.add("info", f"no label shift detected between train and test (chi-squared p = {p:.2g}, Jensen-Shannon "
                f"distance {distance:.3f})", where="train/test")


def _bin_counts(reference: np.ndarray, current: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Histograms of both samples over the reference's quantile bins, or one bin per distinct value."""
    values = np.unique(np.concatenate([reference, current]))
    if len(values) < 2:
        return None
    if len(values) <= bins:
        inner = values[1:]  # bin j holds values[j]: exact KS over the distinct values
    else:
        inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(inner) + 1)
    cur = np.bincount(np.searchsorted(inner, current, side="right"), minlength=len(inner) + 1)
    return ref, cur


def _check_feature_shift(train: np.ndarray, test: np.ndarray, names: list[str], out: IntegrityFindings, *,
                         alpha: float, bins: int, what: str) -> None:
    import pandas as pd

    from assay.stats.drift import binned_ks_test
    from assay.stats.multiple_testing import benjamini_hochberg

    rows = []
    for j, name in enumerate(names):
        a, b = train[:, j], test[:, j]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        counts = _bin_counts(a, b, bins) if len(a) and len(b) else None
        if counts is None:
            rows.append((name, np.nan, np.nan))
            continue
        result = binned_ks_test(*counts, name=name)
        rows.append((name, result.statistic, np.nan if result.p_value is None else result.p_value))
    table = pd.DataFrame(rows, columns=["feature", "ks_statistic", "p_value"])
    if table["p_value"].notna().any():
        reject, adjusted = benjamini_hochberg(table["p_value"].to_numpy(), alpha=alpha)
    else:
        reject, adjusted = np.zeros(len(table), dtype=bool), np.full(len(table), np.nan)
    table["p_adjusted"] = adjusted
    table["shifted"] = reject
    table["features"] = what
    out.tables["feature_shift"] = (pd.concat([out.tables["feature_shift"], table]) if "feature_shift" in out.tables
                                   else table)
    tested = int(table["p_value"].notna().sum())
    if reject.any():
        shown = ", ".join(table.loc[reject].sort_values("p_adjusted")["feature"].head(5))
        out.add("warning", f"feature shift between train and test in {int(reject.sum())} of {tested} {what} "
                f"(Benjamini-Hochberg at {alpha}; most: {shown})", where="train/test", count=int(reject.sum()))
    else:
        out.add("info", f"no feature shift detected in {tested} {what} (KS per feature, Benjamini-Hochberg at "
                f"{alpha})", where="train/test")


def _check_pii(side: _Side, out: IntegrityFindings) -> None:
    import pandas as pd

    from assay.audit.pii import find_pii

    found = []
    if side.texts is not None:
        found.append(find_pii(pd.Series(side.texts, name="text")))
    if side.frame is not None:
        found.append(find_pii(side.frame))
    found = [f for f in found if len(f)]
    if not found:
        return
    table = pd.concat(found, ignore_index=True).assign(split=side.split)
    out.tables["pii"] = pd.concat([out.tables["pii"], table], ignore_index=True) if "pii" in out.tables else table
    for kind, group in table.groupby("kind", sort=False):
        columns = ", ".join(sorted(group["column"].astype(str).unique())[:5])
        out.add("warning", f"{side.split}: {len(group)} possible {kind} value(s) in {group['index'].nunique()} "
                f"item(s) (columns: {columns}; masked in the pii table)", where=side.split, count=len(group))


def _check_compatible(train: _Side, test: _Side) -> None:
    if train.modality != test.modality:
        raise DataError(f"train is {train.modality} data but test is {test.modality} data", where="train, test",
                        fix="audit a train and a test split of the same data set")
    if train.shape is not None and test.shape is not None and train.shape != test.shape and train.modality != "text":
        raise DataError(f"train inputs have shape {train.shape} but test inputs {test.shape}", where="train, test",
                        fix="give both splits the same features (tables) or image size (--image-size)")


def integrity_findings(train: Any, test: Any = None, *, label_column: str = "label", alpha: float = 0.05,
                       bins: int = 20, imbalance_ratio: float = 10.0, train_features: Any = None,
                       test_features: Any = None) -> IntegrityFindings:
    """Integrity checks of ``train`` and, when given, ``test`` and of train against test (see the module
    docstring). ``label_column``: the label column of DataFrame / table inputs. ``alpha``: level of the label
    shift test and false discovery rate of the feature shift tests. ``bins``: histogram bins per feature.
    ``train_features``/``test_features``: optional embeddings ``(N, D)`` tested for shift too.
    Train and test of different modality or input shape are a ``DataError`` naming both."""
    if not 0.0 < alpha < 1.0:
        raise OptionError(f"alpha must lie in (0, 1), got {alpha!r}", where="alpha", fix="pass e.g. alpha=0.05")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise OptionError(f"bins must be an integer >= 2, got {bins!r}", where="bins", fix="pass e.g. bins=20")
    sides = [_as_side(train, "train", label_column)]
    if test is not None:
        sides.append(_as_side(test, "test", label_column))
        _check_compatible(sides[0], sides[1])
    out = IntegrityFindings()
    for side in sides:
        _check_files(side, out)
        _check_notes(side, out)
        _check_columns(side, out)
    _check_balance(sides, out, imbalance_ratio)
    if len(sides) == 2:
        a, b = sides
        _check_label_shift(a, b, out, alpha)
        if a.features is not None and b.features is not None and a.feature_names == b.feature_names:
            what = {"image": "image statistics", "text": "text statistics"}.get(a.modality, "columns")
            _check_feature_shift(a.features, b.features, a.feature_names, out, alpha=alpha, bins=bins, what=what)
        if train_features is not None and test_features is not None:
            x, y = np.asarray(train_features, dtype=np.float64), np.asarray(test_features, dtype=np.float64)
            if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
                raise DataError(f"train_features {x.shape} and test_features {y.shape} must be (N, D) with the same D",
                                where="train_features, test_features", fix="pass embeddings of the same layer")
            _check_feature_shift(x, y, [f"dim_{j}" for j in range(x.shape[1])], out, alpha=alpha, bins=bins,
                                 what="embedding dimensions")
    for side in sides:
        _check_pii(side, out)
    rank = {"critical": 0, "warning": 1, "info": 2}
    out.findings.sort(key=lambda f: rank.get(f["severity"], 3))
    return out
