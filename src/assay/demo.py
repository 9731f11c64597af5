"""The built-in demo: a small CNN trained on scikit-learn's bundled digits in seconds, then evaluated.

``DigitsCNN`` doubles as a factory for ``module:callable --weights`` loading and as the model of tests
and benchmarks, so it lives in the package.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from assay.progress import scope, stage

if TYPE_CHECKING:
    import os

    from assay.data.dataset import Dataset
    from assay.evaluation import EvaluationRun

__all__ = ["TRAINING_TIME_NOTE", "DigitsCNN", "make_digits_cnn", "run_demo", "train_digits_cnn"]


class DigitsCNN(nn.Module):
    """Two conv layers and two linear layers for 1x8x8 inputs in [0, 1] (normalization inside)."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.fc1 = nn.Linear(2 * width * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.3) / 0.4  # digits pixel mean/std, so the model takes raw [0, 1] inputs
        return self.fc2(torch.relu(self.fc1(self.features(x))))


def make_digits_cnn() -> DigitsCNN:
    """Factory for ``assay.demo:make_digits_cnn --weights FILE``."""
    return DigitsCNN()


#: What the demo's training usually takes on a CPU, said before it starts (40 epochs over 1,257 digits: 9 s on
#: two idle-ish cores, 62 s on two cores shared with other jobs); the progress lines give the measured ETA.
TRAINING_TIME_NOTE = "usually under a minute on a CPU"


def train_digits_cnn(x: np.ndarray, y: np.ndarray, *, epochs: int = 40, seed: int = 0,
                     progress: bool | None = None) -> DigitsCNN:
    """Train DigitsCNN with Adam on (N, 1, 8, 8) inputs; deterministic for a given seed on CPU.

    ``progress``: show one step per epoch (None: as the enclosing :func:`assay.progress.scope` says)."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with stage("training the demo CNN on digits", total=epochs, unit="epochs", enabled=progress,
               note=TRAINING_TIME_NOTE) as advance:
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
            advance()
    return model.eval()


def shifted_digits(test: Dataset) -> Dataset:
    """The demo's label-free target: the test digits moved one pixel to the right (the left column blank), a
    shift the model never saw. Its labels are kept only so the report can show the true accuracy next to
    the estimates; the estimators never read them."""
    from assay.data.dataset import Dataset

    x = np.zeros_like(test.x)
    x[..., 1:] = test.x[..., :-1]
    return Dataset.from_arrays(x, test.y, class_names=test.class_names, name="digits:test shifted one pixel right")


def run_demo(out: str | Path = "assay-out", *, seed: int = 0, progress: bool = True,
             cache_dir: str | os.PathLike[str] | bool | None = True, suite: str = "standard",
             force: bool = False) -> EvaluationRun:
    """Train on digits:train, export to ONNX, evaluate on digits:test (``suite``: quick = performance and
    calibration; standard adds the 15 ImageNet-C corruptions, OOD detection on the synthetic OOD sets
    with detectors fitted on digits:train, slices by ink (low/mid/high), label-free accuracy estimates on the
    test digits shifted one pixel (validated on the corruption views) and the efficiency profile (latency,
    memory, FLOPs, energy); full adds held-out corruptions and the black-box Square attack), write the bundle
    to ``out``.

    Returns the :class:`~assay.evaluation.EvaluationRun`; the ONNX model is copied into the bundle.
    """
    from assay.checks.base import EvaluateConfig
    from assay.data.loader import load_data
    from assay.engine.planning import apply_suite
    from assay.evaluation import evaluation_inputs, run_evaluation, write_evaluation
    from assay.evaluation.inputs import InMemoryInputs
    from assay.evidence.output import check_output
    from assay.models.export import export_onnx

    inputs = evaluation_inputs(None, None, cache_dir=cache_dir)
    check_output(out, "evaluate", inputs=inputs, force=force)  # before training, not after it
    train = load_data("digits:train")
    test = load_data("digits:test")
    assert train.y is not None  # the built-in digits are labelled
    t0 = time.perf_counter()
    module = train_digits_cnn(train.x, train.y, seed=seed, progress=progress)
    train_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "digits_cnn.onnx"
        export_onnx(module, torch.from_numpy(test.x[:2]), onnx_path, class_names=test.class_names)
        options = apply_suite(suite, {})
        checks = ["performance", "calibration"]
        with InMemoryInputs() as memory:
            if suite != "quick":  # show the trust dimensions beyond robustness on the same cached pass
                options.update(ood=["synthetic"], train_data="digits:train", slice_by=["ink"], latency_budget=2.0,
                               unlabeled=[memory.data(shifted_digits(test), "unlabeled[0]")])
                checks.append("efficiency")
            config = EvaluateConfig(seed=seed, **options)
            with scope(progress):  # the efficiency check's timing shows progress too
                run = run_evaluation(str(onnx_path), test, checks=checks, config=config, cache_dir=cache_dir,
                                     progress=progress)
        run.evidence.timings["demo_training"] = round(train_seconds, 4)
        run.evidence.model.path = "model.onnx"  # the copy inside the bundle, not the deleted temp file
        write_evaluation(run, out, extra_files={"model.onnx": onnx_path}, inputs=inputs, force=force)
    return run
