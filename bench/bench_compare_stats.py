"""Paired comparison statistics: 1,000 resamples over 1,000,000 paired predictions (10 classes).

Times paired_classification, paired_group_deltas (per class), paired_mean_delta and paired_ece_delta
(both on their stratified scheme at this n), and their total. Baseline measured in the same run: the
textbook paired bootstrap loop (draw n indices with rng.integers, recompute every statistic for A and B),
timed on 10 resamples at the full n and extrapolated linearly to 1,000 (it would take minutes). For
reference, the exact per-sample-multiplicity scheme is timed at n = 200,000, where "auto" switches.
Target: total <= 5 s on 2 cores.
"""

from __future__ import annotations

import sys

import numpy as np

from _common import machine, timed
from assay.stats.paired import (
    EXACT_MAX_N,
    paired_classification,
    paired_ece_delta,
    paired_group_deltas,
    paired_mean_delta,
)

N, C, B = 1_000_000, 10, 1000
NAIVE_RESAMPLES = 10
N_BINS = 15


def _data(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    labels = rng.integers(0, C, n)
    logits_a = rng.normal(size=(n, C)).astype(np.float32)
    logits_a[np.arange(n), labels] += 2.0
    logits_b = logits_a + rng.normal(scale=0.5, size=(n, C)).astype(np.float32)  # a close candidate
    out = {"labels": labels}
    for name, logits in (("a", logits_a), ("b", logits_b)):
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[f"pred_{name}"] = p.argmax(axis=1)
        out[f"conf_{name}"] = p.max(axis=1).astype(np.float64)
        out[f"correct_{name}"] = out[f"pred_{name}"] == labels
        out[f"nll_{name}"] = -np.log(p[np.arange(n), labels].astype(np.float64))
    return out


def _naive_resample(d: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """One textbook paired resample: the same indices for A and B, every statistic recomputed."""
    n = d["labels"].size
    idx = rng.integers(0, n, n)
    y = d["labels"][idx]
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    for m in ("a", "b"):
        pred, right = d[f"pred_{m}"][idx], d[f"correct_{m}"][idx]
        cm = np.bincount(y * C + pred, minlength=C * C).reshape(C, C)
        tp = np.diag(cm)
        denominator = cm.sum(0) + cm.sum(1)
        f1 = np.divide(2 * tp, denominator, out=np.zeros(C), where=denominator > 0)
        _ = right.mean(), f1[denominator > 0].mean()
        _ = np.bincount(y, right, minlength=C) / np.bincount(y, minlength=C)  # per-class accuracy
        conf = d[f"conf_{m}"][idx]
        bins = np.clip(np.searchsorted(edges[1:-1], conf, side="right"), 0, N_BINS - 1)
        _ = np.abs(np.bincount(bins, right - conf, minlength=N_BINS)).sum() / n
        _ = d[f"nll_{m}"][idx].mean()
    _ = (d["correct_a"][idx] & ~d["correct_b"][idx]).mean(), (~d["correct_a"][idx] & d["correct_b"][idx]).mean()


def main() -> None:
    rng = np.random.default_rng(0)
    d = _data(N, rng)
    steps = {
        "paired_classification (acc, flips, macro-F1, McNemar)":
            lambda: paired_classification(d["labels"], d["pred_a"], d["pred_b"], C, n_resamples=B),
        "paired_group_deltas (per class, 10 groups)":
            lambda: paired_group_deltas(d["correct_a"], d["correct_b"], d["labels"], n_resamples=B),
        "paired_mean_delta (NLL, stratified)":
            lambda: paired_mean_delta(d["nll_a"], d["nll_b"], n_resamples=B),
        "paired_ece_delta (15 bins, stratified)":
            lambda: paired_ece_delta(d["conf_a"], d["correct_a"], d["conf_b"], d["correct_b"], n_resamples=B),
    }
    times = {}
    for name, fn in steps.items():
        times[name] = timed(fn)
    total = sum(t for t, _ in times.values())

    naive_t, _ = timed(lambda: [_naive_resample(d, rng) for _ in range(NAIVE_RESAMPLES)], repeats=1)
    naive = naive_t / NAIVE_RESAMPLES * B

    small = {k: v[:EXACT_MAX_N] for k, v in d.items()}
    exact_mean, _ = timed(lambda: paired_mean_delta(small["nll_a"], small["nll_b"], n_resamples=B,
                                                    scheme="exact"), repeats=1)
    exact_ece, _ = timed(lambda: paired_ece_delta(small["conf_a"], small["correct_a"], small["conf_b"],
                                                  small["correct_b"], n_resamples=B, scheme="exact"), repeats=1)

    print(f"# paired comparison statistics: {B} resamples over {N:,} paired predictions, {C} classes — {machine()}")
    for name, (t, runs) in times.items():
        print(f"{name}: {t:.3f} s (runs {', '.join(f'{r:.3f}' for r in runs)})")
    print(f"total: {total:.2f} s   target <= 5 s: {'met' if total <= 5 else 'MISSED'}")
    print(f"naive paired index-resampling loop, same statistics (timed on {NAIVE_RESAMPLES} resamples at "
          f"n={N:,}, extrapolated linearly to {B}): {naive:.0f} s")
    print(f"speed-up vs naive: {naive / total:.0f}x")
    print(f"for reference, exact per-sample-multiplicity scheme at n={EXACT_MAX_N:,} (the 'auto' switch point): "
          f"mean delta {exact_mean:.2f} s, ECE delta {exact_ece:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
