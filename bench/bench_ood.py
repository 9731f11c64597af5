"""Feature-based OOD detectors: KNN (k=50) and Mahalanobis, fit + score on 100,000 x 512 float32 features.

Data: 10 Gaussian classes in 512 dimensions (seeded); 100,000 training rows, 100,000 ID queries and 10,000
OOD queries (Gaussians around midpoints of pairs of class centres). Baselines measured in the same run:

* KNN: scikit-learn ``NearestNeighbors(algorithm="brute")`` on L2-normalized float64 features (what
  ``KNNDetector`` did before, and what pytorch-ood's ``KNN`` does).
* Mahalanobis: Lee et al.'s reference style: ``EmpiricalCovariance`` on class-centred float64 features,
  then ``mahalanobis()`` once per class and the minimum over classes.

Brute-force KNN costs the same per query, so both KNN sides score the same first 10,000 ID + 1,000 OOD
queries and the time for all 110,000 is extrapolated linearly (``--full`` scores them all: ~6 min).
Mahalanobis scores all 110,000 queries, except the slow scikit-learn reference (the same 11,000,
extrapolated); a vectorized numpy loop over classes is a second, stronger Mahalanobis baseline.

Each measurement runs in a fresh subprocess. Memory is that process's peak RSS during fit + score minus
its RSS just before (Linux VmHWM, reset through /proc/self/clear_refs): every allocation counts (numpy,
BLAS, scikit-learn), the input data does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine

N_TRAIN, N_ID, N_OOD, DIMS, CLASSES, K = 100_000, 100_000, 10_000, 512, 10, 50
KNN_SUBSET_ID, KNN_SUBSET_OOD = 10_000, 1_000


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train features + labels, ID queries, OOD queries (float32, as models emit them)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=0.5, size=(CLASSES, DIMS)).astype(np.float32)

    def draw(means: np.ndarray, n: int) -> np.ndarray:
        return means[rng.integers(0, len(means), n)] + rng.standard_normal((n, DIMS), dtype=np.float32)

    labels = rng.integers(0, CLASSES, N_TRAIN)
    train = centres[labels] + rng.standard_normal((N_TRAIN, DIMS), dtype=np.float32)
    pairs = rng.choice(CLASSES, size=(20, 2))
    return train, labels, draw(centres, N_ID), draw((centres[pairs[:, 0]] + centres[pairs[:, 1]]) / 2, N_OOD)


def _unit_rows64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_assay(train, labels, queries):
    from assay.checks.ood_scores import KNNDetector

    detector = KNNDetector(k=K).fit(train)
    yield
    yield detector.score(queries)


def knn_sklearn(train, labels, queries):
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=K, algorithm="brute").fit(_unit_rows64(train))
    yield
    yield -index.kneighbors(_unit_rows64(queries))[0][:, -1]


def mahalanobis_assay(train, labels, queries):
    from assay.checks.ood_scores import MahalanobisDetector

    detector = MahalanobisDetector().fit(train, labels)
    yield
    yield detector.score(queries)


def mahalanobis_reference(train, labels, queries):
    from sklearn.covariance import EmpiricalCovariance

    x = train.astype(np.float64)
    means = np.stack([x[labels == c].mean(axis=0) for c in range(CLASSES)])
    covariance = EmpiricalCovariance(assume_centered=False).fit(x - means[labels])
    yield
    q = queries.astype(np.float64)
    yield -np.min([covariance.mahalanobis(q - mu) for mu in means], axis=0)


def mahalanobis_numpy_loop(train, labels, queries):
    x = train.astype(np.float64)
    means = np.stack([x[labels == c].mean(axis=0) for c in range(CLASSES)])
    centred = x - means[labels]
    precision = np.linalg.pinv(centred.T @ centred / len(x), hermitian=True)
    yield
    q = queries.astype(np.float64)
    yield -np.min([np.einsum("ij,ij->i", (q - mu) @ precision, q - mu) for mu in means], axis=0)


MEASUREMENTS = {f.__name__: f for f in (knn_assay, knn_sklearn, mahalanobis_assay, mahalanobis_reference,
                                        mahalanobis_numpy_loop)}


def _status(field: str) -> float:
    """A VmRSS/VmHWM line of /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def child(name: str, n_id: int, n_ood: int, out: Path) -> None:
    train, labels, id_queries, ood_queries = make_data()
    queries = np.concatenate([id_queries[:n_id], ood_queries[:n_ood]])
    del id_queries, ood_queries
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
        rss_before = _status("VmRSS")
    except OSError:
        rss_before = float("nan")
    steps = MEASUREMENTS[name](train, labels, queries)
    t = time.perf_counter()
    next(steps)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    scores = next(steps)
    t_score = time.perf_counter() - t
    peak = _status("VmHWM") - rss_before  # NaN if the mark could not be reset
    np.save(out / f"{name}.npy", scores)
    print(json.dumps({"fit": t_fit, "score": t_score, "peak_mib": peak, "n_queries": len(queries)}))


