"""Pieces every attack shares: the threat model (an eps-ball in L∞ or L2, intersected with the [0, 1]
input box), projection onto it, the margin and DLR losses, input checks, and seeding.

Inputs are float tensors/arrays of shape (N, ...) with values in [0, 1] (normalization lives inside the
model, as RobustBench requires); labels are int64 of shape (N,). Randomness always comes from a local
generator built from the attack's ``seed``, never from the global RNG, so an attack is reproducible and
does not disturb the caller's random state.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from assay.errors import UserError

__all__ = [
    "NORMS",
    "Norm",
    "check_attack_inputs",
    "check_positive_int",
    "check_threat_model",
    "dlr_loss",
    "dlr_targeted_loss",
    "input_layout",
    "linf_box",
    "margin",
    "np_rng",
    "per_sample_norm",
    "project",
    "project_l2",
    "torch_generator",
]

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")

#: Inputs may stray this far outside [0, 1] (float rounding of pixel / 255 and the like).
RANGE_TOLERANCE = 1e-6
_SEED_MODULUS = 2**63


def check_threat_model(eps: float, norm: str, where: str) -> None:
    """Refuse an unknown norm or an eps that is not a finite non-negative number."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}", where=where, fix=f"use one of {', '.join(NORMS)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise UserError(f"eps must be a finite number >= 0, got {eps!r}", where=where,
                        fix="give the radius in input units of [0, 1] images, e.g. 8/255 for L∞ or 0.5 for L2")


def check_positive_int(value: int, name: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}", where=where, fix=f"pass {name}>=1")


def check_attack_inputs(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, where: str) -> None:
    """Inputs: floating, shape (N, ...), values in [0, 1]; labels: integer, shape (N,)."""
    xs, ys = tuple(x.shape), tuple(y.shape)
    floating = x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)
    integer = (not y.is_floating_point() and y.dtype != torch.bool) if isinstance(y, torch.Tensor) \
        else np.issubdtype(y.dtype, np.integer)
    if not floating or len(xs) < 2:
        raise UserError(f"attack inputs must be a floating array of shape (N, ...), got {x.dtype} {xs}", where=where,
                        fix="pass float32 inputs scaled to [0, 1]")
    if not integer or len(ys) != 1 or ys[0] != xs[0]:
        raise UserError(f"labels must be integers of shape ({xs[0]},), got {y.dtype} {ys}", where=where,
                        fix="pass one int64 class index per input")
    if xs[0] == 0:
        return
    lo, hi = (float(x.min()), float(x.max()))
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE or math.isnan(lo) or math.isnan(hi):
        raise UserError(f"attack inputs must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]", where=where,
                        fix="scale inputs to [0, 1] and move normalization inside the model")


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh local torch RNG for ``seed`` (any integer; reduced mod 2**63)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) % _SEED_MODULUS)
    return gen


def np_rng(seed: int) -> np.random.Generator:
    """A fresh local numpy RNG for ``seed`` (any integer; reduced mod 2**63)."""
    return np.random.default_rng(int(seed) % _SEED_MODULUS)


def input_layout(module: torch.nn.Module, x: torch.Tensor) -> torch.memory_format:
    """Memory layout to run a white-box attack in: channels-last for multi-channel image batches when the
    module accepts such input (oneDNN convolutions and pooling run ~20-30% faster on CPU; values and
    shapes are unchanged, only the memory order), else the standard layout.

    One-sample probe forward: a module that reshapes its input with ``.view`` rejects channels-last
    input, and then the standard layout is used. Single-channel inputs keep the standard layout (no gain).
    """
    if x.dim() != 4 or x.shape[0] == 0 or x.shape[1] == 1:
        return torch.contiguous_format
    try:
        with torch.no_grad():
            module(x[:1].contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        return torch.contiguous_format
    return torch.channels_last


def _view_shape(t: torch.Tensor) -> tuple[int, ...]:
    return (t.shape[0],) + (1,) * (t.dim() - 1)


def per_sample_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """The L∞ or L2 norm of each sample, shaped (N, 1, ..., 1) to broadcast against ``t``."""
    flat = t.reshape(t.shape[0], -1)
    n = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)
    return n.reshape(_view_shape(t))


def linf_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower/upper bounds of the L∞ ball around ``x`` intersected with [0, 1]: projection is one clamp."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L2 ball of radius eps around ``x``, then clip to [0, 1].

    Clipping after the ball projection never leaves the ball: ``x`` is in [0, 1], so clipping only
    shrinks each coordinate of the perturbation.
    """
    delta = x_adv - x
    factor = (eps / (per_sample_norm(delta, "l2") + 1e-12)).clamp_(max=1.0)
    return (x + delta * factor).clamp_(0.0, 1.0)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Projection onto {z : ||z - x|| <= eps, 0 <= z <= 1} (exact for L∞; ball-then-box for L2)."""
    if norm == "linf":
        lo, hi = linf_box(x, eps)
        return torch.clamp(x_adv, lo, hi)
    return project_l2(x_adv, x, eps)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per sample: negative exactly when the prediction is wrong (ties aside)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true - others


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 4), to maximise:
    -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), with z_pi the logits sorted in decreasing order.

    Invariant to shifting and rescaling the logits, so a saturated softmax cannot hide the gradient."""
    top = logits.topk(3, dim=1).values
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 5), to maximise:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
