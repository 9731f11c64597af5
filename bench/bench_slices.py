"""Slice analysis: 1,000,000 predictions in 50 slices (uneven sizes, one tiny, one planted weak), B=1000.

assay: ``slice_table`` (per-slice accuracy, exact Clopper-Pearson CIs, slice-vs-rest Fisher tests,
Benjamini-Hochberg) + ``worst_slice_gap`` (percentile bootstrap, 1000 resamples as the check's default),
median of 3; and the whole ``slices`` check once (it adds macro-F1 and ECE per slice).
Baselines measured in the same run:

* naive loop: a boolean mask per slice, accuracy, a percentile bootstrap CI per slice by resampling the
  slice's indices, and the worst-slice gap bootstrapped by resampling all rows. Both bootstraps are run
  for a few resamples and extrapolated to 1000 (their cost is linear in resamples).
* fairlearn ``MetricFrame``: accuracy per slice only (no intervals, no tests).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from _common import machine, timed
from assay.checks.base import CheckContext, EvaluateConfig
from assay.checks.slice_metrics import slice_table, worst_slice_gap
from assay.checks.slices import check_slices
from assay.data.dataset import Dataset
from assay.engine.cache import ViewOutput
from assay.engine.run import Outputs

N, SLICES, CLASSES, B = 1_000_000, 50, 10, 1000
NAIVE_SLICE_RESAMPLES, NAIVE_GAP_RESAMPLES = 20, 10


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """String slice labels (as the check builds them), labels, and logits ~90 % accurate (75 % in slice 07)."""
    rng = np.random.default_rng(0)
    sizes = rng.dirichlet(np.full(SLICES, 2.0))
    sizes[0] = 20 / N  # one slice below the minimum size: reported, not tested
    slice_of = rng.choice(SLICES, size=N, p=sizes / sizes.sum())
    groups = np.array([f"region_{s:02d}" for s in range(SLICES)])[slice_of]
    labels = rng.integers(0, CLASSES, N)
    accurate = rng.random(N) < np.where(slice_of == 7, 0.75, 0.9)
    wrong = (labels + rng.integers(1, CLASSES, N)) % CLASSES
    logits = rng.normal(size=(N, CLASSES)).astype(np.float32)
    logits[np.arange(N), np.where(accurate, labels, wrong)] += 4.0
    return groups, labels, logits


def naive_slices(correct: np.ndarray, groups: np.ndarray, resamples: int, rng: np.random.Generator) -> dict:
    """Per slice: mask, accuracy, percentile bootstrap over the slice's own indices."""
    out = {}
    for name in np.unique(groups):
        hits = correct[groups == name]
        boot = [hits[rng.integers(0, hits.size, hits.size)].mean() for _ in range(resamples)]
        out[name] = (hits.mean(), *np.percentile(boot, [2.5, 97.5]))
    return out


def naive_gap(correct: np.ndarray, codes: np.ndarray, resamples: int, rng: np.random.Generator) -> list[float]:
    """Worst-slice gap recomputed on row resamples (the textbook bootstrap of the statistic)."""
    gaps = []
    for _ in range(resamples):
        idx = rng.integers(0, correct.size, correct.size)
        n = np.bincount(codes[idx], minlength=SLICES)
        acc = np.bincount(codes[idx], weights=correct[idx], minlength=SLICES)[n >= 30] / n[n >= 30]
        gaps.append(acc.max() - acc.min())
    return gaps


def main() -> None:
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    groups, labels, logits = make_data()
    pred = logits.argmax(axis=1)
    correct = pred == labels

    def ours() -> tuple:
        return slice_table(correct, groups), worst_slice_gap(correct, groups, n_bootstrap=B)

    t_ours, runs = timed(ours)
    rows, gap = ours()

    ds = Dataset(x=np.zeros((N, 1), np.float32), y=labels, ids=np.arange(N), modality="tabular", name="b",
                 source="b")
    ds.meta["region"] = groups
    ctx = CheckContext(outputs=Outputs(views={"clean": ViewOutput(logits, None)}), dataset=ds,
                       config=EvaluateConfig(n_bootstrap=B, slice_by=["region"]))
    t = time.perf_counter()
    section = check_slices(ctx)
    t_check = time.perf_counter() - t

    rng = np.random.default_rng(1)
    t = time.perf_counter()
    naive = naive_slices(correct, groups, NAIVE_SLICE_RESAMPLES, rng)
    t_naive_slices = time.perf_counter() - t
    t_mask_only, _ = timed(lambda: [correct[groups == g].mean() for g in np.unique(groups)], repeats=1)
    codes = np.unique(groups, return_inverse=True)[1]
    t = time.perf_counter()
    naive_gap(correct, codes, NAIVE_GAP_RESAMPLES, rng)
    t_naive_gap = time.perf_counter() - t
    per_resample = (t_naive_slices - t_mask_only) / NAIVE_SLICE_RESAMPLES
    t_naive = t_mask_only + per_resample * B + t_naive_gap / NAIVE_GAP_RESAMPLES * B

    t_fairlearn, _ = timed(lambda: MetricFrame(metrics=accuracy_score, y_true=labels, y_pred=pred,
                                               sensitive_features=groups).by_group, repeats=1)
    frame = MetricFrame(metrics=accuracy_score, y_true=labels, y_pred=pred, sensitive_features=groups).by_group

    ours_acc = np.array([r.accuracy for r in rows])
    naive_acc = np.array([naive[r.slice][0] for r in rows])
    fair_acc = frame.loc[[r.slice for r in rows]].to_numpy()
    flagged = [r.slice for r in rows if r.flagged]
    print(f"# slices: {N:,} predictions, {SLICES} slices ({sum(r.insufficient for r in rows)} below min size), "
          f"B={B} — {machine()}")
    print(f"assay slice_table + worst_slice_gap: {t_ours:.3f} s (runs {', '.join(f'{r:.3f}' for r in runs)})")
    print(f"assay whole slices check (+ macro-F1, ECE per slice, from logits): {t_check:.2f} s")
    print(f"naive masks + per-slice index bootstrap + row-resampling gap bootstrap: {t_naive:.1f} s "
          f"(extrapolated from {NAIVE_SLICE_RESAMPLES} and {NAIVE_GAP_RESAMPLES} resamples; masks alone "
          f"{t_mask_only:.2f} s)")
    print(f"fairlearn MetricFrame, accuracy per slice, no CIs/tests: {t_fairlearn:.2f} s")
    print(f"speed-up vs naive: {t_naive / t_ours:.0f}x; vs fairlearn without CIs: {t_fairlearn / t_ours:.1f}x")
    print(f"per-slice accuracy max |diff|: naive {np.abs(ours_acc - naive_acc).max():.1e}, fairlearn "
          f"{np.abs(ours_acc - fair_acc).max():.1e}; flagged {flagged} (planted: region_07); worst-slice gap "
          f"{gap.value:.3f} [{gap.ci_low:.3f}, {gap.ci_high:.3f}] ({gap.worst_slice}); check verdict "
          f"{section.verdict}")
    width = statistics.median(r.ci_high - r.ci_low for r in rows if not r.insufficient)
    naive_width = statistics.median(naive[r.slice][2] - naive[r.slice][1] for r in rows if not r.insufficient)
    print(f"median 95% CI width: Clopper-Pearson {width:.4f}, naive percentile ({NAIVE_SLICE_RESAMPLES} "
          f"resamples, rough) {naive_width:.4f}")


if __name__ == "__main__":
    sys.exit(main())
