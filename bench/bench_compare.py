"""`assay compare` end to end over 1,000,000 paired predictions, and `assay select` over 5 demo models.

1. compare_sides (the whole gate: softmax, NLL, paired accuracy/macro-F1/flips/McNemar, ECE and NLL deltas,
   per-class deltas with Holm, flips, default policy) on 1,000,000 predictions x 10 classes with B=1000.
   Baseline in the same run: the statistics' textbook paired bootstrap loop from bench_compare_stats
   (rng.integers indices per resample, every statistic recomputed), timed on 5 resamples and
   extrapolated to 1000. Target: <= 5 s on 2 cores.
2. select over 5 DigitsCNN variants on digits:test: first run (evaluates every model) vs second run (the
   shared output cache answers every forward pass). The ratio is what the cache saves.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, timed
from assay.compare.gate import Side, compare_sides
from assay.compare.policy import DEFAULT_POLICY
from assay.environment import environment_info
from assay.evidence.schema import DataInfo, Evidence, ModelInfo
from bench_compare_stats import _data, _naive_resample

N, C, B = 1_000_000, 10, 1000
NAIVE_RESAMPLES = 5


def _evidence(n: int, c: int) -> Evidence:
    """Evidence metadata for synthetic predictions (the gate reads names and the data fingerprint)."""
    names = [str(k) for k in range(c)]
    return Evidence(
        created_at="2026-01-01T00:00:00+00:00", seed=0, config={}, environment=environment_info(),
        model=ModelInfo(path="synthetic", format="onnx", sha256="0" * 64, input_shape=[None, c], input_dtype="float32",
                        num_classes=c, class_names=names),
        data=DataInfo(name="synthetic", source="<bench>", modality="tabular", fingerprint="1" * 64, n=n,
                      num_classes=c, class_names=names, input_shape=[c]))


def bench_compare() -> float:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, N)
    logits_a = rng.normal(size=(N, C)).astype(np.float32)
    logits_a[np.arange(N), labels] += 2.0
    logits_b = logits_a + rng.normal(scale=0.5, size=(N, C)).astype(np.float32)
    evidence = _evidence(N, C)
    ids = np.arange(N)
    a = Side("baseline", evidence, {"ids": ids, "labels": labels, "logits": logits_a}, "a")
    b = Side("candidate", evidence, {"ids": ids, "labels": labels, "logits": logits_b}, "b")
    seconds, runs = timed(lambda: compare_sides(a, b, DEFAULT_POLICY, n_bootstrap=B, seed=0), repeats=3)
    data = _data(N, np.random.default_rng(1))
    t = time.perf_counter()
    for _ in range(NAIVE_RESAMPLES):
        _naive_resample(data, rng)
    naive = (time.perf_counter() - t) / NAIVE_RESAMPLES * B
    print(f"compare_sides, {N:,} predictions x {C} classes, B={B}: {seconds:.2f} s "
          f"(runs {', '.join(f'{r:.2f}' for r in runs)})   target <= 5 s: {'met' if seconds <= 5 else 'MISSED'}")
    print(f"naive paired bootstrap loop (timed on {NAIVE_RESAMPLES} resamples, extrapolated to {B}): {naive:.0f} s"
          f"   speed-up {naive / seconds:.0f}x")
    return seconds


def bench_select() -> None:
    import torch

    from assay.compare.run import select
    from assay.data.loader import load_data
    from assay.demo import train_digits_cnn
    from assay.models.export import export_onnx

    train, test = load_data("digits:train"), load_data("digits:test")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, epochs in enumerate((1, 2, 3, 5, 8)):
            net = train_digits_cnn(train.x, train.y, epochs=epochs, seed=i)
            path = Path(tmp) / f"cnn_e{epochs}.onnx"
            export_onnx(net, torch.from_numpy(test.x[:2]), path, class_names=test.class_names)
            paths.append(str(path))
        cache = Path(tmp) / "cache"
        t = time.perf_counter()
        first = select(paths, test, out=Path(tmp) / "sel1", cache_dir=cache)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        select(paths, test, out=Path(tmp) / "sel2", cache_dir=cache)
        warm = time.perf_counter() - t
    print(f"select over 5 models on digits:test (540 samples, quick suite): {cold:.2f} s cold, {warm:.2f} s with the "
          f"shared cache ({cold / warm:.1f}x); pick {first.pick}: {' '.join(first.reasons)}")


if __name__ == "__main__":
    print(machine())
    bench_compare()
    bench_select()
    sys.exit(0)
