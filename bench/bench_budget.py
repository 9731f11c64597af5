"""Budgeted evaluation: the widest reported interval at a 10% budget, adaptive planner vs uniform allocation.

The issue's measure: on the standard suite (clean + the 15 ImageNet-C corruptions x 5 severities = 76 views),
the widest 95% interval of the per-view corruption accuracies when the planner spends ``--budget`` (default
``10%`` of the full run's passes, the clean run's included) with objective ``widest`` (rows go to the view
whose interval is widest) vs ``uniform`` (every view gets the same share of its rows: the baseline), at the same
budget and seed. Goal: ratio adaptive / uniform <= 0.7.

Data: the digits test split resampled to ``--images`` rows, shifted and noised (``bench_ray.image_set``);
model: the demo's DigitsCNN trained (``--epochs``) on digits:train under all 9 one-pixel shifts with the same
noise (:func:`shift_augmented`), so its clean accuracy on the shifted test rows is high (~0.98) and the
corruptions spread the views' accuracies from near 1 down to near chance, as on a real suite.

The full run (``run_views`` on all 76 views) gives every view's accuracy once; then per seed each objective runs
:func:`run_budgeted` for real (model passes on the sampled rows, the clean view counted as spent). Reported per
run: the widest and mean interval width (``Stratum.interval``: the exact finite-population interval), the coverage
of the full-run accuracies by the intervals, rows whose sampled correctness differs from the full run's (must be 0:
a sampled row gets its full-run inputs), passes and seconds used.

What a perfect minimax allocation could reach is printed as ``predicted``: with per-view variances
``p (1 - p)`` from the full run, the smallest width w such that the rows needed for width w in every view
(normal approximation with finite-population correction, at least the pilot's rows) fit in the budget,
against the widest normal-approximation width of the uniform allocation. Without the correction and pilots
it is ``sqrt(mean var / max var)``, also printed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import machine
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.engine.budget import BudgetRun, BudgetTarget, parse_budget, run_budgeted
from assay.engine.planning import corruption_views, resolve_corruptions
from assay.engine.run import run_views
from assay.engine.views import CleanView
from assay.models.loader import load_model
from assay.stats.sampling import normal_quantile
from bench_ray import image_set

BATCH = 256
PILOT = 32
GOAL = 0.7


def shift_augmented(x: np.ndarray, y: np.ndarray, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every image under each of the 9 shifts by -1..1 pixels (zero fill), with Gaussian noise (sd 0.05)."""
    padded = np.pad(np.asarray(x, np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)))
    shifted = np.concatenate([padded[:, :, a:a + 8, b:b + 8] for a in range(3) for b in range(3)])
    noise = np.random.default_rng(seed).normal(0, 0.05, shifted.shape).astype(np.float32)
    return np.clip(shifted + noise, 0, 1), np.tile(np.asarray(y), 9)


def predicted_widths(acc: np.ndarray, population: int, rows: float, pilot: int, z: float) -> tuple[float, float]:
    """(minimax widest width, uniform widest width) for ``rows`` sampled rows over views with accuracies ``acc``
    (normal approximation with finite-population correction; each view gets at least ``pilot`` rows)."""
    var = np.maximum(acc * (1 - acc), 1e-12)

    def needed(width: float) -> np.ndarray:
        n0 = 4 * z * z * var / (width * width)  # rows for this width without the correction
        return np.clip(np.maximum(n0 / (1 + n0 / population), pilot), 0, population)

    lo, hi = 1e-6, 1.0
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if needed(mid).sum() > rows else (lo, mid)
    per_view = rows / acc.size
    uniform = 2 * z * math.sqrt(float(var.max()) * (1 - per_view / population) / per_view)
    return hi, uniform


