"""Nearest-neighbour search with one interface: exact below a size threshold, approximate above.

Exact search is a blocked matrix product (queries in blocks so that a block of scores stays under
``_BLOCK_BYTES``), so its memory is the vectors plus 64 MB whatever the size. Above ``exact_below`` items there are
two approximate indexes, chosen by what the caller needs:

- ``approximate="hnsw"`` — usearch's HNSW graph (Malkov & Yashunin 2018), float32 vectors: a good *k-nearest* graph
  (recall@11 0.999 on 100,000 clustered items), used for cleanlab's outlier scores, which average all k distances.
  Its build is the cost: 28 s for 100,000 random 128-d items on 2 cores, about 6 minutes at 1,000,000, and the
  self-search as long again. Memory: the vectors (4·n·d bytes) plus about ``n·(2·connectivity·4 + 64)`` bytes of
  graph (1,000,000 x 128-d at connectivity 16: 0.5 GB + 0.2 GB).
- ``approximate="ivf"`` — faiss's inverted file (IVF-Flat; Jégou et al. 2011): k-means into ``4·sqrt(n)`` cells,
  each query scans the ``ivf_probes`` nearest cells. A near duplicate sits next to its original, so it is almost
  always in a probed cell even where the k-th neighbour of a random item is not: this is the index for
  *near-duplicate candidates*. Measured on 1,000,000 x 128-d random unit vectors (the hardest case: no cluster
  structure) with 500 planted pairs at cosine ~0.91 (`bench/bench_audit.py --ann-only`): build 27 s, self-search
  112 s on 2 cores, 99.2 % of the planted pairs found at 16 probes (94.6 % at 8). Memory over the caller's
  vectors: our unit-length copy plus faiss's (2·4·n·d bytes), the cell ids (8·n), the k-means training sample
  (at most 64·4·sqrt(n)·4·d bytes) and the results (12·n·(k+1) bytes) — at 1,000,000 x 128-d and k = 5 about
  1.0 + 0.01 + 0.13 + 0.07 = 1.2 GB.

:attr:`NeighbourIndex.memory_bytes` reports the index's own figure.

Search breadth ``expansion_search=128`` (usearch's default is 64): on 100,000 clustered 128-d items recall@11 rose
from 0.993 to 0.999 for 1.35x the query time, and the kNN-distance outliers cleanlab's Datalab flags on the graph
went from Jaccard 0.61 to 0.88 with the exact graph's (outlier scores average all k distances, so a few missed
neighbours move many borderline items); build breadth ``expansion_add=64`` (default 128) halves the build.

Metrics: ``"cos"`` returns cosine similarities (higher = closer); ``"l2"`` returns Euclidean distances
(lower = closer). Missing neighbours (fewer than ``k`` items, or an approximate search that returned fewer) are
index -1 with similarity NaN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np

__all__ = ["EXACT_BELOW", "IVF_PROBES", "NeighbourIndex"]

#: Below this many indexed items search is exact (the all-pairs product is cheap there and HNSW buys nothing).
EXACT_BELOW = 20_000
_BLOCK_BYTES = 64 * 2**20
#: Cells an IVF query scans (of ``4·sqrt(n)``): 99.2 % of planted cosine-0.91 pairs among 1,000,000 random 128-d
#: vectors at 16, 94.6 % at 8 (half the time).
IVF_PROBES = 16
Metric = Literal["cos", "l2"]
Approximate = Literal["hnsw", "ivf"]


class NeighbourIndex:
    """k-nearest-neighbour index over ``vectors`` (n, d); ``exact`` is True when search is exact."""

    def __init__(self, vectors: np.ndarray, *, metric: Metric = "cos", exact_below: int = EXACT_BELOW,
                 approximate: Approximate = "hnsw", connectivity: int = 16, expansion_add: int = 64,
                 expansion_search: int = 128, ivf_probes: int = IVF_PROBES, threads: int = 0) -> None:
        if metric not in ("cos", "l2"):
            raise ValueError(f"metric must be 'cos' or 'l2', not {metric!r}")
        if approximate not in ("hnsw", "ivf"):
            raise ValueError(f"approximate must be 'hnsw' or 'ivf', not {approximate!r}")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"vectors must be a non-empty (n, d) array, not shape {x.shape}")
        self.metric: Metric = metric
        self.size = len(x)
        self.exact = self.size < exact_below
        self._threads = threads
        if metric == "cos":
            x = _unit_rows(x)
        self._vectors = x
        self._index = None
        self._ivf: _IVF | None = None
        #: "exact", "hnsw" or "ivf": the search this index does.
        self.method = "exact" if self.exact else approximate
        if not self.exact and approximate == "ivf":
            self._ivf = _IVF(x, metric, probes=ivf_probes, threads=threads)
        elif not self.exact:
            from usearch.index import Index

            self._index = Index(ndim=x.shape[1], metric="cos" if metric == "cos" else "l2sq", dtype="f32",
                                connectivity=connectivity, expansion_add=expansion_add,
                                expansion_search=expansion_search)
            self._index.add(np.arange(self.size, dtype=np.uint64), x, threads=threads)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the search structure (the vectors for exact search; usearch's own count for HNSW)."""
        if self._index is not None:
            return int(self._index.memory_usage)
        if self._ivf is not None:
            return self._ivf.memory_bytes
        return int(self._vectors.nbytes)

    def query(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed items to each row of ``x``: (indices int64 (m, k), scores float32 (m, k)),
        nearest first; scores are cosine similarities (``"cos"``) or Euclidean distances (``"l2"``)."""
        q = np.ascontiguousarray(x, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self._vectors.shape[1]:
            raise ValueError(f"queries must be (m, {self._vectors.shape[1]}), not shape {q.shape}")
        if self.metric == "cos":
            q = _unit_rows(q)
        return self._search(q, k)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0 or len(q) == 0:
            return np.empty((len(q), max(k, 0)), np.int64), np.empty((len(q), max(k, 0)), np.float32)
        if self._ivf is not None:
            return self._ivf.search(q, k)
        if self._index is None:
            return self._exact(q, k)
        return self._approximate(q, k)

    def self_neighbours(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest *other* indexed items of every indexed item (the item itself removed even when an
        identical copy ties with it)."""
        idx, score = self._search(self._vectors, k + 1)  # already unit rows for cosine: no second copy
        own = idx == np.arange(self.size)[:, None]
        # Drop the item itself where found, else the farthest of the k + 1 (so exactly k remain per row).
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(self.size), drop] = False
        return idx[keep].reshape(self.size, k), score[keep].reshape(self.size, k)

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.size
        kk = min(k, n)
        out_idx = np.full((len(q), k), -1, dtype=np.int64)
        out_score = np.full((len(q), k), np.nan, dtype=np.float32)
        base = self._vectors.astype(np.float64)  # once per call: converting per block cost more than the products
        base_sq = (base ** 2).sum(axis=1) if self.metric == "l2" else None
        block = max(16, _BLOCK_BYTES // (8 * n))
        for start in range(0, len(q), block):
            part = q[start:start + block]
            sims = part.astype(np.float64) @ base.T
            if base_sq is not None:  # squared distance, negated so that larger = closer like cosine
                sims = 2 * sims - base_sq[None, :] - (part.astype(np.float64) ** 2).sum(axis=1)[:, None]
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(part), 1))
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1, kind="stable")
            out_idx[start:start + len(part), :kk] = np.take_along_axis(top, order, axis=1)
            best = np.take_along_axis(top_sims, order, axis=1)
            if base_sq is not None:
                best = np.sqrt(np.maximum(-best, 0.0))
            out_score[start:start + len(part), :kk] = best
        return out_idx, out_score

    def _approximate(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._index is not None
        from usearch.index import BatchMatches

        matches = self._index.search(q, k, threads=self._threads)
        assert isinstance(matches, BatchMatches)  # a 2-D query array always gives a batch
        keys = np.asarray(matches.keys).reshape(len(q), -1)
        dist = np.asarray(matches.distances, dtype=np.float64).reshape(len(q), -1)
        counts = np.asarray(matches.counts).reshape(len(q))
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        idx = np.where(valid, keys.astype(np.int64), -1)
        score = 1.0 - dist if self.metric == "cos" else np.sqrt(np.maximum(dist, 0.0))
        score = np.where(valid, score, np.nan)
        out_idx = np.full((len(q), k), -1, dtype=np.int64)
        out_score = np.full((len(q), k), np.nan, dtype=np.float32)
        out_idx[:, :idx.shape[1]] = idx
        out_score[:, :idx.shape[1]] = score
        return out_idx, out_score


class _IVF:
    """faiss IVF-Flat over ``x`` (already unit rows for cosine): ``4·sqrt(n)`` k-means cells (at least 39 training
    points each, faiss's minimum), trained on a seeded sample of up to 64 points per cell."""

    def __init__(self, x: np.ndarray, metric: Metric, *, probes: int, threads: int) -> None:
        import faiss

        n, d = x.shape
        cells = int(max(1, min(round(4 * np.sqrt(n)), n // 39)))
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cos" else faiss.METRIC_L2
        self._quantizer = faiss.IndexFlatIP(d) if metric == "cos" else faiss.IndexFlatL2(d)
        self._index = faiss.IndexIVFFlat(self._quantizer, d, cells, faiss_metric)
        self._metric = metric
        self._threads = threads
        sample = np.sort(np.random.default_rng(0).choice(n, size=min(n, 64 * cells), replace=False))
        with _omp_threads(threads):
            self._index.train(np.ascontiguousarray(x[sample]))
            self._index.add(x)
        self._index.nprobe = min(probes, cells)
        self.memory_bytes = int(n * (self._index.code_size + 8) + cells * d * 4)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with _omp_threads(self._threads):
            dist, idx = self._index.search(q, k)
        valid = idx >= 0
        score = dist if self._metric == "cos" else np.sqrt(np.maximum(dist, 0.0))
        return (np.where(valid, idx, -1).astype(np.int64),
                np.where(valid, score, np.nan).astype(np.float32))


@contextmanager
def _omp_threads(threads: int) -> Iterator[None]:
    """Run faiss with ``threads`` OpenMP threads (0: its default), restoring the process-wide setting after."""
    if threads <= 0:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)
