"""Views that perturb the evaluation inputs: corruptions (any modality) and adversarial attacks.

Both are deterministic: a corruption's randomness for sample i comes from (seed, name, severity, i), so
batching never changes it; an attack's randomness comes from (seed, first index of the batch), and the
batch size is part of its spec (and so of the cache key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assay.data.dataset import Dataset
from assay.engine.views import View, ViewSpec

__all__ = ["AdversarialView", "AttackSpec", "CorruptionView"]


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
    corruption at one severity, aligned with the clean evaluation set."""

    def __init__(self, name: str, severity: int, corrupted: Dataset) -> None:
        self.name, self.severity = name, int(severity)
        self._corrupted = corrupted
        self.spec = ViewSpec.make("precomputed-corruption", name=name, severity=self.severity,
                                  fingerprint=corrupted.fingerprint)

    def source(self, dataset: Dataset) -> Dataset:
        return self._corrupted

    def example_indices(self, source: Dataset) -> np.ndarray:
        return np.arange(min(3, len(source)))


def load_precomputed_corruptions(directory: str, clean: Dataset) -> list[PrecomputedCorruptionView]:
    """Views from a -C directory laid out like Hendrycks' CIFAR-10-C: ``<corruption>.npy`` with the 5
    severities stacked (5 x N images, NHWC uint8 or NCHW float in [0, 1]) and optional ``labels.npy``.
    The images must follow the clean set's order (checked against its labels when labels.npy exists)."""
    from pathlib import Path

    from assay.errors import UserError

    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory", where="--corruption-data",
                        fix="point to a folder of <corruption>.npy files (the CIFAR-10-C layout)")
    files = sorted(p for p in root.glob("*.npy") if p.stem != "labels")
    if not files:
        raise UserError(f"no <corruption>.npy files in {root}", where="--corruption-data",
                        fix="point to a folder of <corruption>.npy files (the CIFAR-10-C layout)")
    n = len(clean)
    labels_path = root / "labels.npy"
    if labels_path.exists():
        labels = np.load(labels_path, allow_pickle=False)
        if len(labels) != 5 * n or clean.y is None or not all(
                np.array_equal(labels[s * n:(s + 1) * n], clean.y) for s in range(5)):
            raise UserError("labels.npy does not repeat the evaluation set's labels 5 times in order",
                            where=str(labels_path), fix="give the clean test set the -C set was made from")
    views = []
    for path in files:
        images = np.load(path, allow_pickle=False, mmap_mode="r")
        if images.shape[0] != 5 * n:
            raise UserError(f"{path.name} holds {images.shape[0]} images, expected 5 x {n}", where=str(path),
                            fix="give the clean test set the -C set was made from (same size and order)")
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = np.moveaxis(images, -1, 1)
        x = np.asarray(images, dtype=np.float32)
        if np.issubdtype(images.dtype, np.integer):
            x /= 255.0
        for s in range(5):
            part = Dataset(x=x[s * n:(s + 1) * n], y=clean.y, ids=clean.ids, modality="image",
                           name=f"{path.stem}-{s + 1}", source=str(path), class_names=clean.class_names)
            views.append(PrecomputedCorruptionView(path.stem, s + 1, part))
    return views
