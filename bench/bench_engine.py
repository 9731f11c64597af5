"""Engine overhead: ``assay`` evaluate (performance + calibration, cache off) vs a bare onnxruntime loop
over the same 50,000 synthetic 1x28x28 images and the same small CNN, measured in one run.

Ratio = assay wall time / bare-loop wall time (medians of alternating repeats). Target <= 1.15.
Two CNNs: the PyTorch MNIST example network (conv 32, conv 64, fc 128: ~12 M MACs per image, the usual
"small CNN" for 28x28 inputs) and a tiny one (~1 M MACs) where the fixed cost of the checks (bootstrap
CIs over 50,000 samples) weighs most. Both ratios are printed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from _common import machine
from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.data.dataset import Dataset
from assay.models.export import export_onnx

N, BATCH, REPEATS = 50_000, 256, 3


class MnistExampleCNN(nn.Module):
    """The network of pytorch/examples mnist/main.py (dropout omitted: inference only)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        x = torch.flatten(nn.functional.max_pool2d(x, 2), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.body(x))))


def measure(net: nn.Module, label: str, x: np.ndarray, y: np.ndarray, threads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cnn.onnx"
        export_onnx(net.eval(), torch.from_numpy(x[:2]), path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def bare() -> None:
            parts = [session.run(None, {name: x[i:i + BATCH]})[0] for i in range(0, N, BATCH)]
            np.concatenate(parts).argmax(1)

        dataset = Dataset(x=x, y=y, ids=np.arange(N), modality="image", name="synthetic", source="<synthetic>")

        def ours():
            return run_evaluation(str(path), dataset, config=EvaluateConfig(batch_size=BATCH), cache_dir=None,
                                  model_options={"threads": threads})

        bare()  # warm-up
        bare_runs, our_runs = [], []
        for _ in range(REPEATS):
            t = time.perf_counter(); bare(); bare_runs.append(time.perf_counter() - t)
            t = time.perf_counter(); run = ours(); our_runs.append(time.perf_counter() - t)
    b, o = float(np.median(bare_runs)), float(np.median(our_runs))
    print(f"## {label}")
    print(f"bare onnxruntime loop: {b:.2f} s (runs {', '.join(f'{r:.2f}' for r in bare_runs)})")
    print(f"assay evaluate (performance + calibration, no cache): {o:.2f} s (runs {', '.join(f'{r:.2f}' for r in our_runs)})")
    print("assay stages of the last run: " + ", ".join(f"{k} {v:.2f} s" for k, v in run.evidence.timings.items()))
    print(f"ratio: {o / b:.2f}   target <= 1.15: {'met' if o / b <= 1.15 else 'MISSED'}")


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((N, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, N)
    threads = os.cpu_count() or 1
    print(f"# engine overhead: {N:,} images 1x28x28, batch {BATCH}, {threads} threads — {machine()}")
    measure(MnistExampleCNN(), "PyTorch MNIST example CNN (~12 M MACs/image)", x, y, threads)
    measure(TinyCNN(), "tiny CNN (~1 M MACs/image)", x, y, threads)


if __name__ == "__main__":
    sys.exit(main())
