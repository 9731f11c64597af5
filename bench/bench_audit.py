"""Near-duplicate and outlier finding at scale: cleanlab Datalab alone vs Datalab on Assay's neighbour graph.

Both sides get the same 128-d float32 features (clusters, with planted near duplicates and outliers) and run
Datalab's ``near_duplicate`` and ``outlier`` issue types with cleanlab's default thresholds:

- baseline: ``Datalab.find_issues(features=...)`` — cleanlab builds its own k = 10 cosine neighbour graph
  (scikit-learn brute force: O(n^2) distances);
- assay: :class:`assay.audit.ann.NeighbourIndex` (exact below 20,000 items, usearch HNSW above: the k-nearest graph
  index ``assay.audit.labels`` uses) gives each item's
  10 nearest neighbours, passed as ``knn_graph`` (``assay.audit.labels.knn_graph_from_neighbours``).

Each run is a fresh subprocess: wall time with ``time.perf_counter`` around the finding (the features are made
before the clock starts), peak memory as the child's peak resident set (``resource.getrusage``: counts C/C++
allocations such as usearch's that ``tracemalloc`` misses) minus its resident set once the features exist.
A run is stopped after ``--budget`` seconds (the time to make the features included) and a size whose run is
predicted (from the previous size: O(n^2) for the baseline, O(n log n) for assay) to take over three times the
budget is skipped, each with a printed note. Agreement: Jaccard index of
the two sides' flagged sets per issue type; recall of the planted items for each side.

    .venv/bin/python bench/bench_audit.py [--sizes 10000 100000 1000000] [--budget 300] [--sides cleanlab assay]

``--ann`` measures the near-duplicate candidate search alone (what ``assay audit`` runs on image and tabular
embeddings) at ``--ann-size`` items (default 1,000,000 x 128-d): random unit vectors — no cluster structure, the
hardest case for an index — with 500 planted pairs at cosine ~0.91 (the audit's candidate threshold is 0.90). Each
index is built and searched for every item's 5 nearest others in a fresh subprocess; reported are build and search
time, peak RSS, the index's own memory and the share of planted pairs found. The baseline in the same run is exact
search (the blocked matrix product of ``NeighbourIndex`` below its threshold) on 2,000 query items against all
items, timed and scaled to n queries — the all-pairs cost the index avoids; the same queries give recall@5.

    .venv/bin/python bench/bench_audit.py --ann [--ann-size 1000000] [--ann-methods ivf hnsw] [--budget 1200]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128
K = 10


def make_features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, near-duplicate items, outlier items): 200 clusters in 128-d; 0.5 % of items are copies of another
    item plus 1 % noise, 0.2 % are outliers (directions far from every cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    slots = rng.permutation(n)
    n_dup, n_out = n // 200, n // 500
    dup, sources, out = slots[:n_dup], slots[n_dup:2 * n_dup], slots[2 * n_dup:2 * n_dup + n_out]
    x[dup] = x[sources] + 0.01 * np.linalg.norm(x[sources], axis=1, keepdims=True) / math.sqrt(DIM) * \
        rng.normal(size=(n_dup, DIM)).astype(np.float32)
    x[out] = 3.0 * rng.normal(size=(n_out, DIM)).astype(np.float32) * np.sign(rng.normal(size=(n_out, 1)))
    return x.astype(np.float32), np.sort(np.concatenate([dup, sources])), np.sort(out)


ANN_PAIRS = 500
ANN_QUERIES = 2_000


def make_planted_pairs(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit vectors (n, 128), originals, copies): standard-normal directions; each copy is its original plus
    Gaussian noise of 0.45 x its per-coordinate scale (cosine ~0.91 to the original)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    original, copy = rng.choice(n, size=(2, ANN_PAIRS), replace=False)
    x[copy] = x[original] + 0.45 * rng.standard_normal((ANN_PAIRS, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, original, copy


def ann_child(method: str, n: int, out: str) -> None:
    """Build one index over the planted-pair vectors, search every item's 5 nearest others; write the figures."""
    from assay.audit.ann import NeighbourIndex

    x, original, copy = make_planted_pairs(n)
    base = _rss_mb()
    queries = np.random.default_rng(2).choice(n, size=min(ANN_QUERIES, n), replace=False)
    result: dict = {"method": method, "cosine": float(np.median((x[original] * x[copy]).sum(axis=1)))}
    if method == "exact":
        index = NeighbourIndex(x, exact_below=n + 1)
        start = time.perf_counter()
        idx, _ = index.query(x[queries], 6)
        result["search_s"] = (time.perf_counter() - start) * n / len(queries)
        result["build_s"] = 0.0
        np.save(out + ".npy", idx)
    else:
        start = time.perf_counter()
        index = NeighbourIndex(x, exact_below=0, approximate=method)
        result["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        idx, _ = index.self_neighbours(5)
        result["search_s"] = time.perf_counter() - start
        found = [(c in idx[o]) or (o in idx[c]) for o, c in zip(original, copy, strict=True)]
        result["pairs_found"] = float(np.mean(found))
        np.save(out + ".npy", idx[queries])
    result["index_mb"] = index.memory_bytes / 2**20
    result["peak_mb"] = _rss_mb()
    result["extra_mb"] = _rss_mb() - base
    Path(out + ".json").write_text(json.dumps(result))


def ann_main(n: int, methods: list[str], budget: float) -> None:
    print(f"near-duplicate candidate search: {n:,} x {DIM}-d random unit vectors, {ANN_PAIRS} planted pairs, "
          f"5 nearest others per item; budget {budget:.0f} s per run")
    with tempfile.TemporaryDirectory() as folder:
        rows: dict[str, dict] = {}
        for method in ["exact", *methods]:
            out = f"{folder}/ann_{method}"
            try:
                subprocess.run([sys.executable, __file__, "--ann-child", method, str(n), out], check=True,
                               timeout=budget)
            except subprocess.TimeoutExpired:
                print(f"{method:5}: did not finish within the budget, stopped after {budget:.0f} s")
                continue
            rows[method] = json.loads(Path(out + ".json").read_text())
            rows[method]["idx"] = np.load(out + ".npy")
        truth = rows["exact"]["idx"][:, 1:6] if "exact" in rows else None
        for method, r in rows.items():
            total = r["build_s"] + r["search_s"]
            line = f"{method:5}: build {r['build_s']:7.1f} s  search {r['search_s']:8.1f} s"
            if method == "exact":
                line += f" (measured on {ANN_QUERIES:,} queries, scaled to {n:,})"
            else:
                recall = np.mean([len(set(f[f >= 0]) & set(t)) / 5 for f, t in zip(r["idx"], truth, strict=True)]) \
                    if truth is not None else float("nan")
                line += (f"  total {total:7.1f} s  peak RSS {r['peak_mb']:6.0f} MB (+{r['extra_mb']:.0f} MB over the "
                         f"vectors; index {r['index_mb']:.0f} MB)  planted pairs found {r['pairs_found']:.3f} (median "
                         f"cosine {r['cosine']:.3f})  recall@5 vs exact {recall:.3f}")
                if "exact" in rows:
                    line += f"  speed-up over exact {rows['exact']['search_s'] / total:.1f}x"
            print(line)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(side: str, n: int, out: str) -> None:
    """Run one side on n items; write timing, memory and flagged items to ``out`` (npz + json)."""
    import warnings

    from cleanlab import Datalab

    x, _, _ = make_features(n)
    base = _rss_mb()
    issue_types = {"near_duplicate": {}, "outlier": {}}
    lab = Datalab(data={"item": np.arange(n)}, verbosity=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if side == "cleanlab":
            lab.find_issues(features=x, issue_types=issue_types)
            search = "sklearn brute force (cleanlab's own)"
        else:
            from assay.audit.ann import NeighbourIndex
            from assay.audit.labels import knn_graph_from_neighbours

            index = NeighbourIndex(x)
            idx, sim = index.self_neighbours(K)
            graph = knn_graph_from_neighbours(idx, np.maximum(1.0 - sim.astype(np.float64), 0.0))
            lab.find_issues(knn_graph=graph, issue_types=issue_types)
            search = f"{'exact' if index.exact else 'HNSW (usearch)'}; index {index.memory_bytes / 2**20:.0f} MB"
    seconds = time.perf_counter() - start
    issues = lab.get_issues()
    np.savez(out + ".npz", near=np.flatnonzero(issues["is_near_duplicate_issue"].to_numpy()),
             outlier=np.flatnonzero(issues["is_outlier_issue"].to_numpy()))
    Path(out + ".json").write_text(json.dumps({"seconds": seconds, "peak_mb": _rss_mb(), "extra_mb": _rss_mb() - base,
                                               "search": search}))


def _run(side: str, n: int, budget: float, folder: str) -> dict | None:
    out = f"{folder}/{side}_{n}"
    try:
        subprocess.run([sys.executable, __file__, "--child", side, str(n), out], check=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return None
    result = json.loads(Path(out + ".json").read_text())
    flagged = np.load(out + ".npz")
    result["near"] = set(flagged["near"].tolist())
    result["outlier"] = set(flagged["outlier"].tolist())
    return result


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds a run may take (predicted or observed)")
    parser.add_argument("--sides", nargs="+", choices=["cleanlab", "assay"], default=["cleanlab", "assay"])
    parser.add_argument("--ann", action="store_true", help="measure the near-duplicate candidate search alone")
    parser.add_argument("--ann-size", type=int, default=1_000_000)
    parser.add_argument("--ann-methods", nargs="+", choices=["ivf", "hnsw"], default=["ivf", "hnsw"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--ann-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ann_child:
        ann_child(args.ann_child[0], int(args.ann_child[1]), args.ann_child[2])
        return 0
    if args.ann:
        ann_main(args.ann_size, args.ann_methods, args.budget)
        return 0
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    print(f"features {DIM}-d float32, k = {K}; Datalab issue types near_duplicate + outlier, cleanlab defaults; "
          f"budget {args.budget:.0f} s per run")
    last: dict[str, tuple[int, float]] = {}
    growth = {"cleanlab": lambda r: r * r, "assay": lambda r: r * max(1.0, math.log(r * 10) / math.log(10))}
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            _, dup, out = make_features(n)
            results: dict[str, dict | None] = {}
            for side in args.sides:
                if side in last:
                    prev_n, prev_s = last[side]
                    predicted = prev_s * growth[side](n / prev_n)
                    if predicted > 3 * args.budget:  # clearly out of reach; a closer call is tried (and stopped)
                        print(f"n={n:>9,} {side:8}: skipped, predicted {predicted:,.0f} s > 3 x budget "
                              f"{args.budget:.0f} s (from {prev_s:.1f} s at n={prev_n:,})")
                        results[side] = None
                        continue
                res = _run(side, n, args.budget, folder)
                results[side] = res
                if res is None:
                    print(f"n={n:>9,} {side:8}: did not finish within the budget, stopped after {args.budget:.0f} s")
                    last[side] = (n, float("inf"))
                    continue
                last[side] = (n, res["seconds"])
                rec_dup = len(res["near"] & set(dup.tolist())) / len(dup)
                rec_out = len(res["outlier"] & set(out.tolist())) / len(out)
                print(f"n={n:>9,} {side:8}: {res['seconds']:8.1f} s  peak RSS {res['peak_mb']:7.0f} MB "
                      f"(+{res['extra_mb']:.0f} MB over the features)  near-dup flagged {len(res['near']):6} "
                      f"(planted recall {rec_dup:.3f})  outliers flagged {len(res['outlier']):6} "
                      f"(planted recall {rec_out:.3f})  [{res['search']}]")
            a, b = results.get("cleanlab"), results.get("assay")
            if a and b:
                print(f"n={n:>9,} agreement: Jaccard near_duplicate {_jaccard(a['near'], b['near']):.3f}, outlier "
                      f"{_jaccard(a['outlier'], b['outlier']):.3f}; speed-up {a['seconds'] / b['seconds']:.2f}x, "
                      f"cleanlab holds {a['extra_mb'] / max(b['extra_mb'], 1):.2f}x the extra memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
