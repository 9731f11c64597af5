"""Exact and near duplicates within and across splits, and the test items that leak from train.

Exact duplicates share a content hash (:func:`content_hashes`) after a normalisation per modality. Near
duplicates, per modality:

- images: candidates are each item's nearest neighbours by cosine similarity of embeddings (the model's, or
  :func:`assay.audit.embeddings.model_free_embeddings`) above ``image_min_cosine``, and items with equal perceptual
  hashes (pHash, Zauner 2010, as ``imagehash.phash``: the signs of the low-frequency 8x8 DCT block of a 32x32
  grayscale), which catch copies an embedding not trained for near duplicates misses. A candidate is a near
  duplicate when the grayscale pixels (at most 64x64) correlate at ``min_pixel_correlation`` or more after the best
  shift of up to ``max_shift`` pixels. Measured on digits upscaled to 32x32: copies shifted by a pixel, noised
  (sigma 0.03) or JPEG re-encoded (quality 75) keep >= 0.995, while 99.5 % of distinct digits' nearest neighbours
  stay below 0.993 (neither embeddings nor pHash alone separate them: distinct neat "1"s have cosine 0.99 and
  often equal pHash).
- text: word 13-grams of the normalised text — the contamination convention of GPT-3 (Brown et al. 2020, appendix
  C) and Llama 2 (Touvron et al. 2023, appendix A.6). Candidates come from MinHash LSH over the 13-gram sets
  (Broder 1997; ``datasketch.MinHashLSH``), then the exact share of the shorter text's 13-grams found in the other
  (containment) is checked against ``text_min_containment``. Texts shorter than 13 words are one n-gram of their
  whole length, so they match only when their words are equal.
- tabular: Euclidean nearest neighbours of standardised rows (or given embeddings); a pair is near when its
  distance is at most ``tabular_relative_distance`` times the typical (median) nearest-neighbour distance in train
  — a threshold relative to the data's own spacing rather than an absolute one in unknown units.

Above ``exact_search_below`` items the neighbour search is approximate: faiss IVF-Flat through
:class:`assay.audit.ann.NeighbourIndex` (``approximate="ivf"``), which finds a near duplicate because it sits next to
its original even where the index would miss an ordinary k-th neighbour — on 1,000,000 x 128-d structureless
vectors 99.2 % of planted cosine-0.91 pairs in about 2.5 minutes on 2 cores (``bench/bench_audit.py --ann``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from assay.audit.ann import EXACT_BELOW, IVF_PROBES, NeighbourIndex
from assay.audit.embeddings import area_downsample, model_free_embeddings, normalise_text
from assay.data.dataset import Dataset
from assay.errors import DataError

__all__ = ["PAIR_COLUMNS", "DuplicateFindings", "DuplicateSettings", "aligned_correlation", "content_hashes",
           "find_duplicates", "image_phashes", "text_ngrams"]

PAIR_COLUMNS = ["a_split", "a_index", "b_split", "b_index", "kind", "method", "similarity"]
_WORD = re.compile(r"\w+")
_VERIFY_SIDE = 64  # images are compared pixel by pixel at most this size a side


@dataclass(frozen=True)
class DuplicateSettings:
    """Thresholds of :func:`find_duplicates` (module docstring: what each means and why)."""

    neighbours: int = 5  # candidates per item from the neighbour search (images, tabular)
    image_min_cosine: float = 0.90  # candidates
    phash_candidates: bool = True  # items with equal pHash are candidates too
    min_pixel_correlation: float = 0.993
    max_shift: int = 2
    text_ngram: int = 13
    text_min_containment: float = 0.5
    minhash_permutations: int = 128
    tabular_relative_distance: float = 0.2
    exact_search_below: int = EXACT_BELOW
    seed: int = 1  # MinHash permutations


@dataclass
class DuplicateFindings:
    """``pairs``: one row per duplicate pair (:data:`PAIR_COLUMNS`; within a split ``a_index < b_index``; test→train
    pairs have ``a_split="test"``, ``b_split="train"``; ``similarity`` is 1.0 for exact pairs, else cosine (images),
    13-gram containment (text) or 1 − distance / typical nearest-neighbour distance (tabular)).
    ``groups``: within-split duplicate groups, one row per member [split, group, index, size] (connected components
    of the exact and near pairs). ``leaked_test``: per test item, True when it has an exact or near duplicate in
    train (empty without a test split). ``notes``: how the search was done, for the report."""

    pairs: pd.DataFrame
    groups: pd.DataFrame
    leaked_test: np.ndarray
    notes: list[str] = field(default_factory=list)


def content_hashes(dataset: Dataset) -> np.ndarray:
    """SHA-256 (hex) of each item's normalised content: equal hashes = the same content.

    images: the pixels quantised to 8 bits (``round(255·x)``, so decoded-then-scaled copies of one file agree) with
    the shape; text: :func:`normalise_text` (NFKC, casefold, collapsed whitespace) in UTF-8; tabular: the row
    rounded to 6 significant digits (what a CSV writer's ``%g`` keeps, so a row read from CSV and the same row
    from an ``.npz`` agree), ``-0.0`` as ``0.0``.
    """
    if dataset.modality == "text":
        return np.array([_sha(normalise_text(str(t)).encode("utf-8")) for t in dataset.x], dtype=object)
    x = np.asarray(dataset.x)
    if dataset.modality == "image":
        quantised = np.round(x.astype(np.float64) * 255.0).astype(np.int32)
        shape = repr(x.shape[1:]).encode()
        return np.array([_sha(shape + row.tobytes()) for row in quantised], dtype=object)
    rows = _significant(x.reshape(len(x), -1).astype(np.float64), 6)
    return np.array([_sha(row.tobytes()) for row in rows], dtype=object)


def find_duplicates(train: Dataset, test: Dataset | None = None, *, train_embeddings: np.ndarray | None = None,
                    test_embeddings: np.ndarray | None = None,
                    settings: DuplicateSettings | None = None) -> DuplicateFindings:
    """Exact and near duplicates within ``train``, within ``test`` and from test to train (module docstring).

    Embeddings (one row per item, e.g. a model's features) are used for images and tabular data; without them the
    model-free embeddings are computed (the test split in the train split's space).
    """
    s = settings or DuplicateSettings()
    _check_compatible(train, test)
    for name, emb, ds in (("train_embeddings", train_embeddings, train), ("test_embeddings", test_embeddings, test)):
        if emb is not None and (ds is None or np.ndim(emb) != 2 or len(emb) != len(ds)):
            raise DataError(f"{name} has shape {np.shape(emb)}, not one row per item of the split",
                            where=name, fix="give one embedding row per item, in the split's order")
    notes: list[str] = []
    frames = [_exact_pairs(train, test)]
    if train.modality == "text":
        frames.append(_text_near(train, test, s, notes))
        if train_embeddings is not None:
            notes.append("text near duplicates come from 13-gram overlap; the given embeddings were not used")
    else:
        if train_embeddings is None:
            train_embeddings = model_free_embeddings(train)
            notes.append("near duplicates searched in model-free embeddings (no model given)")
        if test is not None and test_embeddings is None:
            test_embeddings = model_free_embeddings(test, reference=train)
        near = _image_near if train.modality == "image" else _tabular_near
        frames.append(near(train, test, train_embeddings, test_embeddings, s, notes))
    pairs = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else _empty_pairs()
    pairs = _drop_near_already_exact(pairs)
    leaked = np.zeros(0 if test is None else len(test), dtype=bool)
    if test is not None:
        cross = pairs[(pairs.a_split == "test") & (pairs.b_split == "train")]
        leaked[cross.a_index.to_numpy(dtype=np.int64)] = True
    groups = _groups(pairs, {"train": len(train), **({"test": len(test)} if test is not None else {})})
    return DuplicateFindings(pairs=pairs.reset_index(drop=True), groups=groups, leaked_test=leaked, notes=notes)


# ---- exact ----------------------------------------------------------------------------------------------------------


def _exact_pairs(train: Dataset, test: Dataset | None) -> pd.DataFrame:
    """Each member of a same-hash group paired with the group's first item (not all pairs: a group of m gives
    m − 1 rows); each test item whose hash is in train paired with the first such train item."""
    splits = {"train": content_hashes(train)}
    if test is not None:
        splits["test"] = content_hashes(test)
    rows: list[tuple[str, int, str, int]] = []
    first_in_train: dict[str, int] = {}
    for split, hashes in splits.items():
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h in first:
                rows.append((split, first[h], split, i))
            else:
                first[h] = i
        if split == "train":
            first_in_train = first
    if test is not None:
        rows += [("test", i, "train", first_in_train[h]) for i, h in enumerate(splits["test"]) if h in first_in_train]
    return _pairs_frame(rows, "exact", "content sha256", [1.0] * len(rows))


# ---- near: images ---------------------------------------------------------------------------------------------------


def image_phashes(images: np.ndarray) -> np.ndarray:
    """(n, 64) bool pHash bits per image (``imagehash.phash`` of the grayscale image as 8-bit PIL)."""
    import imagehash
    from PIL import Image

    x = np.asarray(images, dtype=np.float32)
    gray = x.mean(axis=1) if x.ndim == 4 else x.reshape(len(x), *x.shape[-2:])
    pixels = np.clip(np.round(gray * 255.0), 0, 255).astype(np.uint8)
    return np.array([imagehash.phash(Image.fromarray(p, mode="L")).hash.reshape(-1) for p in pixels], dtype=bool)


def _image_near(train: Dataset, test: Dataset | None, train_emb: np.ndarray, test_emb: np.ndarray | None,
                s: DuplicateSettings, notes: list[str]) -> pd.DataFrame:
    candidates = _cosine_candidates(train_emb, test_emb, s, notes, min_similarity=s.image_min_cosine)
    hashes = {"train": image_phashes(train.x)} if s.phash_candidates else {}
    if test is not None and s.phash_candidates:
        hashes["test"] = image_phashes(test.x)
    rows = list(zip(candidates.a_split, candidates.a_index.astype(int), candidates.b_split,
                    candidates.b_index.astype(int), strict=True)) + _phash_buckets(hashes)
    rows = list(dict.fromkeys(rows))  # unique, in order
    images = {"train": _small_gray(train.x), **({"test": _small_gray(test.x)} if test is not None else {})}
    kept: list[tuple[str, int, str, int]] = []
    scores: list[float] = []
    for pair in rows:
        a_s, a, b_s, b = pair
        score = aligned_correlation(images[a_s][a], images[b_s][b], s.max_shift)
        if score >= s.min_pixel_correlation:
            kept.append(pair)
            scores.append(score)
    notes.append(f"image near duplicates: candidates with embedding cosine >= {s.image_min_cosine}"
                 f"{' or equal pHash' if s.phash_candidates else ''}, kept when the grayscale pixels correlate >= "
                 f"{s.min_pixel_correlation} after the best shift of up to {s.max_shift} pixels")
    return _pairs_frame(kept, "near", "pixel correlation (cosine/pHash candidates)", scores)


def _phash_buckets(hashes: dict[str, np.ndarray]) -> list[tuple[str, int, str, int]]:
    """Pairs of items with equal pHash (each member paired with its bucket's first item per split; a test item also
    with the bucket's first train item): the candidates an embedding not made for near duplicates can miss."""
    first: dict[tuple[str, bytes], int] = {}
    rows: list[tuple[str, int, str, int]] = []
    for split, bits in hashes.items():
        for i, key in enumerate(np.packbits(bits, axis=1)):
            k = (split, key.tobytes())
            if k in first:
                rows.append((split, first[k], split, i))
            else:
                first[k] = i
            if split == "test" and ("train", key.tobytes()) in first:
                rows.append(("test", i, "train", first[("train", key.tobytes())]))
    return rows


def aligned_correlation(a: np.ndarray, b: np.ndarray, max_shift: int) -> float:
    """Largest Pearson correlation of two equally sized 2-D images over integer shifts of up to ``max_shift`` pixels
    (the overlapping region only): a copy shifted, noised or re-encoded keeps it near 1."""
    h, w = a.shape
    best = -1.0
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            pa = a[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            pb = b[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            pa = pa - pa.mean()
            pb = pb - pb.mean()
            den = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
            best = max(best, float((pa * pb).sum()) / den if den > 0 else float(np.array_equal(pa, pb)))
    return best


def _small_gray(images: np.ndarray) -> np.ndarray:
    """Grayscale images area-downsampled to at most :data:`_VERIFY_SIDE` a side (float64 for the correlation)."""
    x = np.asarray(images, dtype=np.float32)
    gray = x.mean(axis=1) if x.ndim == 4 else x.reshape(len(x), *x.shape[-2:])
    if max(gray.shape[1:]) > _VERIFY_SIDE:
        gray = np.stack([area_downsample(gray[i:i + 1], _VERIFY_SIDE)[0] for i in range(len(gray))])
    return gray.astype(np.float64)


def _cosine_candidates(train_emb: np.ndarray, test_emb: np.ndarray | None, s: DuplicateSettings, notes: list[str],
                       *, min_similarity: float) -> pd.DataFrame:
    rows: list[tuple[str, int, str, int]] = []
    sims: list[float] = []
    train_index = NeighbourIndex(train_emb, metric="cos", exact_below=s.exact_search_below, approximate="ivf")
    _note_search(train_index, notes)
    searches = [("train", "train", train_index.self_neighbours(min(s.neighbours, len(train_emb) - 1)))]
    if test_emb is not None:
        test_index = NeighbourIndex(test_emb, metric="cos", exact_below=s.exact_search_below, approximate="ivf")
        searches += [("test", "train", train_index.query(test_emb, s.neighbours)),
                     ("test", "test", test_index.self_neighbours(min(s.neighbours, len(test_emb) - 1)))]
    for split_a, split_b, (idx, sim) in searches:
        _collect(rows, sims, split_a, split_b, idx, sim, keep=sim >= min_similarity)
    return _pairs_frame(rows, "near", "cosine", sims)


# ---- near: tabular --------------------------------------------------------------------------------------------------


def _tabular_near(train: Dataset, test: Dataset | None, train_emb: np.ndarray, test_emb: np.ndarray | None,
                  s: DuplicateSettings, notes: list[str]) -> pd.DataFrame:
    train_index = NeighbourIndex(train_emb, metric="l2", exact_below=s.exact_search_below, approximate="ivf")
    _note_search(train_index, notes)
    k = min(s.neighbours, len(train_emb) - 1)
    idx, dist = train_index.self_neighbours(k) if k > 0 else (np.empty((len(train_emb), 0), np.int64),) * 2
    nearest = dist[:, 0][dist[:, 0] > 0] if k > 0 else np.empty(0)
    typical = float(np.median(nearest)) if len(nearest) else 0.0
    if typical <= 0:
        notes.append("tabular near duplicates not searched: every train row is alone or exactly duplicated")
        return _empty_pairs()
    limit = s.tabular_relative_distance * typical
    notes.append(f"tabular near duplicates: standardised Euclidean distance <= {s.tabular_relative_distance} x the "
                 f"median nearest-neighbour distance in train ({typical:.4g}) = {limit:.4g}")
    rows: list[tuple[str, int, str, int]] = []
    dists: list[float] = []
    searches = [("train", "train", (idx, dist))]
    if test_emb is not None:
        searches.append(("test", "train", train_index.query(test_emb, s.neighbours)))
        kt = min(s.neighbours, len(test_emb) - 1)
        if kt > 0:
            test_index = NeighbourIndex(test_emb, metric="l2", exact_below=s.exact_search_below,
                                            approximate="ivf")
            searches.append(("test", "test", test_index.self_neighbours(kt)))
    for split_a, split_b, (found, d) in searches:
        _collect(rows, dists, split_a, split_b, found, d, keep=d <= limit)
    return _pairs_frame(rows, "near", "standardised distance", [1.0 - d / typical for d in dists])


# ---- near: text -----------------------------------------------------------------------------------------------------


def text_ngrams(text: str, n: int = 13) -> set[str]:
    """The set of word ``n``-grams of the normalised text (words = ``\\w+`` runs, so punctuation is ignored); a text
    of fewer than ``n`` words is one n-gram of all its words (none when it has no words)."""
    words = _WORD.findall(normalise_text(text))
    if not words:
        return set()
    size = min(n, len(words))
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def _text_near(train: Dataset, test: Dataset | None, s: DuplicateSettings, notes: list[str]) -> pd.DataFrame:
    from datasketch import MinHash, MinHashLSH  # type: ignore[import-untyped]

    grams = {"train": [text_ngrams(str(t), s.text_ngram) for t in train.x]}
    if test is not None:
        grams["test"] = [text_ngrams(str(t), s.text_ngram) for t in test.x]
    c = s.text_min_containment
    # Equal-sized sets with containment c have Jaccard c / (2 - c); LSH is tuned a little below that.
    lsh = MinHashLSH(threshold=0.8 * c / (2 - c), num_perm=s.minhash_permutations)
    sketches: dict[str, list[MinHash]] = {}
    for split, sets in grams.items():
        sketches[split] = MinHash.bulk([[g.encode("utf-8") for g in sorted(g_set)] for g_set in sets],
                                       num_perm=s.minhash_permutations, seed=s.seed)
        for i, (sketch, g_set) in enumerate(zip(sketches[split], sets, strict=True)):
            if g_set:
                lsh.insert((split, i), sketch)
    notes.append(f"text near duplicates: word {s.text_ngram}-gram containment >= {c} (candidates from MinHash LSH, "
                 f"{s.minhash_permutations} permutations)")
    rows: list[tuple[str, int, str, int]] = []
    shares: list[float] = []
    seen: set[tuple[str, int, str, int]] = set()
    for split, sets in grams.items():
        for i, g_set in enumerate(sets):
            if not g_set:
                continue
            for other_split, j in lsh.query(sketches[split][i]):
                pair = _order(split, i, other_split, j)
                if pair is None or pair in seen:
                    continue
                seen.add(pair)
                a, b = grams[pair[0]][pair[1]], grams[pair[2]][pair[3]]
                share = len(a & b) / min(len(a), len(b))
                if share >= c:
                    rows.append(pair)
                    shares.append(share)
    return _pairs_frame(rows, "near", f"{s.text_ngram}-gram containment", shares)


# ---- shared ---------------------------------------------------------------------------------------------------------


def _order(split_a: str, a: int, split_b: str, b: int) -> tuple[str, int, str, int] | None:
    """A pair in the canonical orientation (test before train; within a split the smaller index first); None for an
    item paired with itself."""
    if split_a == split_b:
        if a == b:
            return None
        return (split_a, min(a, b), split_b, max(a, b))
    return ("test", a, "train", b) if split_a == "test" else ("test", b, "train", a)


def _collect(rows: list[tuple[str, int, str, int]], values: list[float], split_a: str, split_b: str,
             idx: np.ndarray, score: np.ndarray, *, keep: np.ndarray) -> None:
    """Append the neighbour pairs where ``keep`` (same shape as ``idx``) holds, each unordered pair once."""
    seen = set(rows)
    for i, col in zip(*np.nonzero(keep & (idx >= 0) & np.isfinite(score)), strict=True):
        pair = _order(split_a, int(i), split_b, int(idx[i, col]))
        if pair is not None and pair not in seen:
            seen.add(pair)
            rows.append(pair)
            values.append(float(score[i, col]))


def _note_search(index: NeighbourIndex, notes: list[str]) -> None:
    if not index.exact:
        notes.append(f"neighbour search approximate (faiss IVF-Flat, {IVF_PROBES} cells probed) over {index.size} "
                     "items: a near duplicate may be missed (99 % of cosine-0.91 pairs found among 1,000,000 random "
                     "vectors); below the size threshold the search is exact")


def _pairs_frame(rows: Iterable[tuple[str, int, str, int]], kind: str, method: str, similarity: list[float]
                 ) -> pd.DataFrame:
    rows = list(rows)
    if not rows:
        return _empty_pairs()
    frame = pd.DataFrame(rows, columns=["a_split", "a_index", "b_split", "b_index"])
    frame["kind"] = kind
    frame["method"] = method
    frame["similarity"] = np.asarray(similarity, dtype=np.float64)
    return frame


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({"a_split": pd.Series(dtype=object), "a_index": pd.Series(dtype=np.int64),
                         "b_split": pd.Series(dtype=object), "b_index": pd.Series(dtype=np.int64),
                         "kind": pd.Series(dtype=object), "method": pd.Series(dtype=object),
                         "similarity": pd.Series(dtype=np.float64)})


def _drop_near_already_exact(pairs: pd.DataFrame) -> pd.DataFrame:
    """A near pair whose items are exact duplicates (directly, or through the same exact group) adds nothing."""
    if not len(pairs):
        return pairs
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def root(key: tuple[str, int]) -> tuple[str, int]:
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    exact = pairs[pairs.kind == "exact"]
    for a_s, a, b_s, b in zip(exact.a_split, exact.a_index, exact.b_split, exact.b_index, strict=True):
        ra, rb = root((a_s, int(a))), root((b_s, int(b)))
        if ra != rb:
            parent[ra] = rb
    redundant = np.array([kind == "near" and root((a_s, int(a))) == root((b_s, int(b))) for kind, a_s, a, b_s, b in
                          zip(pairs.kind, pairs.a_split, pairs.a_index, pairs.b_split, pairs.b_index, strict=True)],
                         dtype=bool)
    return pairs[~redundant]


def _groups(pairs: pd.DataFrame, sizes: dict[str, int]) -> pd.DataFrame:
    """Connected components of the within-split pairs, one row per member of a component of two or more."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    out = []
    for split, n in sizes.items():
        inside = pairs[(pairs.a_split == split) & (pairs.b_split == split)]
        if not len(inside):
            continue
        a = inside.a_index.to_numpy(dtype=np.int64)
        b = inside.b_index.to_numpy(dtype=np.int64)
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
        _, label = connected_components(graph, directed=False)
        members = np.unique(np.concatenate([a, b]))
        comp = label[members]
        _, group, size = np.unique(comp, return_inverse=True, return_counts=True)
        out.append(pd.DataFrame({"split": split, "group": group, "index": members, "size": size[group]}))
    if not out:
        return pd.DataFrame({"split": pd.Series(dtype=object), "group": pd.Series(dtype=np.int64),
                             "index": pd.Series(dtype=np.int64), "size": pd.Series(dtype=np.int64)})
    return pd.concat(out, ignore_index=True).sort_values(["split", "group", "index"], ignore_index=True)


def _check_compatible(train: Dataset, test: Dataset | None) -> None:
    if test is None:
        return
    if train.modality != test.modality:
        raise DataError(f"train ({train.source}) is {train.modality} data but test ({test.source}) is "
                        f"{test.modality} data", where="test", fix="give train and test splits of the same dataset")
    if train.modality != "text" and np.shape(train.x)[1:] != np.shape(test.x)[1:]:
        raise DataError(f"train ({train.source}) items have shape {np.shape(train.x)[1:]} but test ({test.source}) "
                        f"items have shape {np.shape(test.x)[1:]}", where="test",
                        fix="give train and test splits with the same image size or columns")


def _significant(x: np.ndarray, digits: int) -> np.ndarray:
    """Round to ``digits`` significant digits (zeros, and -0.0 → 0.0, stay zero)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.floor(np.log10(np.abs(x)))
    magnitude = np.where(np.isfinite(magnitude), magnitude, 0.0)
    scale = 10.0 ** (digits - 1 - magnitude)
    return np.round(x * scale) / scale + 0.0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