def measure(name: str, n_id: int, n_ood: int, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", name, str(n_id), str(n_ood), str(out)],
                          cwd=Path(__file__).parent, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["scores"] = np.load(out / f"{name}.npy")
    return result


RUNS = [  # detector, measurement, label, queries scored (the rest extrapolated)
    ("KNN k=50", "knn_assay", "assay KNNDetector", "subset"),
    ("KNN k=50", "knn_sklearn", "sklearn NearestNeighbors brute f64", "subset"),
    ("Mahalanobis", "mahalanobis_assay", "assay MahalanobisDetector", "all"),
    ("Mahalanobis", "mahalanobis_reference", "EmpiricalCovariance+mahalanobis()", "subset"),
    ("Mahalanobis", "mahalanobis_numpy_loop", "numpy loop, (x-mu)P(x-mu) per class", "all"),
]


def main() -> None:
    from assay.stats.ranking import auroc

    full = "--full" in sys.argv
    total = N_ID + N_OOD
    print(f"# OOD detectors: fit on {N_TRAIN:,} x {DIMS} float32 features ({CLASSES} Gaussian classes), "
          f"score {N_ID:,} ID + {N_OOD:,} OOD — {machine()}")
    print(f"time = fit + score of all {total:,} queries, one run each in a fresh subprocess ('x10': scored the "
          f"first {KNN_SUBSET_ID:,} ID + {KNN_SUBSET_OOD:,} OOD and scaled, cost being linear in queries); "
          "peak = max RSS during fit+score minus RSS before")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for detector, name, label, queries in RUNS:
            n_id, n_ood = (N_ID, N_OOD) if queries == "all" or full else (KNN_SUBSET_ID, KNN_SUBSET_OOD)
            r = results[name] = measure(name, n_id, n_ood, Path(tmp))
            scale = total / r["n_queries"]
            r["total"] = r["fit"] + r["score"] * scale
            r["id"], r["ood"] = r["scores"][:n_id], r["scores"][n_id:]
            print(f"{detector:11s} {label:35s} fit {r['fit']:4.1f} s + score {r['score'] * scale:6.1f} s = "
                  f"{r['total']:6.1f} s{'' if scale == 1 else f' (x{scale:g})'}; peak +{r['peak_mib']:,.0f} MiB")
    summary = []
    for detector, ours in (("KNN k=50", "knn_assay"), ("Mahalanobis", "mahalanobis_assay")):
        a = results[ours]
        for _, name, label, _ in (run for run in RUNS if run[0] == detector and run[1] != ours):
            b = results[name]
            n_id, n_ood = min(len(a["id"]), len(b["id"])), min(len(a["ood"]), len(b["ood"]))
            sa, sb = (np.r_[r["id"][:n_id], r["ood"][:n_ood]] for r in (a, b))
            diff = np.max(np.abs(sa - sb) / np.maximum(np.abs(sb), 1e-12))
            print(f"{detector} vs {label}: {b['total'] / a['total']:.2f}x faster, peak memory "
                  f"{a['peak_mib'] / b['peak_mib']:.2f}x the baseline's; max relative score difference {diff:.1e}")
            summary.append(f"{detector} {b['total'] / a['total']:.1f}x vs {label}")
        print(f"{detector}: AUROC ID vs OOD {auroc(a['id'], a['ood']):.4f} (sanity check of the synthetic data)")
    print("summary: " + "; ".join(summary))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
    else:
        sys.exit(main())
