"""Numerically stable softmax, log-softmax and per-sample NLL, shared by every check that needs them."""

from __future__ import annotations

import numpy as np

__all__ = ["log_softmax", "nll_per_sample", "softmax"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax in float64 via log-sum-exp (max subtracted first: no overflow)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, max subtracted first (no overflow); one (N, C) allocation."""
    e = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


def nll_per_sample(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """-log softmax(logits / T)[label], natural log (scikit-learn's ``log_loss`` per sample)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return -log_softmax(scaled)[np.arange(len(labels)), np.asarray(labels)]
