"""What every check receives, and the helpers checks share to turn bootstrap samples into Metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.data.dataset import Dataset
from assay.engine.run import Outputs
from assay.evidence.schema import Metric
from assay.stats.bootstrap import SharedWeights, clopper_pearson, percentile_ci, spawn_seed

__all__ = ["CheckContext", "EvaluateConfig", "exact_interval_if_collapsed", "make_metric"]


class EvaluateConfig(BaseModel):
    """Settings of an evaluation run; recorded verbatim in ``evidence.json``."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed for every randomized step (bootstrap, splits).")
    n_bootstrap: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples per CI.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of every interval.")
    ece_bins: int = Field(15, ge=2, le=1000, description="Bins for the ECE family (Guo et al. 2017 use 15).")
    calibration_split: float = Field(
        0.5, gt=0.0, lt=1.0, description="Fraction of the evaluation set held out to fit the temperature "
        "when no calibration data is given."
    )
    batch_size: int = Field(256, ge=1, description="Inference batch size.")
    ood: list[str] = Field(default_factory=list, description="OOD sets: data specs, or 'synthetic' for built-in "
                           "noise/blob images.")
    train_data: str | None = Field(None, description="Training data to fit feature-based OOD detectors on.")
    unlabeled: list[str] = Field(default_factory=list, description="Unlabeled target data for label-free "
                                 "accuracy estimates.")
    slice_by: list[str] = Field(default_factory=list, description="Metadata columns to slice by.")
    min_slice_size: int = Field(30, ge=1, description="Slices smaller than this are reported as insufficient.")
    sensitive: list[str] = Field(default_factory=list, description="Metadata columns for fairness metrics.")
    latency_batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32], description="Batch sizes timed by "
                                           "the efficiency check.")
    latency_budget: float = Field(10.0, gt=0, description="Seconds of timing per batch size (efficiency check).")
    price_per_hour: float | None = Field(None, ge=0, description="Machine price per hour: cost per 1M inferences.")
    corruptions: list[str] = Field(default_factory=list, description="Corruption types to evaluate (empty: none).")
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="Corruption severities (1-5).")
    corruption_table: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="Image corruption parameters: CIFAR-scale below 128 px, ImageNet-scale above (auto).")
    corruption_data: str | None = Field(
        None, description="Directory of a pre-computed -C set (<corruption>.npy, 5 severities stacked).")
    baseline: str | None = Field(None, description="Evidence bundle of a baseline model, the reference of CE/mCE.")
    adversarial: Literal["quick", "standard", "blackbox", "auto"] | None = Field(
        None, description="Attack preset: quick (APGD-CE), standard (APGD-CE + APGD-T + Square), blackbox (Square); "
        "auto = standard for torch models, blackbox for ONNX.")
    attacks: list[str] = Field(default_factory=list, description="Explicit attacks (fgsm, pgd, apgd-ce, apgd-t, "
                               "square), replacing the preset's list.")
    eps: list[float] = Field(default_factory=list, description="Perturbation budgets (default 8/255 for linf, 0.5 for l2).")
    norm: Literal["linf", "l2"] = Field("linf", description="Threat model norm.")
    attack_steps: int = Field(100, ge=1, description="Iterations of white-box attacks (APGD: 100 in AutoAttack).")
    attack_restarts: int = Field(1, ge=1, description="Random restarts of white-box attacks.")
    square_queries: int = Field(1000, ge=1, description="Query budget of the Square attack (5000 in AutoAttack).")


@dataclass
class CheckContext:
    """Inputs of a check: cached outputs, the dataset (labels, metadata) and the run's config.

    ``calibration`` holds (logits, labels) of separate calibration data when the user gave some.
    """

    outputs: Outputs
    dataset: Dataset
    config: EvaluateConfig
    calibration: tuple[np.ndarray, np.ndarray] | None = None
    views: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    baseline: Any = None  # Evidence of a baseline model, when given
    _weights: SharedWeights | None = None

    def resample_weights(self) -> SharedWeights:
        """Bootstrap weights over the evaluation set, shared by all checks of the run (same resamples)."""
        if self._weights is None:
            self._weights = SharedWeights(len(self.dataset), self.config.n_bootstrap,
                                          spawn_seed(self.config.seed, "evaluation-set"))
        return self._weights

    @property
    def logits(self) -> np.ndarray:
        return self.outputs.clean.logits

    @property
    def labels(self) -> np.ndarray:
        assert self.dataset.y is not None, "checks over labels need a labelled dataset"
        return self.dataset.y


def make_metric(
    value: float,
    samples: np.ndarray | None,
    *,
    n: int,
    config: EvaluateConfig,
    method: str | None = None,
    metric_config: dict[str, Any] | None = None,
) -> Metric:
    """A Metric with a percentile CI from bootstrap ``samples`` (or no CI when samples is None)."""
    value_f = float(value) if value is not None and np.isfinite(value) else None
    if samples is None:
        lo = hi = None
        method = method or "point estimate (no interval)"
    else:
        lo, hi = percentile_ci(samples, config.confidence)
        lo = None if not np.isfinite(lo) else lo
        hi = None if not np.isfinite(hi) else hi
        method = method or (
            f"bootstrap percentile, {int(config.confidence * 100)}% (B={config.n_bootstrap}, seed={config.seed})"
        )
    return Metric(value=value_f, ci_low=lo, ci_high=hi, n=int(n), method=method, config=metric_config or {})


def exact_interval_if_collapsed(metric: Metric, successes: int, n: int, confidence: float) -> None:
    """Replace a collapsed bootstrap interval of a proportion (all or none right: every resample is
    identical) by the exact Clopper-Pearson interval, and say so in ``method``."""
    if metric.ci_low != metric.ci_high:
        return
    metric.ci_low, metric.ci_high = clopper_pearson(successes, n, confidence)
    metric.method = (f"Clopper-Pearson exact, {int(confidence * 100)}% (the bootstrap interval collapses "
                     f"when {successes} of {n} are right)")
