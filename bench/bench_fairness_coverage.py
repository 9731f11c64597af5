"""Coverage of the fairness and worst-slice-gap intervals by simulation: the union of simultaneous max-|t|
intervals (now) against the bias-corrected percentile interval of the resampled statistic (before, issue 20).

Data with known truth: a group's predictions follow its own confusion matrix ``M_g`` (labels ~ pi), so
every metric's true value is exact (selection rate ``pi @ M_g``, TPR ``M_g[k, k]``, FPR the off-diagonal
mass over ``1 - pi_k``). Shifted groups move a share ``lambda`` of every row's mass to one class, which sets
the true demographic-parity difference to ``d``. Settings: binary and 3-class one-vs-rest (the worst class
reported), 2 groups (60/40) and 4 groups (35/30/20/15, the two small ones shifted: ties at top and bottom,
the hardest case for a maximum), n = 300 / 1,000 / 3,000, d = 0, 0.02, 0.075, 0.15, 0.3; ``--reps``
datasets per setting, B = 1000 resamples each (the check's default). The BC interval is computed from
the same resamples as the pre-change code did (``bias_corrected_ci`` of the resampled statistic).
The worst-slice gap is simulated the same way (accuracy per slice, 2 and 4 slices).

Run: ``cd bench && ../.venv/bin/python bench_fairness_coverage.py [--reps 400]``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator

import numpy as np

from _common import machine
from assay.checks import fairness_metrics as fm
from assay.checks.slice_metrics import worst_slice_gap
from assay.stats.bootstrap import bias_corrected_ci, bootstrap_cell_counts

B = 1000
TRUTHS = (0.0, 0.02, 0.075, 0.15, 0.3)
SIZES = (300, 1000, 3000)
GROUPS = {2: ((0.6, 0.4), (1,)), 4: ((0.35, 0.30, 0.20, 0.15), (2, 3))}
METRICS = fm.SUMMARY_METRICS
SHORT = {"demographic_parity_difference": "DPD", "demographic_parity_ratio": "DPR",
         "equalized_odds_difference": "EOdds", "equal_opportunity_difference": "EOpp"}


def design(classes: int, d: float, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pi, group sizes, per-group confusion matrices (G, K, K)) with a true DP difference of ``d``."""
    if classes == 2:
        pi, base, target = np.array([0.5, 0.5]), np.array([[0.8, 0.2], [0.3, 0.7]]), 1
    else:
        pi, base, target = np.full(3, 1 / 3), np.full((3, 3), 0.15) + np.eye(3) * 0.55, 0
    lam = d / (1.0 - pi @ base[:, target])
    shifted = (1 - lam) * base + lam * np.eye(classes)[target][None, :]
    sizes, moved = GROUPS[n_groups]
    matrices = np.stack([shifted if g in moved else base for g in range(n_groups)])
    return pi, np.array(sizes), matrices


def truth(pi: np.ndarray, matrices: np.ndarray) -> dict[str, float]:
    """Exact values of the four summary metrics (positive class if binary, worst class otherwise)."""
    k = matrices.shape[1]
    sel = np.einsum("i,gik->gk", pi, matrices)
    tpr = np.einsum("gkk->gk", matrices)
    fpr = (sel - pi[None, :] * tpr) / (1 - pi[None, :])
    rows = [1] if k == 2 else list(range(k))

    def spread(r: np.ndarray) -> np.ndarray:
        return (r.max(0) - r.min(0))[rows]

    return {"demographic_parity_difference": float(spread(sel).max()),
            "demographic_parity_ratio": float((sel.min(0) / sel.max(0))[rows].min()),
            "equalized_odds_difference": float(np.maximum(spread(tpr), spread(fpr)).max()),
            "equal_opportunity_difference": float(spread(tpr).max())}


