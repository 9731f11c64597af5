"""What active testing buys: the width of the accuracy interval from 200 importance-sampled labels vs 200 labels
drawn uniformly at random, and whether both cover the pool's true accuracy.

Three pools of 2,700 items, each digits:test (540) and four transformed copies, scored by the demo CNN trained on
digits:train; its softmax is the surrogate (``e = 1 - max p``; no recalibration):

* ``in-distribution``: clean and four copies with light pixel noise (sd 0.05 and 0.1): the traffic the model was
  made for, where it is accurate and its confidence is calibrated;
* ``mild``: clean, Gaussian noise sd 0.2 and 0.3, Gaussian blur sigma 1, contrast x0.5: the model errs where the
  inputs are degraded and its confidence mostly knows it (slightly overconfident);
* ``shifted``: clean, one pixel right, one pixel down, a random 3x3 patch blanked, noise sd 0.4: the model is
  badly overconfident on shifted digits (expected accuracy 0.92, true 0.74): the case where it does not help.

For each seed and proposal rule, :func:`assay.stats.active_testing.select_items` draws ``--budget`` items with
replacement; the interval is the estimator's Korn-Graubard interval from the pool's own labels of the drawn items.
The baseline in the same run: ``--budget`` items drawn uniformly at random without replacement, Wilson interval
with the finite-population correction (the same label count as the active design's draws; the active design
labels only its distinct items, so it pays a few labels less). Reports mean widths, the ratio (goal <= 0.7x),
the coverage of both over the seeds, and the mean distinct labels. Then runs the command line on the mild pool,
``assay estimate MODEL --unlabeled POOL --simulate --label-budget 200 --selection sawade|difference`` (seed 0).

    python bench/bench_active_testing.py [--seeds 500] [--budget 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.stats.active_testing import (
    class_accuracy_estimates,
    estimate_from_labels,
    expected_error,
    select_items,
    uniform_interval,
)
from assay.stats.probabilities import softmax


def _pool(x: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """The test digits and four transformed copies of them (NCHW, values in [0, 1]; see the module docstring)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)

    def noisy(sd: float) -> np.ndarray:
        return np.clip(x + rng.normal(0, sd, x.shape), 0, 1)

    if kind == "in-distribution":
        copies = [x, noisy(0.05), noisy(0.1), noisy(0.05), noisy(0.1)]
    elif kind == "mild":
        blurred = np.stack([gaussian_filter(a, sigma=(0, 1, 1)) for a in x])
        copies = [x, noisy(0.2), noisy(0.3), blurred, x * 0.5]
    else:
        right = np.zeros_like(x)
        right[..., 1:] = x[..., :-1]
        down = np.zeros_like(x)
        down[..., 1:, :] = x[..., :-1, :]
        patched = x.copy()
        for i, (a, b) in enumerate(rng.integers(0, 6, (len(x), 2))):
            patched[i, :, a:a + 3, b:b + 3] = 0
        copies = [x, right, down, patched, noisy(0.4)]
    return np.concatenate(copies).astype(np.float32)


