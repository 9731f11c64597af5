"""Engine overhead: ``assay`` evaluate (performance + calibration, cache off) vs a bare onnxruntime loop
over the same 50,000 synthetic 1x28x28 images and the same small CNN, measured in one run.

In process: ratio = ``run_evaluation`` wall time / bare-loop wall time (medians of alternating repeats),
target <= 1.15. Two CNNs: the PyTorch MNIST example network (conv 32, conv 64, fc 128: ~12 M MACs per
image, the usual "small CNN" for 28x28 inputs) and a tiny one (~1 M MACs) where the fixed cost of the
checks (bootstrap CIs over 50,000 samples) weighs most.

Whole process (MNIST example CNN): ``assay evaluate MODEL --data DATA.npz --checks performance,calibration
--no-cache --quiet`` (start-up, loading, inference, checks, the evidence bundle with its HTML report) vs a
bare process that loads the same .npz, runs the same onnxruntime loop and prints the accuracy, as
alternating fresh subprocesses. Wall ratio target <= 1.2; peak RSS (each child's ru_maxrss, from wait4)
ratio target <= 1.5.
"""

from __future__ import annotations

import json
import os
import subprocess
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

# The bare process: what a user would write without Assay (same data file, threads, batch, outputs used).
BARE_PROCESS = """
import sys, numpy as np, onnxruntime as ort
model, data, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with np.load(data) as z:
    x, y = z["x"], z["y"]
opts = ort.SessionOptions()
opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
logits = np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
print("accuracy", (logits.argmax(1) == y).mean())
"""
ASSAY_PROCESS = "import sys; from assay.cli import main; sys.exit(main(sys.argv[1:]))"


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
            t = time.perf_counter()
            bare()
            bare_runs.append(time.perf_counter() - t)
            t = time.perf_counter()
            run = ours()
            our_runs.append(time.perf_counter() - t)
    b, o = float(np.median(bare_runs)), float(np.median(our_runs))
    print(f"## in process, {label}")
    print(f"bare onnxruntime loop: {b:.2f} s (runs {', '.join(f'{r:.2f}' for r in bare_runs)})")
    print(f"assay evaluate (performance + calibration, no cache): {o:.2f} s "
          f"(runs {', '.join(f'{r:.2f}' for r in our_runs)})")
    print("assay stages of the last run: " + ", ".join(f"{k} {v:.2f} s" for k, v in run.evidence.timings.items()))
    print(f"ratio: {o / b:.2f}   target <= 1.15: {'met' if o / b <= 1.15 else 'MISSED'}")


# Children are started by this small launcher, not by the benchmark: Linux carries the parent's RSS into a
# child's ru_maxrss (fork copies the page tables; exec records the old image's peak), and the benchmark
# process holds torch and the data. The launcher's ~10 MiB is the same for both children.
LAUNCHER = """
import json, os, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"wall": time.perf_counter() - t, "maxrss_kib": usage.ru_maxrss,
                  "code": os.waitstatus_to_exitcode(status)}))
"""


def child(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one fresh Python process running ``args``."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, *args], capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"code": proc.returncode}
    if result["code"]:
        raise RuntimeError(f"child exited {result['code']}: {proc.stderr[-2000:]}")
    return result["wall"], result["maxrss_kib"] // 1024


def measure_processes(net: nn.Module, label: str, x: np.ndarray, y: np.ndarray, threads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model, data = Path(tmp) / "cnn.onnx", Path(tmp) / "data.npz"
        export_onnx(net.eval(), torch.from_numpy(x[:2]), model)
        np.savez(data, x=x, y=y)
        bare = ["-c", BARE_PROCESS, str(model), str(data), str(threads), str(BATCH)]
        ours = ["-c", ASSAY_PROCESS, "evaluate", str(model), "--data", str(data), "--checks", "performance,calibration",
                "--no-cache", "--quiet", "--threads", str(threads), "--batch-size", str(BATCH)]
        child(bare)  # warm the page cache for both
        bare_runs, our_runs = [], []
        for r in range(REPEATS):
            bare_runs.append(child(bare))
            our_runs.append(child([*ours, "--out", str(Path(tmp) / f"out{r}")]))
        timings = json.loads((Path(tmp) / f"out{REPEATS - 1}" / "evidence.json").read_text())["timings"]
    b, o = (float(np.median([w for w, _ in runs])) for runs in (bare_runs, our_runs))
    b_rss, o_rss = (int(np.median([m for _, m in runs])) for runs in (bare_runs, our_runs))
    print(f"## whole process, {label}")
    print(f"bare onnxruntime process: {b:.2f} s, peak RSS {b_rss} MiB "
          f"(runs {', '.join(f'{w:.2f} s/{m}' for w, m in bare_runs)})")
    print(f"assay evaluate process (performance + calibration, no cache, bundle + report): {o:.2f} s, peak RSS "
          f"{o_rss} MiB (runs {', '.join(f'{w:.2f} s/{m}' for w, m in our_runs)})")
    inside = timings["total"]
    print(f"assay process of the last run: evaluation {inside:.2f} s (load {timings['load']:.2f}, inference "
          f"{timings['inference']:.2f}, checks {sum(v for k, v in timings.items() if k.startswith('check:')):.2f}); "
          f"start-up + bundle/report {our_runs[-1][0] - inside:.2f} s")
    print(f"whole-process wall ratio: {o / b:.2f}   target <= 1.2: {'met' if o / b <= 1.2 else 'MISSED'}")
    print(f"peak RSS ratio: {o_rss / b_rss:.2f}   target <= 1.5: {'met' if o_rss / b_rss <= 1.5 else 'MISSED'}")


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((N, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, N)
    threads = os.cpu_count() or 1
    print(f"# engine overhead: {N:,} images 1x28x28, batch {BATCH}, {threads} threads — {machine()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    mnist = MnistExampleCNN()
    measure(mnist, "PyTorch MNIST example CNN (~12 M MACs/image)", x, y, threads)
    measure(TinyCNN(), "tiny CNN (~1 M MACs/image)", x, y, threads)
    measure_processes(mnist, "PyTorch MNIST example CNN", x, y, threads)
    print(f"# load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