def draw(rng: np.random.Generator, n: int, pi: np.ndarray, sizes: np.ndarray, matrices: np.ndarray,
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    group = rng.choice(len(sizes), size=n, p=sizes)
    y = rng.choice(len(pi), size=n, p=pi)
    cumulative = np.cumsum(matrices[group, y], axis=1)
    pred = (rng.random(n)[:, None] > cumulative[:, :-1]).sum(axis=1)
    return y, pred, group


def old_intervals(y: np.ndarray, pred: np.ndarray, group: np.ndarray, classes: int, seed: int,
                  ) -> dict[str, tuple[float, float]]:
    """The pre-change intervals: BC percentile of the resampled statistic (same resamples as fairness_metrics)."""
    flat = (group * classes + y) * classes + pred
    ids, counts = np.unique(flat, return_counts=True)
    cells = np.stack([ids // (classes * classes), (ids // classes) % classes, ids % classes], axis=1)
    n_groups = int(group.max()) + 1
    point = fm._class_metrics(fm._rates(counts[None, :].astype(float), cells, n_groups, classes))
    boot = fm._class_metrics(fm._rates(bootstrap_cell_counts(counts, B, seed).astype(float), cells, n_groups,
                                       classes))
    out = {}
    with fm._NanWarningsSilenced():
        for m in METRICS:
            if classes == 2:
                value, samples = point[m][0, 1], boot[m][:, 1]
            else:
                worst = np.nanmin if m.endswith("ratio") else np.nanmax
                value, samples = worst(point[m][0]), worst(boot[m], axis=1)
            out[m] = bias_corrected_ci(samples, float(value), 0.95)
    return out


def fairness_rows(reps: int) -> Iterator[str]:
    header = (f"{'classes':>7} {'groups':>6} {'n':>5} {'true DP':>7} | " +
              " | ".join(f"{SHORT[m]:>5} old/new cover, width" for m in METRICS))
    yield header
    totals: dict[str, list[float]] = {f"{m}/{w}": [] for m in METRICS for w in ("old", "new")}
    widths: dict[str, list[float]] = {f"{m}/{w}": [] for m in METRICS for w in ("old", "new")}
    for classes in (2, 3):
        for n_groups in (2, 4):
            for n in SIZES:
                for d in TRUTHS:
                    pi, sizes, matrices = design(classes, d, n_groups)
                    true = truth(pi, matrices)
                    cover = dict.fromkeys(totals, 0)
                    width = dict.fromkeys(totals, 0.0)
                    for rep in range(reps):
                        rng = np.random.default_rng([classes, n_groups, n, int(d * 1000), rep])
                        y, pred, group = draw(rng, n, pi, sizes, matrices)
                        new = fm.fairness_metrics(y, pred, group, seed=rep, n_bootstrap=B, num_classes=classes)
                        old = old_intervals(y, pred, group, classes, rep)
                        for m in METRICS:
                            for which, (lo, hi) in (("old", old[m]), ("new", (new.summary[m].ci_low,
                                                                               new.summary[m].ci_high))):
                                cover[f"{m}/{which}"] += lo - 1e-12 <= true[m] <= hi + 1e-12
                                width[f"{m}/{which}"] += (hi - lo) / reps
                    for k in totals:
                        totals[k].append(cover[k] / reps)
                        widths[k].append(width[k])
                    cells = " | ".join(f"{cover[m + '/old'] / reps:5.3f}/{cover[m + '/new'] / reps:5.3f}, "
                                       f"{width[m + '/old']:.3f}/{width[m + '/new']:.3f}" for m in METRICS)
                    yield (f"{classes:>7} {n_groups:>6} {n:>5} {d:>7.3f} | {cells}")
    yield ""
    for m in METRICS:
        old, new = np.array(totals[m + "/old"]), np.array(totals[m + "/new"])
        wo, wn = np.mean(widths[m + "/old"]), np.mean(widths[m + "/new"])
        yield (f"{m}: coverage old min {old.min():.3f} mean {old.mean():.3f}; new min {new.min():.3f} "
                     f"mean {new.mean():.3f} (settings >= 0.93: old {np.mean(old >= 0.93):.0%}, new "
                     f"{np.mean(new >= 0.93):.0%}); mean width old {wo:.3f}, new {wn:.3f} (x{wn / wo:.2f})")


def slice_rows(reps: int) -> Iterator[str]:
    yield ""
    yield "worst-slice gap (accuracy 0.85 in unshifted slices; shifted slices lower by the gap)"
    yield f"{'slices':>6} {'n':>5} {'true gap':>8} | old/new cover, width"
    old_all, new_all, wo_all, wn_all = [], [], [], []
    for n_slices in (2, 4):
        sizes, moved = GROUPS[n_slices]
        for n in SIZES:
            for d in TRUTHS:
                accuracy = np.array([0.85 - d if s in moved else 0.85 for s in range(n_slices)])
                c_old = c_new = 0
                w_old = w_new = 0.0
                for rep in range(reps):
                    rng = np.random.default_rng([7, n_slices, n, int(d * 1000), rep])
                    groups = rng.choice(n_slices, size=n, p=sizes)
                    correct = rng.random(n) < accuracy[groups]
                    gap = worst_slice_gap(correct, groups, min_size=1, seed=rep, n_bootstrap=B)
                    table = np.stack([np.bincount(groups[~correct], minlength=n_slices),
                                      np.bincount(groups[correct], minlength=n_slices)], axis=1)
                    resampled = bootstrap_cell_counts(table, B, rep)
                    with np.errstate(invalid="ignore"), fm._NanWarningsSilenced():
                        acc_b = resampled[:, :, 1] / resampled.sum(axis=2)
                        lo, hi = bias_corrected_ci(np.nanmax(acc_b, 1) - np.nanmin(acc_b, 1), gap.value)
                    c_old += lo - 1e-12 <= d <= hi + 1e-12
                    c_new += gap.ci_low - 1e-12 <= d <= gap.ci_high + 1e-12
                    w_old += (hi - lo) / reps
                    w_new += (gap.ci_high - gap.ci_low) / reps
                old_all.append(c_old / reps)
                new_all.append(c_new / reps)
                wo_all.append(w_old)
                wn_all.append(w_new)
                yield (f"{n_slices:>6} {n:>5} {d:>8.3f} | {c_old / reps:5.3f}/{c_new / reps:5.3f}, "
                             f"{w_old:.3f}/{w_new:.3f}")
    old, new = np.array(old_all), np.array(new_all)
    yield (f"worst_slice_gap: coverage old min {old.min():.3f} mean {old.mean():.3f}; new min "
                 f"{new.min():.3f} mean {new.mean():.3f}; mean width old {np.mean(wo_all):.3f}, new "
                 f"{np.mean(wn_all):.3f} (x{np.mean(wn_all) / np.mean(wo_all):.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="datasets per setting")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"# fairness / worst-slice-gap interval coverage, nominal 95%, {args.reps} datasets per setting, "
          f"B={B} — {machine()}")
    print("# cells: coverage old (BC percentile) / new (union of simultaneous max-|t|), mean width old/new")
    for line in itertools.chain(fairness_rows(args.reps), slice_rows(args.reps)):
        print(line, flush=True)
    print(f"# {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
