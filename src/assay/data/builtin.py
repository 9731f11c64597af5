"""Built-in demo datasets that need no download.

``digits``: the 1,797 8x8 handwritten digits bundled with scikit-learn (UCI optical recognition of
handwritten digits; ``sklearn.datasets.load_digits``). Images are (N, 1, 8, 8) float32 ``pixel / 16``
in [0, 1], labels 0..9, class names ``"0"``..``"9"``. The split is fixed:
``train_test_split(test_size=0.3, random_state=0, stratify=y)`` — 1,257 train / 540 test rows, ids
are the original row indices (sorted), so the same spec always yields the same fingerprint.

Metadata ``ink``: ``"low"``/``"mid"``/``"high"`` tertile of total pixel intensity, with cut points computed
on all 1,797 images so that train and test share the bins — a ready-made slice (faint vs heavy strokes).
"""

from __future__ import annotations

import numpy as np

from assay.data.dataset import Dataset
from assay.errors import DataError

__all__ = ["BUILTIN_DATASETS", "DIGITS_SPLITS", "is_builtin", "load_builtin", "load_digits"]

DIGITS_SPLITS = ("train", "test")
BUILTIN_DATASETS = ("digits", "digits:train", "digits:test")
_DIGITS_TEST_SIZE = 0.3
_DIGITS_SEED = 0
INK_LEVELS = ("low", "mid", "high")


def is_builtin(spec: str) -> bool:
    """True when ``spec`` names a built-in set (``digits`` or ``digits:<anything>``)."""
    return spec.split(":", 1)[0] in {"digits"}


def load_builtin(spec: str, *, name: str | None = None) -> Dataset:
    """Load a built-in set by spec: ``digits`` (= test split), ``digits:train`` or ``digits:test``."""
    base, _, split = spec.partition(":")
    if base == "digits":
        return load_digits(split or "test", name=name)
    raise DataError(f"unknown built-in dataset {spec!r}", where=spec, fix=f"use one of {list(BUILTIN_DATASETS)}")


def load_digits(split: str = "test", *, name: str | None = None) -> Dataset:
    """scikit-learn's bundled digits, fixed stratified 70/30 split; ``split`` is ``"train"`` or ``"test"``."""
    if split not in DIGITS_SPLITS:
        raise DataError(
            f"unknown split {split!r} of the digits dataset",
            where=f"digits:{split}",
            fix=f"use one of {list(BUILTIN_DATASETS)}",
        )
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float32)  # (1797, 8, 8), integer values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    rows = np.arange(len(labels))
    train_rows, test_rows = train_test_split(
        rows, test_size=_DIGITS_TEST_SIZE, random_state=_DIGITS_SEED, stratify=labels
    )
    chosen = np.sort(train_rows if split == "train" else test_rows)

    import pandas as pd  # the built-in set has an "ink" metadata column: pandas is needed anyway

    ink_total = images.reshape(len(images), -1).sum(axis=1)
    ink = pd.qcut(ink_total, q=len(INK_LEVELS), labels=list(INK_LEVELS)).astype(str)

    spec = f"digits:{split}"
    return Dataset(
        x=(images[chosen] / 16.0)[:, None, :, :],
        y=labels[chosen],
        ids=chosen,
        modality="image",
        name=name or spec,
        source=spec,
        class_names=[str(c) for c in range(10)],
        meta=pd.DataFrame({"ink": np.asarray(ink)[chosen]}),
    )
