"""How accurate is the audit itself? Plant known issues into data, run the audit, count what it finds.

:func:`plant_issues` copies a train/test pair and plants, at recorded positions:

* exact duplicates within train (an item overwritten by a copy of another; text copies differ only in case and
  whitespace, which the content hash normalises away);
* near duplicates within train, each made by one transform of its source: images a translation by one pixel to
  the right (zeros coming in at the left), Gaussian noise (sd 0.03) or JPEG re-encoding (quality 75); texts a
  replaced word, a dropped word or an appended sentence; tables small noise on every column or rounding to two
  decimals;
* test->train leaks: test items overwritten by an exact or transformed copy of a train item (and its label);
* flipped labels: a share of the remaining train items given another class, chosen uniformly.

Planted items never overlap (a flipped item is never a duplicate's source or copy), so each finding has one
cause. :func:`score_audit` compares the audit's flagged items with the truth: precision and recall per issue
type (leaks and label issues per item, duplicates per pair), and recall per transform. Exact duplicates that
the clean data already held are counted as true, not as false positives (they are real duplicates).

Data the project makes: :func:`make_text_set` (topic-word texts, one topic per class) and
:func:`make_tabular_set` (scikit-learn's ``make_classification``); images are the built-in digits, upscaled to
32x32 by :func:`upscale_images` so that a one-pixel shift is as small as it is in real images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.data.dataset import Dataset

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["NEAR_TRANSFORMS", "Planted", "make_tabular_set", "make_text_set", "plant_issues", "score_audit",
           "split_dataset", "upscale_images"]

#: Near-duplicate transforms per modality, used in turn.
NEAR_TRANSFORMS: dict[str, tuple[str, ...]] = {
    "image": ("shift", "noise", "jpeg"),
    "text": ("replace_word", "drop_word", "append_sentence"),
    "tabular": ("noise", "round"),
}


# ------------------------------------------------------------------------------------------- made data
def _words(rng: np.random.Generator, n: int, syllables: tuple[int, int] = (2, 4)) -> list[str]:
    """``n`` distinct pronounceable pseudo-words."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    found: dict[str, None] = {}
    while len(found) < n:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        found["".join(consonants[rng.integers(len(consonants))] + vowels[rng.integers(len(vowels))]
                      for _ in range(k))] = None
    return list(found)


def make_text_set(n: int = 1200, *, classes: int = 4, words: int = 60, topic_share: float = 0.25,
                  seed: int = 0) -> Dataset:
    """``n`` synthetic texts of ``words`` words: each class has 30 topic words that make up ``topic_share`` of its
    texts, the rest drawn from 600 common words with Zipf-like frequencies; texts are sentences of 8-14 words.
    Two different texts share no 13-gram in practice, so any shared 13-gram comes from planting."""
    rng = np.random.default_rng(seed)
    vocabulary = _words(rng, 600 + 30 * classes)
    common, topics = vocabulary[:600], [vocabulary[600 + 30 * c: 630 + 30 * c] for c in range(classes)]
    weights = 1.0 / np.arange(1, 601)
    weights /= weights.sum()
    labels = rng.integers(0, classes, size=n)
    texts = []
    for label in labels:
        picks = [topics[label][rng.integers(30)] if rng.random() < topic_share else common[rng.choice(600, p=weights)]
                 for _ in range(words)]
        sentences, start = [], 0
        while start < len(picks):
            end = min(start + int(rng.integers(8, 15)), len(picks))
            sentence = " ".join(picks[start:end])
            sentences.append(sentence[0].upper() + sentence[1:] + ".")
            start = end
        texts.append(" ".join(sentences))
    return Dataset.from_arrays(np.array(texts, dtype=str), labels, class_names=[f"topic{c}" for c in range(classes)],
                               name="synthetic-text")