def _measure(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, name: str, seeds: int, budget: int) -> None:
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy().astype(np.float64)
    probs = softmax(logits)
    correct = (probs.argmax(1) == y).astype(float)
    n, truth = len(y), float(correct.mean())
    error = expected_error(probs)
    class_truth = np.array([correct[y == k].mean() for k in range(10)])
    print(f"pool {name}: {n} items, true accuracy {truth:.4f}, expected accuracy from the softmax "
          f"{1 - error.mean():.4f}")
    rng = np.random.default_rng(12345)
    uniform_widths, uniform_cover = [], 0
    for _ in range(seeds):
        rows = rng.choice(n, budget, replace=False)
        lo, hi = uniform_interval(int(correct[rows].sum()), budget, n)
        uniform_widths.append(hi - lo)
        uniform_cover += lo <= truth <= hi
    u_width = float(np.mean(uniform_widths))
    print(f"  {'uniform':<14} mean width {u_width:.4f}  coverage {uniform_cover / seeds:.3f}  ({budget} labels)")
    for rule in ("sawade", "difference", "expected-loss"):
        widths, cover, labels, class_cover, class_seen = [], 0, [], np.zeros(10), np.zeros(10)
        paid_widths = []  # uniform labelling of as many items as this design paid for (its distinct items)
        paid_rng = np.random.default_rng(54321)
        for seed in range(seeds):
            s = select_items(error, budget, rule=rule, seed=seed)
            items, counts = s.draws.items, s.draws.counts
            rows = paid_rng.choice(n, s.draws.labels, replace=False)
            lo, hi = uniform_interval(int(correct[rows].sum()), s.draws.labels, n)
            paid_widths.append(hi - lo)
            est = estimate_from_labels(s.q, s.centre, items, counts, correct[items])
            assert est.width is not None
            widths.append(est.width)
            cover += est.ci_low <= truth <= est.ci_high
            labels.append(s.draws.labels)
            for k, ce in enumerate(class_accuracy_estimates(correct[items], y[items], s.q[items], 10, counts=counts)):
                if ce.value is not None and ce.ci_low is not None and ce.ci_high is not None:
                    class_seen[k] += 1
                    class_cover[k] += ce.ci_low <= class_truth[k] <= ce.ci_high
        width = float(np.mean(widths))
        ratio = width / u_width
        per_class = class_cover / np.maximum(class_seen, 1)
        paid = width / float(np.mean(paid_widths))
        print(f"  {rule:<14} mean width {width:.4f}  coverage {cover / seeds:.3f}  ratio {ratio:.3f}x (goal <= 0.7x: "
              f"{'met' if ratio <= 0.7 else 'missed'}; {paid:.3f}x uniform at the {np.mean(labels):.1f} labels paid)  "
              f"per-class coverage min {per_class.min():.3f} mean {per_class.mean():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--budget", type=int, default=200)
    args = parser.parse_args()
    train, test = load_data("digits:train"), load_data("digits:test")
    assert train.y is not None and test.y is not None
    t0 = time.perf_counter()
    model = train_digits_cnn(train.x, train.y, seed=0, progress=False)
    print(f"demo CNN trained in {time.perf_counter() - t0:.1f} s; budget {args.budget} draws, {args.seeds} seeds; "
          f"uniform = {args.budget} labels at random, Wilson + finite-population correction")
    y = np.tile(test.y, 5)
    for kind in ("in-distribution", "mild", "shifted"):
        _measure(model, _pool(test.x, kind), y, kind, args.seeds, args.budget)
    x = _pool(test.x, "mild")
    with tempfile.TemporaryDirectory() as tmp:
        from assay.cli import main as assay_main
        from assay.evidence import output
        from assay.models.export import export_onnx

        if "estimate" not in output.OUTPUT_KINDS:  # until evidence/output.py lists the estimate bundle's kind
            output.OUTPUT_KINDS = (*output.OUTPUT_KINDS, "estimate")

        onnx_path = Path(tmp) / "digits_cnn.onnx"
        export_onnx(model, torch.from_numpy(test.x[:2]), onnx_path, class_names=test.class_names)
        np.savez(Path(tmp) / "pool.npz", x=x, y=y, class_names=np.asarray(test.class_names))
        for selection in ("sawade", "difference"):
            out = Path(tmp) / f"est-{selection}"
            command = ["estimate", str(onnx_path), "--unlabeled", str(Path(tmp) / "pool.npz"), "--simulate",
                       "--label-budget", str(args.budget), "--selection", selection, "--out", str(out), "--no-cache",
                       "--quiet"]
            t0 = time.perf_counter()
            code = assay_main(command)
            print(f"`assay estimate MODEL --unlabeled POOL(mild) --simulate --label-budget {args.budget} --selection "
                  f"{selection}`: exit {code} in {time.perf_counter() - t0:.1f} s")
            if code == 0:
                section = json.loads((out / "evidence.json").read_text())["sections"]["estimate"]
                print(f"  {section['summary']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
