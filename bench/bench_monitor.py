"""`assay monitor` at scale (issue 15, Measure): drift + label-free estimates over 1,000,000 logged predictions
(10 classes, 64-d embeddings, synthetic), one incremental window update, and Evidently's DataDriftPreset on the
same data.

    PYTHONPATH=src .venv/bin/python bench/bench_monitor.py [--rows 1000000] [--window 100000]
        [--evidently-windows 0,5,9] [--evidently-path /work/.evidently_pkgs]

Data: a reference of 20,000 rows (labelled; embeddings x ~ N(mu_y, I) in 64 dimensions, logits a linear map of
x) and a log of ``--rows`` rows cut into windows of ``--window`` rows: the first half without drift, then two
windows of a subtle shift (8 of 64 dimensions moved by 0.05 sd: statistically clear at 100,000 rows, below
Evidently's normed-Wasserstein threshold of 0.1), then a large shift (40 dimensions by 0.5 sd and a class-prior
change).

1. Assay: `Monitor.update_batch` over the whole log (arrays, as `LogBatch.from_frame` gives them): per-window
   state, every window's tests (class mix, confidence/entropy KS, ATC/near-margin/OOD shares, 64 per-feature
   binned KS with Benjamini-Hochberg, MMD permutation test on a 200-row sample), ATC and DoC estimates with CIs.
   Goal <= 2 s. Also reported: reading a `read_log`-shaped frame into arrays (`LogBatch.from_frame`).
2. One incremental update: 1,000 new rows into an open window, and the open window's evaluation (what a server
   poll does). Goal <= 50 ms.
3. Baseline, always measured: recomputing from the raw rows per window with scipy (`ks_2samp` on each of the 64
   columns, chi-squared on the class mix, p < 0.05 per column, no correction: how Evidently and most scripts
   test). Ratio = baseline seconds / Assay seconds.
4. Evidently 0.7 (`Report([DataDriftPreset()])`), when importable from ``--evidently-path`` (installed there
   with `pip install --target`, so the project's venv is untouched; it needs pandas < 3, which the venv does not
   have): on the windows ``--evidently-windows`` only (one 100,000-row window takes about a minute here), its time
   per window scaled to the whole log, and its dataset-drift verdict (share of drifted columns >= 0.5) against
   Assay's (any alarm) on the same windows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "src")]

from _common import machine  # noqa: E402

C, D, N_REF = 10, 64, 20_000


def make_data(rows: int, window: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 0.2, (C, D))
    weight = centers.T  # logits = x @ mu_k - |mu_k|^2 / 2: the Bayes rule for unit-variance classes
    bias = -0.5 * (centers**2).sum(1)

    def draw(n: int, shift: np.ndarray | None = None, prior: np.ndarray | None = None):
        y = rng.choice(C, n, p=prior)
        x = (centers[y] + rng.normal(0, 1, (n, D))).astype(np.float32)
        if shift is not None:
            x += shift.astype(np.float32)
        return (x @ weight + bias).astype(np.float32), y, x

    ref_logits, ref_y, ref_x = draw(N_REF)
    n_windows = rows // window
    subtle = np.zeros(D)
    subtle[:8] = 0.05
    large = np.zeros(D)
    large[:40] = 0.5
    prior = np.full(C, 0.5 / (C - 1))
    prior[0] = 0.5
    parts = []
    for w in range(n_windows):
        if w < n_windows // 2:
            parts.append(draw(window))
        elif w < n_windows // 2 + 2:
            parts.append(draw(window, subtle))
        else:
            parts.append(draw(window, large, prior))
    logits = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = np.concatenate([p[2] for p in parts])
    return {"ref_logits": ref_logits, "ref_y": ref_y, "ref_x": ref_x, "logits": logits, "y": labels, "x": x}


FIRST_USE_SECONDS = float("nan")


def kind_of(w: int, n_windows: int) -> str:
    return "none" if w < n_windows // 2 else ("subtle" if w < n_windows // 2 + 2 else "large")


def run_assay(data: dict[str, np.ndarray], window: int):
    from assay.monitor import LogBatch, Monitor, MonitorSettings
    from assay.reference import Reference

    t = time.perf_counter()
    reference = Reference.from_arrays(data["ref_logits"], data["ref_y"], data["ref_x"],
                                      class_names=[str(c) for c in range(C)])
    build = time.perf_counter() - t
    rows = len(data["logits"])
    batch = LogBatch(time=np.arange(rows, dtype=np.float64), logits=data["logits"], first=np.ones(rows, bool),
                     features=data["x"])
    settings = MonitorSettings(window_size=window, min_window=1000)
    # First use in a process imports scipy.stats, sklearn and the tests' modules (~2 s on this machine): paid once
    # per process (a server or a monitor run), measured apart from the work on the log.
    t = time.perf_counter()
    warm = slice(0, 3000)
    Monitor(reference, MonitorSettings(window_size=1000, min_window=1000)).update_batch(
        LogBatch(time=np.arange(3000, dtype=np.float64), logits=data["logits"][warm], first=np.ones(3000, bool),
                 features=data["x"][warm]))
    global FIRST_USE_SECONDS
    FIRST_USE_SECONDS = time.perf_counter() - t
    monitor = Monitor(reference, settings)
    t = time.perf_counter()
    closed = monitor.update_batch(batch)
    seconds = time.perf_counter() - t
    return reference, settings, closed, seconds, build


def time_frame_conversion(data: dict[str, np.ndarray], n: int) -> float:
    import pandas as pd

    from assay.monitor import LogBatch

    frame = pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "row": 0, "time": np.arange(n, dtype=float),
                          "role": "primary", "logits": list(data["logits"][:n]), "features": list(data["x"][:n])})
    t = time.perf_counter()
    LogBatch.from_frame(frame, num_classes=C, feature_space="embeddings", feature_dims=D)
    return time.perf_counter() - t


def time_incremental(reference, settings, data: dict[str, np.ndarray], window: int, repeats: int = 7):
    from assay.monitor import LogBatch, Monitor

    monitor = Monitor(reference, settings)
    rows = window - 1000 * (repeats + 1)
    take = slice(0, rows)
    monitor.update_batch(LogBatch(time=np.arange(rows, dtype=float), logits=data["logits"][take],
                                  first=np.ones(rows, bool), features=data["x"][take]))
    updates, evaluations = [], []
    for r in range(repeats):
        part = slice(rows + 1000 * r, rows + 1000 * (r + 1))
        batch = LogBatch(time=np.arange(part.start, part.stop, dtype=float), logits=data["logits"][part],
                         first=np.ones(1000, bool), features=data["x"][part])
        t = time.perf_counter()
        monitor.update_batch(batch)
        updates.append(time.perf_counter() - t)
        t = time.perf_counter()
        monitor.open_result()
        evaluations.append(time.perf_counter() - t)
    return float(np.median(updates)), float(np.median(evaluations))


def run_baseline(data: dict[str, np.ndarray], window: int):
    """Per window, from the raw rows: ks_2samp per column, chi-squared on the class mix, p < 0.05, drift when
    at least half the columns drift (Evidently's dataset rule)."""
    from scipy.stats import chi2_contingency, ks_2samp

    verdicts = []
    ref_pred = data["ref_logits"].argmax(1)
    t = time.perf_counter()
    for w in range(len(data["logits"]) // window):
        part = slice(w * window, (w + 1) * window)
        x = data["x"][part]
        drifted = [ks_2samp(data["ref_x"][:, d], x[:, d]).pvalue < 0.05 for d in range(D)]
        table = np.array([np.bincount(ref_pred, minlength=C), np.bincount(data["logits"][part].argmax(1), minlength=C)])
        drifted.append(chi2_contingency(table, correction=False).pvalue < 0.05)
        verdicts.append((sum(drifted) / len(drifted) >= 0.5, sum(drifted)))
    return verdicts, time.perf_counter() - t


EVIDENTLY_WORKER = """
import json, sys, time
import numpy as np, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
data = np.load(sys.argv[1])
out = []
cols = [f"e{i}" for i in range(data["ref_x"].shape[1])]
ref = pd.DataFrame(data["ref_x"], columns=cols)
ref["prediction"] = data["ref_logits"].argmax(1).astype(str)
for w, (x, logits) in enumerate(zip(data["windows_x"], data["windows_logits"])):
    cur = pd.DataFrame(x, columns=cols)
    cur["prediction"] = logits.argmax(1).astype(str)
    t = time.perf_counter()
    result = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref).dict()
    seconds = time.perf_counter() - t
    share = result["metrics"][0]["value"]
    out.append({"seconds": seconds, "share": float(share["share"]), "count": float(share["count"])})
print(json.dumps(out))
"""


def run_evidently(data: dict[str, np.ndarray], window: int, windows: list[int], path: str):
    if not windows:
        return None, "no window chosen (--evidently-windows)"
    if not Path(path, "evidently").is_dir():
        return None, f"Evidently not found under {path} (pip install --target {path} evidently 'pandas<3' pytz)"
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "data.npz"
        np.savez(file, ref_x=data["ref_x"], ref_logits=data["ref_logits"],
                 windows_x=np.stack([data["x"][w * window:(w + 1) * window] for w in windows]),
                 windows_logits=np.stack([data["logits"][w * window:(w + 1) * window] for w in windows]))
        worker = Path(tmp) / "worker.py"
        worker.write_text(EVIDENTLY_WORKER)
        env = {**os.environ, "PYTHONPATH": path, "EVIDENTLY_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
        proc = subprocess.run([sys.executable, str(worker), str(file)], capture_output=True, text=True, env=env,
                              cwd=tmp)
    if proc.returncode:
        return None, "Evidently failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=100_000)
    parser.add_argument("--evidently-windows", default="0,5,9")
    parser.add_argument("--evidently-path", default="/work/.evidently_pkgs")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    data = make_data(args.rows, args.window)
    n_windows = args.rows // args.window
    kinds = ", ".join(kind_of(w, n_windows) for w in range(n_windows))
    print(f"log: {args.rows:,} predictions, {C} classes, {D}-d embeddings; reference {N_REF:,} rows; "
          f"{n_windows} windows of {args.window:,} (drift: {kinds})")

    reference, settings, closed, seconds, build = run_assay(data, args.window)
    verdicts = [bool(w.alarms) for w in closed]
    print(f"\nAssay monitor, whole log: {seconds:.2f} s ({args.rows / seconds / 1e6:.2f} M rows/s; goal <= 2 s: "
          f"{'met' if seconds <= 2 else 'NOT met'}); reference built in {build:.2f} s; first use in the process "
          f"(imports, 3 windows of 1,000 rows) {FIRST_USE_SECONDS:.2f} s, not counted")
    for w in closed:
        atc, doc = w.estimated_accuracy or {}, w.doc_accuracy or {}
        features = sum(t.alarm for t in w.tests if t.name.startswith("embedding["))
        rows = slice(w.index * args.window, (w.index + 1) * args.window)
        true = float((data["logits"][rows].argmax(1) == data["y"][rows]).mean())
        print(f"  window {w.index} ({kind_of(w.index, n_windows)}): alarm {bool(w.alarms)!s:5}  drifted dims "
              f"{features:2}/64  ATC {atc['value']:.3f} [{atc['ci'][0]:.3f}, {atc['ci'][1]:.3f}]  "
              f"DoC {doc['value']:.3f}  true {true:.3f}")
    convert = time_frame_conversion(data, min(args.rows, 200_000))
    print(f"  reading a read_log frame into arrays (LogBatch.from_frame): {convert:.2f} s per 200,000 rows "
          f"({convert * args.rows / 200_000:.1f} s for the whole log, outside the goal)")

    update, evaluation = time_incremental(reference, settings, data, args.window)
    print(f"\nIncremental: 1,000 rows into the open window {update * 1000:.1f} ms (goal <= 50 ms: "
          f"{'met' if update <= 0.05 else 'NOT met'}); evaluating the open window (every test, MMD with 200 "
          f"permutations; once per closed window, or per snapshot) {evaluation * 1000:.1f} ms; both "
          f"{(update + evaluation) * 1000:.1f} ms ({'met' if update + evaluation <= 0.05 else 'NOT met'})")

    baseline, base_seconds = run_baseline(data, args.window)
    agree = sum(a == b[0] for a, b in zip(verdicts, baseline, strict=True))
    print(f"\nBaseline (scipy ks_2samp per column from the raw rows, p < 0.05 uncorrected, dataset drift if >= half "
          f"the columns): {base_seconds:.2f} s; ratio baseline / Assay {base_seconds / seconds:.1f}x; verdicts agree "
          f"on {agree}/{n_windows} windows")
    print("  baseline drifted columns per window: " + ", ".join(str(b[1]) for b in baseline))

    windows = [int(w) for w in args.evidently_windows.split(",") if w.strip() and int(w) < n_windows]
    results, why = run_evidently(data, args.window, windows, args.evidently_path)
    if results is None:
        print(f"\nEvidently: not run ({why})")
    else:
        per_window = float(np.mean([r["seconds"] for r in results]))
        whole = per_window * n_windows
        print(f"\nEvidently 0.7 DataDriftPreset (64 embedding columns + prediction) on windows {windows}: "
              f"{per_window:.1f} s per {args.window:,}-row window, about {whole:.0f} s for the whole log; ratio "
              f"Evidently / Assay {whole / seconds:.0f}x")
        for w, r in zip(windows, results, strict=True):
            drift = r["share"] >= 0.5
            print(f"  window {w} ({kind_of(w, n_windows)}): Evidently dataset drift {drift!s:5} ({r['count']:.0f} "
                  f"columns drifted), Assay alarm {verdicts[w]!s:5} -> {'agree' if drift == verdicts[w] else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