def make_tabular_set(n: int = 1500, *, features: int = 12, classes: int = 3, seed: int = 0) -> Dataset:
    """``n`` rows of scikit-learn's ``make_classification`` (6 informative features, class_sep 2, no label noise of
    its own: ``flip_y=0``, so every wrong label is a planted one): a table whose classes a linear model separates
    well, so flipped labels stand out."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=features, n_informative=6, n_redundant=2, n_classes=classes,
                               class_sep=2.0, flip_y=0.0, random_state=seed)
    return Dataset.from_arrays(x.astype(np.float32), y, class_names=[f"c{c}" for c in range(classes)],
                               name="synthetic-table")


def split_dataset(dataset: Dataset, test_share: float = 0.3, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A stratified train/test split of ``dataset`` (each part keeps its own ids)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(dataset))
    train_rows, test_rows = train_test_split(rows, test_size=test_share, random_state=seed, stratify=dataset.y)
    return dataset.subset(np.sort(train_rows)), dataset.subset(np.sort(test_rows))


def upscale_images(dataset: Dataset, side: int = 32) -> Dataset:
    """The images of ``dataset`` resized to ``side`` x ``side`` (bilinear, per channel, in float): digits at the
    CIFAR size, where a one-pixel shift is the small change it is in real data (on the 8x8 originals one pixel is
    an eighth of the digit, which no near-duplicate finder should call the same image)."""
    from PIL import Image

    x = np.stack([np.stack([np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (side, side), Image.Resampling.BILINEAR)) for plane in image]) for image in dataset.x])
    return Dataset(x=np.clip(x, 0, 1).astype(np.float32), y=dataset.y, ids=dataset.ids.copy(), modality="image",
                   name=f"{dataset.name}@{side}px", source=dataset.source, class_names=dataset.class_names)


# ------------------------------------------------------------------------------------------ transforms
def _near_copy(x: Any, modality: str, transform: str, rng: np.random.Generator) -> Any:
    """A near copy of one item ``x`` by ``transform`` (see :data:`NEAR_TRANSFORMS`)."""
    if modality == "image":
        image = np.asarray(x, dtype=np.float32)
        if transform == "shift":
            return _translate(image, 1)
        if transform == "noise":
            return np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1).astype(np.float32)
        return _jpeg(image, quality=75)
    if modality == "text":
        tokens = str(x).split()
        position = int(rng.integers(len(tokens) // 3, 2 * len(tokens) // 3))
        if transform == "replace_word":
            tokens[position] = "changed"
        elif transform == "drop_word":
            del tokens[position]
        else:
            tokens += ["And", "one", "more", "sentence", "here."]
        return " ".join(tokens)
    row = np.asarray(x, dtype=np.float32)
    if transform == "noise":
        return (row + rng.normal(0, 1e-3, row.shape) * np.maximum(np.abs(row), 1e-3)).astype(np.float32)
    return np.round(row, 2).astype(np.float32)


def _translate(image: np.ndarray, pixels: int) -> np.ndarray:
    """``image`` moved ``pixels`` to the right, zeros coming in at the left."""
    moved = np.zeros_like(image)
    if pixels < image.shape[-1]:
        moved[..., pixels:] = image[..., : image.shape[-1] - pixels]
    return moved


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (C, H, W) in [0, 1] through a JPEG encode/decode at ``quality`` (8-bit, per channel)."""
    from PIL import Image

    channels = []
    for plane in image:
        buffer = io.BytesIO()
        Image.fromarray((np.clip(plane, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="JPEG",
                                                                                   quality=quality)
        buffer.seek(0)
        channels.append(np.asarray(Image.open(buffer), dtype=np.float32) / 255.0)
    return np.stack(channels).astype(np.float32)


def _exact_copy(x: Any, modality: str, variant: int) -> Any:
    """An exact copy; texts alternate between identical and re-cased / re-spaced (equal after normalisation)."""
    if modality == "text" and variant % 2:
        return "  " + str(x).upper().replace(" ", "  ") + " "
    return np.array(x, copy=True) if modality != "text" else str(x)


# -------------------------------------------------------------------------------------------- planting
@dataclass
class Planted:
    """The planted data and the truth. Pairs are (smaller, larger) train indices; ``leaks`` maps a test index to
    (its train source, transform or ``"exact"``); ``flipped`` train indices got a wrong label;
    ``natural_exact``: exact duplicate pairs (train pairs and (test, train) pairs) the clean data already held."""

    train: Dataset
    test: Dataset
    exact_pairs: set[tuple[int, int]] = field(default_factory=set)
    near_pairs: dict[tuple[int, int], str] = field(default_factory=dict)
    leaks: dict[int, tuple[int, str]] = field(default_factory=dict)
    flipped: set[int] = field(default_factory=set)
    natural_exact: set[tuple[int, int]] = field(default_factory=set)
    natural_leaks: set[int] = field(default_factory=set)


def _rows(x: np.ndarray) -> list[bytes]:
    """Items as comparable keys (texts normalised as the audit's content hash does)."""
    if x.dtype.kind in "UO":
        return [" ".join(str(t).casefold().split()).encode() for t in x]
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    return [row.tobytes() for row in flat]


def _natural(train: Dataset, test: Dataset) -> tuple[set[tuple[int, int]], set[int]]:
    first: dict[bytes, int] = {}
    pairs = set()
    for i, key in enumerate(_rows(train.x)):
        if key in first:
            pairs.add((first[key], i))
        else:
            first[key] = i
    leaked = {i for i, key in enumerate(_rows(test.x)) if key in first}
    return pairs, leaked


def plant_issues(train: Dataset, test: Dataset, *, exact: int = 20, near: int = 30, leaks: int = 40,
                 flip_rate: float = 0.05, seed: int = 0) -> Planted:
    """Copies of ``train``/``test`` with ``exact`` exact and ``near`` near duplicate pairs within train, ``leaks``
    test items replaced by copies of train items (half exact, half near, transforms in turn) and ``flip_rate`` of
    the other train items relabelled to another class. See the module docstring."""
    rng = np.random.default_rng(seed)
    modality = train.modality
    transforms = NEAR_TRANSFORMS[modality]
    x_train = train.x.astype(object) if modality == "text" else train.x.copy()
    x_test = test.x.astype(object) if modality == "text" else test.x.copy()
    if train.y is None or test.y is None:
        raise ValueError("plant_issues needs labelled train and test sets")
    y_train, y_test = train.y.copy(), test.y.copy()
    natural_pairs, natural_leaks = _natural(train, test)
    touched = {i for pair in natural_pairs for i in pair}
    free = rng.permutation([i for i in range(len(train)) if i not in touched])
    needed = 2 * (exact + near) + leaks
    if needed > len(free):
        raise ValueError(f"train has {len(free)} usable items, planting needs {needed}")
    picks = iter(free.tolist())
    planted = Planted(train=train, test=test)
    for k in range(exact):
        source, copy = next(picks), next(picks)
        x_train[copy], y_train[copy] = _exact_copy(x_train[source], modality, k), y_train[source]
        planted.exact_pairs.add((min(source, copy), max(source, copy)))
    for k in range(near):
        source, copy = next(picks), next(picks)
        transform = transforms[k % len(transforms)]
        x_train[copy], y_train[copy] = _near_copy(x_train[source], modality, transform, rng), y_train[source]
        planted.near_pairs[(min(source, copy), max(source, copy))] = transform
    sources = [next(picks) for _ in range(leaks)]
    targets = rng.choice([i for i in range(len(test)) if i not in natural_leaks], size=leaks, replace=False)
    for k, (source, target) in enumerate(zip(sources, targets.tolist(), strict=True)):
        transform = "exact" if k % 2 == 0 else transforms[(k // 2) % len(transforms)]
        x_test[target] = (_exact_copy(x_train[source], modality, k // 2) if transform == "exact"
                          else _near_copy(x_train[source], modality, transform, rng))
        y_test[target] = y_train[source]
        planted.leaks[int(target)] = (int(source), transform)
    # labels: flip a share of the train items no planting touched
    used = touched | {i for pair in planted.exact_pairs | set(planted.near_pairs) for i in pair} | set(sources)
    candidates = np.array([i for i in range(len(train)) if i not in used])
    n_flip = int(round(flip_rate * len(train)))
    classes = int(max(y_train.max(), y_test.max())) + 1
    for i in rng.choice(candidates, size=min(n_flip, len(candidates)), replace=False).tolist():
        y_train[i] = (y_train[i] + rng.integers(1, classes)) % classes
        planted.flipped.add(int(i))
    planted.natural_exact, planted.natural_leaks = natural_pairs, natural_leaks
    planted.train = _replaced(train, x_train, y_train)
    planted.test = _replaced(test, x_test, y_test)
    return planted


def _replaced(dataset: Dataset, x: np.ndarray, y: np.ndarray) -> Dataset:
    values = np.array([str(t) for t in x], dtype=str) if dataset.modality == "text" else x
    return Dataset(x=values, y=y, ids=dataset.ids.copy(), modality=dataset.modality, name=f"{dataset.name}+planted",
                   source=dataset.source, class_names=dataset.class_names)


# ---------------------------------------------------------------------------------------------- scoring
def _rate(hits: int, total: int) -> float:
    return hits / total if total else float("nan")


def score_audit(planted: Planted, flagged: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of the audit's ``flagged`` items (``AuditRun.flagged``) against the planted truth:
    one row per issue type (``leak``, ``exact_duplicate``, ``near_duplicate``, ``duplicate`` (either kind),
    ``label_issue``) and one per near transform (recall only: ``leak:<transform>``, ``near_duplicate:<transform>``)."""
    import pandas as pd

    def pairs(kinds: tuple[str, ...]) -> set[tuple[int, int]]:
        rows = flagged[flagged["kind"].isin(kinds) & (flagged["split"] == "train")
                       & (flagged["partner_split"] == "train")]
        return {(min(a, b), max(a, b)) for a, b in zip(rows["index"].astype(int), rows["partner_index"].astype(int),
                                                        strict=True)}

    found_leaks = set(flagged.loc[flagged["kind"] == "leak", "index"].astype(int))
    found_exact, found_near = pairs(("exact_duplicate",)), pairs(("near_duplicate",))
    found_flips = set(flagged.loc[flagged["kind"] == "label_issue", "index"].astype(int))
    true_leaks = set(planted.leaks) | planted.natural_leaks
    true_exact = planted.exact_pairs | planted.natural_exact
    true_near = set(planted.near_pairs)
    rows: list[dict[str, Any]] = []

    def add(issue: str, found: set[Any], truth: set[Any], *, also_found: set[Any] | None = None,
            also_true: set[Any] | None = None) -> None:
        """Precision over ``found`` (true: in ``truth`` or ``also_true``, e.g. a planted near pair flagged exact);
        recall of ``truth`` over ``found`` plus ``also_found`` (a planted exact pair flagged as near counts)."""
        hits = len((found | (also_found or set())) & truth)
        correct = len(found & (truth | (also_true or set())))
        rows.append({"issue": issue, "planted": len(truth), "flagged": len(found), "true_positives": hits,
                     "precision": _rate(correct, len(found)), "recall": _rate(hits, len(truth))})

    add("leak", found_leaks, true_leaks)
    add("exact_duplicate", found_exact, true_exact, also_found=found_near, also_true=true_near)
    add("near_duplicate", found_near, true_near, also_found=found_exact, also_true=true_exact)
    add("duplicate", found_exact | found_near, true_exact | true_near)
    add("label_issue", found_flips, planted.flipped)
    for transform in sorted({t for _, t in planted.leaks.values()}):
        truth = {i for i, (_, t) in planted.leaks.items() if t == transform}
        rows.append({"issue": f"leak:{transform}", "planted": len(truth), "flagged": None,
                     "true_positives": len(found_leaks & truth), "precision": None,
                     "recall": _rate(len(found_leaks & truth), len(truth))})
    for transform in sorted(set(planted.near_pairs.values())):
        truth_pairs = {p for p, t in planted.near_pairs.items() if t == transform}
        hits = len((found_near | found_exact) & truth_pairs)
        rows.append({"issue": f"near_duplicate:{transform}", "planted": len(truth_pairs), "flagged": None,
                     "true_positives": hits, "precision": None, "recall": _rate(hits, len(truth_pairs))})
    return pd.DataFrame(rows)
