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
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.data.dataset import Dataset
from assay.data.npz import NpyHeader, read_npy_header
from assay.engine.views import View, ViewSpec, gradient_model, spec_state
from assay.errors import DataError, ModelError

if TYPE_CHECKING:
    from assay.engine.work import Shard
    from assay.models.base import Model

__all__ = ["AdversarialView", "AttackSpec", "CorruptionView", "PrecomputedCorruptionView", "attack_runner",
           "load_precomputed_corruptions", "logit_module"]


class CorruptionView(View):
    """The evaluation inputs under one corruption at one severity (Hendrycks & Dietterich 2019)."""

    def __init__(self, dataset: Dataset, name: str, severity: int, *, seed: int = 0, table: str = "auto") -> None:
        mean = std = None
        if dataset.modality == "tabular":
            # Statistics of the whole evaluation set, so a batch's corruption never depends on the batch.
            x = np.asarray(dataset.x, dtype=np.float64)
            mean, std = x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)
        self._setup(dataset.modality, name, severity, seed, table, mean, std)

    def _setup(self, modality: str, name: str, severity: int, seed: int, table: str, feature_mean: np.ndarray | None,
               feature_std: np.ndarray | None) -> None:
        self.name, self.severity, self.seed, self.table = name, int(severity), int(seed), table
        self.modality = modality
        params: dict[str, Any] = {"name": name, "severity": self.severity, "seed": self.seed}
        state: dict[str, Any] = {"modality": modality}
        if modality == "image":
            from assay.corruptions.image import REVISIONS

            params["table"] = table
            self.revision = REVISIONS.get(name, 1)
        elif modality == "tabular":
            assert feature_mean is not None and feature_std is not None
            self.feature_mean, self.feature_std = feature_mean, feature_std
            # float32 -> Python float -> float32 is exact: the rebuilt view corrupts bit for bit alike.
            state.update(feature_mean=tuple(map(float, feature_mean)), feature_std=tuple(map(float, feature_std)))
        self.spec = ViewSpec.make("corruption", **params).with_state(**state)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        p = spec_state(spec)
        view = cls.__new__(cls)
        stats = [None if p.get(k) is None else np.asarray(p[k], dtype=np.float32)
                 for k in ("feature_mean", "feature_std")]
        view._setup(p["modality"], p["name"], p["severity"], p["seed"], p.get("table", "auto"), *stats)
        return view

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
        budget = (f"{self.steps} queries" if self.attack == "square"
                  else f"{self.steps} steps, {self.restarts} restart(s)")
        return f"{self.attack} ({self.norm}, eps={self.eps:.4g}, {budget})"


