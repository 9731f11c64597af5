"""Views that perturb the evaluation inputs: corruptions (any modality) and adversarial attacks.

Both are deterministic: a corruption's randomness for sample i comes from (seed, name, severity, i), so
batching never changes it; an attack's randomness comes from (seed, first index of the batch), and the
batch size is part of its spec (and so of the cache key).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.data.dataset import Dataset
from assay.data.npz import NpyHeader, read_npy_header
from assay.engine.views import View, ViewSpec
from assay.errors import DataError

__all__ = ["AdversarialView", "AttackSpec", "CorruptionView", "PrecomputedCorruptionView",
           "load_precomputed_corruptions"]


class CorruptionView(View):
    """The evaluation inputs under one corruption at one severity (Hendrycks & Dietterich 2019)."""

    def __init__(self, dataset: Dataset, name: str, severity: int, *, seed: int = 0, table: str = "auto") -> None:
        self.name, self.severity, self.seed, self.table = name, int(severity), int(seed), table
        self.modality = dataset.modality
        params = {"name": name, "severity": self.severity, "seed": self.seed}
        if self.modality == "image":
            params["table"] = table
        elif self.modality == "tabular":
            # Statistics of the whole evaluation set, so a batch's corruption never depends on the batch.
            x = np.asarray(dataset.x, dtype=np.float64)
            self.feature_mean = x.mean(axis=0).astype(np.float32)
            self.feature_std = x.std(axis=0).astype(np.float32)
        self.spec = ViewSpec.make("corruption", **params)

    def example_indices(self, source: Dataset) -> np.ndarray:
        return np.arange(min(3, len(source)))

    def transform(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        from assay.corruptions import corrupt_images, corrupt_table, corrupt_texts

        if self.modality == "image":
            return corrupt_images(x, self.name, self.severity, seed=self.seed, index=index, table=self.table)
        if self.modality == "text":
            return corrupt_texts(list(x), self.name, self.severity, seed=self.seed, index=index)
        return corrupt_table(x, self.name, self.severity, seed=self.seed, index=index,
                             feature_std=self.feature_std, feature_mean=self.feature_mean)


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration: everything a report must state about it."""

    attack: str  # "fgsm" | "pgd" | "apgd-ce" | "apgd-t" | "square"
    eps: float
    norm: str  # "linf" | "l2"
    steps: int = 0  # iterations (queries for square)
    restarts: int = 1
    seed: int = 0

    @property
    def white_box(self) -> bool:
        return self.attack != "square"

    def label(self) -> str:
        budget = f"{self.steps} queries" if self.attack == "square" else f"{self.steps} steps, {self.restarts} restart(s)"
        return f"{self.attack} ({self.norm}, eps={self.eps:.4g}, {budget})"