def summarize(run: BudgetRun, accuracy: dict[str, float], truth: dict[str, np.ndarray]) -> dict[str, Any]:
    widths, covered, mismatches, at = [], 0, 0, ""
    for name, sampled in run.views.items():
        lo, hi = sampled.stratum().interval(run.confidence)
        if not widths or hi - lo > max(widths):
            short = name.replace("corruption:name=", "").replace(",seed=0,severity=", "/").replace(",table=auto", "")
            at = f"{short} (n {sampled.rows.size}, acc {accuracy[name]:.3f})"
        widths.append(hi - lo)
        covered += lo - 1e-12 <= accuracy[name] <= hi + 1e-12
        mismatches += int((sampled.values != truth[name][sampled.rows]).sum())
    return {"widest": max(widths), "mean": float(np.mean(widths)), "coverage": covered / len(widths),
            "mismatches": mismatches, "passes": run.passes_used, "share": run.passes_used / run.full_passes,
            "seconds": run.seconds_used, "rows": sum(v.rows.size for v in run.views.values()), "at": at}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="evaluation rows (default 2000)")
    parser.add_argument("--seeds", type=int, default=5, help="planner seeds (default 5)")
    parser.add_argument("--budget", default="10%", help="budget (default 10%%)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the DigitsCNN (default 5)")
    args = parser.parse_args(argv)
    budget = parse_budget(args.budget)

    train = load_data("digits:train")
    assert train.y is not None
    data = image_set(args.images)
    assert data.y is not None
    net = train_digits_cnn(*shift_augmented(train.x, train.y), epochs=args.epochs, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "digits.pt"
        torch.save(net.state_dict(), weights)
        # One thread: on a shared machine two threads spin-wait on each other, and small chunks (32 rows) then cost
        # ~6x more per row than full batches; on one thread a row costs the same in any chunk.
        model = load_model("assay.demo:make_digits_cnn", weights=weights, sample=data.x[:2], threads=1)
    names = resolve_corruptions("standard", "image")
    views = [CleanView(), *corruption_views(data, names, [1, 2, 3, 4, 5], seed=0, table="auto")]
    print(f"# python bench/bench_budget.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"# --suite standard ({len(views)} views) on {len(data):,} images 1x8x8 (digits:test resampled, shifted, "
          f"noised), DigitsCNN ({args.epochs} epochs on shifted digits:train), batch {BATCH}, 1 thread, "
          f"budget {budget.describe()}, pilot {PILOT} rows — {machine()}; "
          f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)

    t = time.perf_counter()
    clean = run_views(model, data, [views[0]], batch_size=BATCH, progress=False).clean
    clean_s = time.perf_counter() - t
    t = time.perf_counter()
    full = run_views(model, data, views[1:], batch_size=BATCH, progress=False)
    full_s = clean_s + time.perf_counter() - t
    truth = {v.spec.name: (full[v.spec.name].logits.argmax(1) == data.y).astype(np.float64) for v in views[1:]}
    accuracy = {name: float(t.mean()) for name, t in truth.items()}
    acc = np.array(list(accuracy.values()))
    print(f"full run: {full_s:.1f} s ({clean_s:.1f} s clean); clean accuracy "
          f"{float((clean.logits.argmax(1) == data.y).mean()):.3f}; corruption accuracies: min {acc.min():.3f}, "
          f"quartiles {np.percentile(acc, 25):.3f} / {np.median(acc):.3f} / {np.percentile(acc, 75):.3f}, "
          f"max {acc.max():.3f}; {int((acc > 0.95).sum())} of {acc.size} views above 0.95")

    targets = [BudgetTarget(v.spec.name, v, np.arange(len(data)),
                            lambda rows, logits: (logits.argmax(1) == data.y[rows]).astype(np.float64))
               for v in views[1:]]
    z = normal_quantile(0.95)
    full_passes = len(data) * len(views)
    limit = budget.passes if budget.passes is not None else (budget.share or 0) * full_passes
    rows = limit - len(data)
    minimax, uniform_pred = predicted_widths(acc, len(data), rows, PILOT, z)
    var = acc * (1 - acc)
    print(f"predicted (normal approximation, {rows:,.0f} sampled rows): minimax widest {minimax:.4f} vs uniform "
          f"{uniform_pred:.4f}, ratio {minimax / uniform_pred:.3f}; sqrt(mean var / max var) = "
          f"{math.sqrt(var.mean() / var.max()):.3f}")
    print(f"{'seed':>4} {'objective':<9} {'widest':>7} {'mean w':>7} {'coverage':>8} {'mismatch':>8} {'rows':>6} "
          f"{'passes':>7} {'of full':>7} {'seconds':>7}  widest view")
    ratios, results = [], {"widest": [], "uniform": []}
    for seed in range(args.seeds):
        row = {}
        for objective in ("widest", "uniform"):
            run = run_budgeted(model, data, targets, budget, objective=objective, seed=seed, batch_size=BATCH,
                               progress=False, pilot_rows=PILOT, spent_passes=len(data), spent_seconds=clean_s)
            row[objective] = s = summarize(run, accuracy, truth)
            results[objective].append(s)
            print(f"{seed:>4} {objective:<9} {s['widest']:>7.4f} {s['mean']:>7.4f} {s['coverage']:>8.3f} "
                  f"{s['mismatches']:>8} {s['rows']:>6} {s['passes']:>7.0f} {s['share']:>7.3f} "
                  f"{s['seconds']:>7.1f}  {s['at']}",
                  flush=True)
        ratios.append(row["widest"]["widest"] / row["uniform"]["widest"])
    mean = {k: {m: statistics.mean(s[m] for s in v) for m in ("widest", "mean", "coverage", "seconds")}
            for k, v in results.items()}
    ratio = statistics.median(ratios)
    print(f"widest interval, adaptive / uniform: median ratio {ratio:.3f} over {len(ratios)} seeds "
          f"(per seed {', '.join(f'{r:.3f}' for r in ratios)}); goal <= {GOAL}: {'met' if ratio <= GOAL else 'MISSED'}")
    for k, m in mean.items():
        print(f"{k:<8}: mean widest {m['widest']:.4f}, mean width {m['mean']:.4f}, coverage {m['coverage']:.3f}, "
              f"{m['seconds']:.1f} s per run ({m['seconds'] / full_s:.2f} of the full run's {full_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