def logit_module(model: Model) -> Any:
    """The model's torch module, returning logits (log of probabilities for --outputs probabilities)."""
    import torch

    module = model.torch_module()
    if model.info.outputs != "probabilities":
        return module
    assert module is not None  # callers pass models with a torch module (gradient_model, white-box attacks)

    class LogOf(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(self.inner(x).clamp_min(torch.finfo(torch.float32).tiny))

    return LogOf(module)


def attack_runner(model: Model, spec: AttackSpec) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """``(x, y, seed) -> adversarial x`` for one attack spec on ``model`` (its torch module for white-box
    attacks, its logits for Square)."""
    from assay import attacks

    if not spec.white_box:
        def run_square(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
            adv, _queries = attacks.square(model.logits, x, y, eps=spec.eps, norm=spec.norm,
                                           queries=spec.steps, seed=seed)
            return np.asarray(adv, dtype=np.float32)
        return run_square

    import torch

    module = logit_module(model)

    def run_white_box(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
        xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
        if spec.attack == "fgsm":
            adv = attacks.fgsm(module, xt, yt, eps=spec.eps, norm=spec.norm)
        elif spec.attack == "pgd":
            adv = attacks.pgd(module, xt, yt, eps=spec.eps, norm=spec.norm, steps=spec.steps,
                              restarts=spec.restarts, seed=seed)
        else:
            loss = "ce" if spec.attack == "apgd-ce" else "dlr-targeted"
            adv = attacks.apgd(module, xt, yt, eps=spec.eps, norm=spec.norm, steps=spec.steps,
                               restarts=spec.restarts, loss=loss, seed=seed)
        return adv.detach().cpu().numpy().astype(np.float32)
    return run_white_box


class AdversarialView(View):
    """Adversarial examples of the clean-correct samples (others are passed through unchanged, as in the
    AutoAttack protocol: a misclassified point is already non-robust).

    The labels and the clean-correct mask are per-row data (:meth:`row_data`): a view rebuilt from its spec
    in a worker (``labels``/``clean_correct`` None) reads them from each shard."""

    def __init__(self, spec: AttackSpec, attack: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
                 labels: np.ndarray | None, clean_correct: np.ndarray | None, batch_size: int) -> None:
        self.attack_spec = spec
        self._attack = attack
        self._labels = None if labels is None else np.asarray(labels)
        self._targets = None if clean_correct is None else np.asarray(clean_correct, dtype=bool)
        self.batch_size = int(batch_size)
        self.spec = ViewSpec.make("adversarial", attack=spec.attack, eps=spec.eps, norm=spec.norm, steps=spec.steps,
                                  restarts=spec.restarts, seed=spec.seed, batch_size=self.batch_size)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        p = dict(spec.params)
        attack = AttackSpec(attack=p["attack"], eps=p["eps"], norm=p["norm"], steps=p["steps"],
                            restarts=p["restarts"], seed=p["seed"])
        if attack.white_box:
            model = gradient_model(model, spec)
        elif model is None:
            raise ModelError(f"the view {spec.name} queries the model, and none was given", where="model",
                             fix="pass the loaded model")
        return cls(attack, attack_runner(model, attack), None, None, p["batch_size"])

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        if self._labels is None or self._targets is None:
            raise RuntimeError("an attack view rebuilt from its spec has no labels of its own: run it on shards")
        return self._labels, self._targets

    def row_data(self, source: Dataset) -> dict[str, np.ndarray]:
        labels, targets = self._rows()
        return {"labels": labels, "targets": targets}

    def example_indices(self, source: Dataset) -> np.ndarray:
        return np.flatnonzero(self._rows()[1])[:4]

    def transform(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        labels, targets = self._rows()
        return self._attack_rows(x, index, labels[index], targets[index])

    def transform_shard(self, shard: Shard) -> np.ndarray:
        return self._attack_rows(shard.x, shard.index, shard.rows["labels"], shard.rows["targets"])

    def _attack_rows(self, x: np.ndarray, index: np.ndarray, labels: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Attack the target rows of a batch; the attack's seed comes from the batch's first row."""
        if not targets.any():
            return x
        out = np.array(x, dtype=np.float32, copy=True)
        batch_seed = self.attack_spec.seed * 1_000_003 + int(index[0])
        out[targets] = self._attack(out[targets], labels[targets], batch_seed)
        return out


class PrecomputedCorruptionView(View):
    """A published pre-computed corruption set (e.g. CIFAR-10-C) given as data: the rows of one
    corruption at one severity, aligned with the clean evaluation set. The source keeps the file's own
    layout and dtype (a read-only memory map), and each batch is converted to float32 NCHW in [0, 1] as it
    is fed, so a folder of 19 CIFAR-10-C files is never held in memory as float32 (11.7 GB).

    Rebuilt from its spec (in a worker) it holds no data: only the conversion of the rows it is sent."""

    def __init__(self, name: str, severity: int, corrupted: Dataset | None, *, channels_last: bool = False) -> None:
        self.name, self.severity = name, int(severity)
        self._corrupted = corrupted
        self._channels_last = bool(channels_last)
        fingerprint = corrupted.fingerprint if corrupted is not None else None
        self.spec = ViewSpec.make("precomputed-corruption", name=name, severity=self.severity,
                                  fingerprint=fingerprint).with_state(
            channels_last=self._channels_last, path=None if corrupted is None else corrupted.source)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        p = spec_state(spec)
        view = cls(p["name"], p["severity"], None, channels_last=p["channels_last"])
        view.spec = spec
        return view

    def source(self, dataset: Dataset) -> Dataset:
        if self._corrupted is None:
            raise RuntimeError("a pre-computed corruption view rebuilt from its spec holds no data")
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
                        f"({PRECOMPUTED_SEVERITIES * n},) integers: --data's {n} labels, "
                        f"{PRECOMPUTED_SEVERITIES} times",
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
                            where=str(path),
                            fix="give the clean test set the -C set was made from (same size and order)")
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