class AdversarialView(View):
    """Adversarial examples of the clean-correct samples (others are passed through unchanged, as in the
    AutoAttack protocol: a misclassified point is already non-robust)."""

    def __init__(self, spec: AttackSpec, attack: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
                 labels: np.ndarray, clean_correct: np.ndarray, batch_size: int) -> None:
        self.attack_spec = spec
        self._attack = attack
        self._labels = np.asarray(labels)
        self._targets = np.asarray(clean_correct, dtype=bool)
        self.spec = ViewSpec.make("adversarial", attack=spec.attack, eps=spec.eps, norm=spec.norm, steps=spec.steps,
                                  restarts=spec.restarts, seed=spec.seed, batch_size=batch_size)

    def example_indices(self, source: Dataset) -> np.ndarray:
        return np.flatnonzero(self._targets)[:4]

    def transform(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        targets = self._targets[index]
        if not targets.any():
            return x
        out = np.array(x, dtype=np.float32, copy=True)
        batch_seed = self.attack_spec.seed * 1_000_003 + int(index[0])
        out[targets] = self._attack(out[targets], self._labels[index][targets], batch_seed)
        return out


class PrecomputedCorruptionView(View):
    """A published pre-computed corruption set (e.g. CIFAR-10-C) given as data: the rows of one
    corruption at one severity, aligned with the clean evaluation set. The source keeps the file's own
    layout and dtype (a read-only memory map), and each batch is converted to float32 NCHW in [0, 1] as it
    is fed, so a folder of 19 CIFAR-10-C files is never held in memory as float32 (11.7 GB)."""

    def __init__(self, name: str, severity: int, corrupted: Dataset, *, channels_last: bool = False) -> None:
        self.name, self.severity = name, int(severity)
        self._corrupted = corrupted
        self._channels_last = channels_last
        self.spec = ViewSpec.make("precomputed-corruption", name=name, severity=self.severity,
                                  fingerprint=corrupted.fingerprint)

    def source(self, dataset: Dataset) -> Dataset:
        return self._corrupted

    def transform(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        scale = np.issubdtype(x.dtype, np.integer)
        if self._channels_last:
            x = np.moveaxis(x, -1, 1)
        out = np.ascontiguousarray(x, dtype=np.float32)
        if scale:
            out /= 255.0
        return out

    def example_indices(self, source: Dataset) -> np.ndarray:
        return np.arange(min(3, len(source)))


#: Severities stacked in each file of a -C set (Hendrycks & Dietterich 2019).
PRECOMPUTED_SEVERITIES = 5
#: A corruption name as a file stem: it becomes a view name, a table row and a cache key.
_CORRUPTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
_LAYOUT_FIX = ("lay the folder out like CIFAR-10-C: <corruption>.npy with the 5 severities stacked (5 x N images, "
               "NHWC uint8 or NCHW float32 in [0, 1]) and labels.npy (the N labels of --data, repeated 5 times)")


def _file_header(path: Path, fix: str) -> NpyHeader:
    """A ``.npy`` file's header, checked against the file's size (truncated or padded files are refused
    before any data is read or mapped)."""
    where = str(path)
    try:
        with path.open("rb") as f:
            header = read_npy_header(f, path.name, where, fix)
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {path.name} ({exc.strerror or exc})", where=where, fix=fix) from None
    if header.data_offset + header.nbytes != size:
        raise DataError(f"{path.name} is {size:,} bytes, but its header describes {header.shape} {header.dtype} "
                        f"({header.data_offset + header.nbytes:,} bytes): truncated or corrupt", where=where,
                        fix="copy or download the file again")
    return header


def _precomputed_labels(path: Path, clean: Dataset) -> None:
    """labels.npy must repeat the clean labels once per severity, in order."""
    from assay.data.npz import integer_labels

    n = len(clean)
    where = str(path)
    header = _file_header(path, _LAYOUT_FIX)
    if header.dtype.kind not in "iuf" or header.shape != (PRECOMPUTED_SEVERITIES * n,):
        raise DataError(f"labels.npy holds {header.dtype} of shape {header.shape}; expected "
                        f"({PRECOMPUTED_SEVERITIES * n},) integers: --data's {n} labels, {PRECOMPUTED_SEVERITIES} times",
                        where=where, fix="give the clean test set the -C set was made from (same size and order)")
    labels = integer_labels(np.load(path, allow_pickle=False), where=where).reshape(PRECOMPUTED_SEVERITIES, n)
    assert clean.y is not None
    severity, row = np.nonzero(labels != clean.y[None, :])
    if severity.size:
        raise DataError(f"labels.npy does not repeat the evaluation set's labels {PRECOMPUTED_SEVERITIES} times in "
                        f"order: {severity.size} differ, first at severity {severity[0] + 1}, sample {row[0]} "
                        f"({labels[severity[0], row[0]]} vs {clean.y[row[0]]})", where=where,
                        fix="give the clean test set the -C set was made from (same size and order)")


def _check_pixels(part: np.ndarray, where: str, severity: int) -> None:
    """Float images must be finite and in [0, 1]; integer images in 0..255 (they are divided by 255)."""
    if part.dtype == np.uint8:
        return  # in range by construction (CIFAR-10-C's own dtype): no pass over the data
    axes = tuple(range(1, part.ndim))
    if np.issubdtype(part.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(part).all(axis=axes))
        if bad.size:
            raise DataError(f"{bad.size} image(s) of severity {severity} hold NaN or infinite values (first at rows "
                            f"{bad[:5].tolist()})", where=where, fix="regenerate the corrupted images")
        low, high = float(part.min()), float(part.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise DataError(f"float images must lie in [0, 1]; severity {severity} spans [{low:g}, {high:g}]",
                            where=where, fix="divide 0-255 images by 255, or store them as uint8")
    else:
        low, high = int(part.min()), int(part.max())
        if low < 0 or high > 255:
            raise DataError(f"integer images must lie in 0..255; severity {severity} spans [{low}, {high}]",
                            where=where, fix="store 8-bit images as uint8 (NHWC), or floats in [0, 1]")


def load_precomputed_corruptions(directory: str, clean: Dataset) -> list[PrecomputedCorruptionView]:
    """Views from a -C directory laid out like Hendrycks' CIFAR-10-C: ``<corruption>.npy`` with the 5
    severities stacked (5 x N images, NHWC uint8 or NCHW float in [0, 1]) and ``labels.npy``.

    The folder is untrusted input: every header is checked against the file size, the clean set's size and
    its image shape before a byte of data is read; arrays are memory-mapped (never unpickled), and the
    labels must repeat the clean set's labels 5 times in order. Every problem is a DataError."""
    root = Path(directory)
    where = f"--corruption-data {root}"
    if not root.exists():
        raise DataError(f"no folder at {root}", where=where, fix=_LAYOUT_FIX)
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder", where=where, fix=_LAYOUT_FIX)
    if clean.modality != "image" or clean.y is None:
        raise DataError(f"pre-computed corruption sets hold images, but --data is {clean.modality} data"
                        + ("" if clean.y is not None else " without labels"), where=where,
                        fix="use --corruptions for tabular and text data")
    try:
        entries = sorted(p for p in root.iterdir() if p.suffix == ".npy")
    except OSError as exc:
        raise DataError(f"cannot list {root} ({exc.strerror or exc})", where=where, fix=_LAYOUT_FIX) from None
    not_files = [p.name for p in entries if not p.is_file()]
    if not_files:
        raise DataError(f"{', '.join(not_files[:3])} in {root} is not a file", where=where, fix=_LAYOUT_FIX)
    files = [p for p in entries if p.stem != "labels"]
    if not files:
        raise DataError(f"no <corruption>.npy files in {root}", where=where, fix=_LAYOUT_FIX)
    bad_names = [p.name for p in files if not _CORRUPTION_NAME.fullmatch(p.stem)]
    if bad_names:
        raise DataError(f"{bad_names[0]!r} is not a corruption name (letters, digits, _ and -; at most 64)",
                        where=where, fix="name each file after its corruption, e.g. gaussian_noise.npy")
    labels_path = root / "labels.npy"
    if not labels_path.is_file():
        raise DataError(f"{root} has no labels.npy, so nothing shows the images follow --data's order",
                        where=where, fix="save the labels as labels.npy: numpy.save('labels.npy', numpy.tile(y, 5))")
    _precomputed_labels(labels_path, clean)
    n, image_shape = len(clean), tuple(clean.x.shape[1:])
    channels, height, width = image_shape
    views = []
    for path in files:
        header = _file_header(path, _LAYOUT_FIX)
        if header.dtype.kind not in "uif":
            raise DataError(f"{path.name} holds {header.dtype}; expected uint8 or float images", where=str(path),
                            fix=_LAYOUT_FIX)
        if len(header.shape) != 4:
            raise DataError(f"{path.name} holds an array of shape {header.shape}; expected a 4-D stack of images",
                            where=str(path), fix=_LAYOUT_FIX)
        if header.shape[0] != PRECOMPUTED_SEVERITIES * n:
            raise DataError(f"{path.name} holds {header.shape[0]} images, expected {PRECOMPUTED_SEVERITIES} x {n}",
                            where=str(path), fix="give the clean test set the -C set was made from (same size and order)")
        per_image = header.shape[1:]
        if per_image not in (image_shape, (height, width, channels)):
            raise DataError(f"{path.name} holds images of shape {per_image}; --data's are {image_shape} (NCHW), so "
                            f"expected {image_shape} or {(height, width, channels)} (NHWC)", where=str(path),
                            fix="give the -C set of this data set, at the same resolution")
        try:
            images = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot map {path.name} ({str(exc)[:200]})", where=str(path), fix=_LAYOUT_FIX) from None
        channels_last = per_image != image_shape
        for s in range(PRECOMPUTED_SEVERITIES):
            part = images[s * n:(s + 1) * n]
            _check_pixels(part, str(path), s + 1)
            rows = Dataset(x=part, y=clean.y, ids=clean.ids, modality="image", name=f"{path.stem}-{s + 1}",
                           source=str(path), class_names=clean.class_names)
            views.append(PrecomputedCorruptionView(path.stem, s + 1, rows, channels_last=channels_last))
    return views
