"""Shared fixtures: an in-memory linear model (a fake runtime that counts its forward passes)."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import sys
import types

import numpy as np
import pytest

from assay.data.dataset import Dataset
from assay.evidence.schema import ModelInfo
from assay.models.base import Model


class LinearModel(Model):
    """logits = x.reshape(N, -1) @ W + b; features = the flattened input. Counts forward calls."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, input_shape: tuple[int, ...],
                 outputs: str = "logits") -> None:
        self.weight = weight.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.calls = 0
        digest = hashlib.sha256(self.weight.tobytes() + self.bias.tobytes()).hexdigest()
        self.info = ModelInfo(
            path="<memory>", format="factory", sha256=digest, input_shape=[None, *input_shape],
            input_dtype="float32", num_classes=weight.shape[1], class_names=[str(i) for i in range(weight.shape[1])],
            outputs=outputs, feature_source="input",
        )

    def _forward(self, x, want_features):
        self.calls += 1
        flat = x.reshape(len(x), -1)
        return flat @ self.weight + self.bias, (flat if want_features else None)


def make_blobs_dataset(n: int = 400, num_classes: int = 3, dim: int = 4, seed: int = 0, noise: float = 1.0):
    """Gaussian blobs with a matching linear model: (dataset, model)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(num_classes, dim))
    y = rng.integers(0, num_classes, size=n)
    x = (centers[y] + rng.normal(0, noise, size=(n, dim))).astype(np.float32)
    ds = Dataset(x=x, y=y.astype(np.int64), ids=np.arange(n), modality="tabular", name="blobs", source="<blobs>",
                 class_names=[f"c{i}" for i in range(num_classes)])
    # Nearest-centre classifier written as a linear model: logits_k = x.c_k - |c_k|^2 / 2.
    model = LinearModel(centers.T.copy(), -0.5 * (centers**2).sum(1), (dim,))
    return ds, model


@pytest.fixture
def blobs():
    return make_blobs_dataset()


class _StubModule(types.ModuleType):
    """A torchvision stand-in: any attribute is a dummy class (pytorch-ood imports torchvision at
    top level for models and datasets we do not use)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        stub = type(name, (), {"__init__": lambda self, *args, **kwargs: None})
        setattr(self, name, stub)
        return stub


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


@pytest.fixture(scope="session")
def pytorch_ood_detectors():
    """(torch, pytorch_ood.detector), imported with a stub torchvision if the real one is missing
    (installed --no-deps: a real torchvision would pull a CUDA build of torch)."""
    torch = pytest.importorskip("torch")
    finder = None
    try:
        import torchvision  # noqa: F401
    except ImportError:
        finder = _StubFinder()
        sys.meta_path.insert(0, finder)
    try:
        from pytorch_ood import detector
    except Exception as exc:
        pytest.skip(f"pytorch-ood unavailable: {exc}")
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)
    return torch, detector


def pytest_configure(config):
    """Under pytest-xdist each worker gets one torch thread: two workers x two threads on two cores
    oversubscribe the CPU (measured ~3x slower for the attack tests)."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
