"""Time split of `--suite standard` on the demo (digits test split, DigitsCNN as ONNX): corruption
generation vs inference vs metrics, from one run with the cache off. The clean run is the baseline."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from _common import machine
from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.engine.planning import apply_suite
from assay.models.export import export_onnx


def main() -> None:
    train, test = load_data("digits:train"), load_data("digits:test")
    net = train_digits_cnn(train.x, train.y)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.onnx"
        export_onnx(net, torch.from_numpy(test.x[:2]), path)
        clean = run_evaluation(str(path), test, cache_dir=None).evidence.timings
        options = apply_suite("standard", {})
        run = run_evaluation(str(path), test, config=EvaluateConfig(**options), cache_dir=None)
    t = run.evidence.timings
    checks = sum(v for k, v in t.items() if k.startswith("check:"))
    views = len(run.evidence.sections["corruption"].tables["per_view"])
    print(f"# --suite standard on the demo ({test.x.shape[0]} samples, {views} corruption views) — {machine()}")
    print(f"total {t['total']:.2f} s (clean-only run: {clean['total']:.2f} s, "
          f"ratio {t['total'] / clean['total']:.1f}x)")
    print(f"corruption generation {t['inference:perturbation']:.2f} s | inference {t['inference:forward']:.2f} s | "
          f"metrics {checks:.2f} s ({', '.join(f'{k[6:]} {v:.2f}' for k, v in t.items() if k.startswith('check:'))})")


if __name__ == "__main__":
    sys.exit(main())
