"""Wall time of a full `assay compress` on the demo (digits CNN; int8 static x3 calibrations, dynamic int8 on
MatMul/Gemm and on all ops, fp16), split into its stages, against the baseline of evaluating the original
model once with the same suite (what a user pays anyway). No thresholds: the ratio is the cost of the audit.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import machine
from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.compress.run import compress
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.models.export import export_onnx

METHODS = ["int8-static", "int8-dynamic", "int8-dynamic-all", "fp16"]


def main() -> int:
    print(machine())
    train, test = load_data("digits:train"), load_data("digits:test")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cnn.onnx"
        export_onnx(train_digits_cnn(train.x, train.y, epochs=20), torch.from_numpy(test.x[:2]), path,
                    class_names=test.class_names)
        t = time.perf_counter()
        run_evaluation(str(path), test, config=EvaluateConfig(), cache_dir=False)
        baseline = time.perf_counter() - t
        t = time.perf_counter()
        result = compress(str(path), test, calibration=train, methods=METHODS, out=Path(tmp) / "out",
                          latency_budget_s=2.0, cache_dir=False)
        total = time.perf_counter() - t
    print(f"assay compress on the demo ({', '.join(METHODS)}; {len(result.variants)} variants incl. the fp32 "
          f"reference; latency budget 2 s per model and batch size): {total:.1f} s")
    print(f"baseline: one evaluation of the original (performance + calibration): {baseline:.2f} s "
          f"-> compress costs {total / baseline:.0f}x one evaluation")
    b = result.ranking_batch
    for row in result.rows:
        print(f"  {row['variant']:<24} acc delta {row['accuracy_delta']:+.4f}  "
              f"changed {row['changed_predictions']:>3}  "
              f"speed-up at batch {b}: {row[f'speedup[batch={b}]']:.2f}x  {row['status']}")
    print("recommendation:", result.reasons[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
