"""Latency harness repeatability: the p50 of the demo CNN (ONNX, 1 thread) over 5 invocations of
``profile_model``, at batch 1 and 32, as a coefficient of variation across invocations.

Baseline measured in the same run: the naive ``timeit`` of 20 calls (mean per call), 5 invocations.
Lower CV = a latency number that means the same thing from one run to the next. No thresholds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np
import torch

from _common import machine
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.models.export import export_onnx
from assay.models.loader import load_model
from assay.profiling.latency import make_batch
from assay.profiling.profile import profile_model

BATCH_SIZES = (1, 32)
INVOCATIONS = 5
NAIVE_CALLS = 20
BUDGET_S = 2.0  # per batch size and invocation


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values)


def main() -> None:
    train = load_data("digits:train")
    module = train_digits_cnn(train.x, train.y, epochs=2, seed=0)  # weights do not matter for latency
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.onnx"
        export_onnx(module, torch.from_numpy(np.asarray(train.x[:2], np.float32)), path)
        model = load_model(path, threads=1, sample=train.x[:2])
        sample = np.asarray(train.x[:256])

        ours: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
        runs: dict[int, list[int]] = {b: [] for b in BATCH_SIZES}
        halfwidths: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
        naive: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
        for _ in range(INVOCATIONS):
            prof = profile_model(model, sample, batch_sizes=BATCH_SIZES, budget_s=BUDGET_S, measure_rss=False)
            for b in BATCH_SIZES:
                stats = prof.latency.batch(b)
                ours[b].append(stats.p50_ms)
                runs[b].append(stats.n_runs)
                halfwidths[b].append(stats.p50_rel_halfwidth or float("nan"))
            for b in BATCH_SIZES:
                batch = make_batch(sample, b)
                naive[b].append(timeit.timeit(lambda batch=batch: model.logits(batch), number=NAIVE_CALLS)
                                / NAIVE_CALLS * 1e3)

    print(f"# latency harness repeatability: demo CNN (ONNX, 1 thread), {INVOCATIONS} invocations — {machine()}")
    for b in BATCH_SIZES:
        c_ours, c_naive = cv(ours[b]), cv(naive[b])
        print(f"## batch {b}")
        print(f"profile_model p50 (budget {BUDGET_S:g} s, stop at 5% CI half-width): "
              f"{', '.join(f'{v:.4f}' for v in ours[b])} ms; runs {runs[b]}; "
              f"half-widths {', '.join(f'{h:.1%}' for h in halfwidths[b])}")
        print(f"naive timeit mean of {NAIVE_CALLS} calls: {', '.join(f'{v:.4f}' for v in naive[b])} ms")
        print(f"CV across invocations: profile_model {c_ours:.3f}, naive {c_naive:.3f}   "
              f"ratio naive/ours: {c_naive / c_ours:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
