"""Neural Cleanse trigger reverse-engineering (Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating
Backdoor Attacks in Neural Networks", IEEE S&P).

For every class t, find the smallest mask ``m`` (one value per pixel, shared by the channels) and a pattern
``p`` such that ``(1 - m) * x + m * p`` is classified as t for clean inputs x:
``min CE(f((1 - m) x + m p), t) + lambda_t * |m|_1`` with Adam, ``m = sigmoid(a)`` and ``p = sigmoid(b)`` so
both stay in [0, 1] (the paper's tanh parametrisation, rescaled). ``lambda_t`` follows the paper's schedule:
multiplied by 1.5 after ``patience`` steps in a row with attack success >= ``success``, divided by 1.5**1.5
after as many below; the smallest mask that reached the success rate is kept. All classes are optimised
together (one batch of K x B inputs), for a bounded number of ``steps``, so small inputs take seconds on a CPU.

A backdoor's target needs a much smaller mask than the other classes: its L1 norm is an outlier on the low
side of the MAD anomaly index (:func:`assay.stats.backdoor.mad_anomaly_index`; > 2 in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.stats.backdoor import mad_anomaly_index

__all__ = ["NeuralCleanse", "neural_cleanse"]


@dataclass
class NeuralCleanse:
    """Per class: the L1 norm of the recovered mask, its attack success rate on the inputs used, the mask
    (K, H, W) and pattern (K, C, H, W); the signed MAD anomaly index of the norms (positive = smaller than the
    median, the suspicious side) and the settings that produced them."""

    mask_l1: np.ndarray
    attack_success: np.ndarray
    masks: np.ndarray
    patterns: np.ndarray
    anomaly_index: np.ndarray
    settings: dict[str, Any]

    def trigger(self, k: int) -> np.ndarray:
        """Class k's trigger as an image (C, H, W): the pattern where the mask is on, black elsewhere."""
        return (self.masks[k][None] * self.patterns[k]).astype(np.float32)


def neural_cleanse(module: Any, x: np.ndarray, num_classes: int, *, steps: int = 300, batch_size: int = 32,
                   lr: float = 0.1, init_cost: float = 1e-3, success: float = 0.99, patience: int = 10,
                   seed: int = 0) -> NeuralCleanse:
    """Reverse-engineer one trigger per class on clean inputs ``x`` (N, C, H, W) in [0, 1] through ``module``
    (returns logits); see the module docstring. Deterministic for a given seed on CPU."""
    import torch
    import torch.nn.functional as F

    x_all = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x_all.ndim != 4:
        raise ValueError("Neural Cleanse needs image inputs shaped (N, C, H, W)")
    n, c, h, w = x_all.shape
    k = int(num_classes)
    gen = torch.Generator().manual_seed(seed)
    mask_raw = (torch.randn(k, 1, h, w, generator=gen) * 0.1 - 2.0).requires_grad_(True)
    pattern_raw = (torch.randn(k, c, h, w, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    targets = torch.arange(k).repeat_interleave(min(batch_size, n))
    cost = torch.full((k,), float(init_cost))
    up = torch.zeros(k, dtype=torch.int64)
    down = torch.zeros(k, dtype=torch.int64)
    best_l1 = torch.full((k,), float("inf"))
    best_mask = torch.zeros(k, h, w)
    best_pattern = torch.zeros(k, c, h, w)
    best_success = torch.zeros(k)
    last_success = torch.zeros(k)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(int(steps)):
            pick = torch.randperm(n, generator=gen)[:batch_size]
            xb = x_all[pick]
            mask, pattern = torch.sigmoid(mask_raw), torch.sigmoid(pattern_raw)
            stamped = (1 - mask[:, None]) * xb[None] + (mask * pattern)[:, None]  # (K, B, C, H, W)
            logits = module(stamped.reshape(-1, c, h, w))
            ce = F.cross_entropy(logits, targets, reduction="none").view(k, -1).mean(dim=1)
            l1 = mask.view(k, -1).sum(dim=1)
            loss = (ce + cost * l1).sum()
            grads = torch.autograd.grad(loss, [mask_raw, pattern_raw])
            mask_raw.grad, pattern_raw.grad = grads
            opt.step()
            with torch.no_grad():
                hit = (logits.argmax(dim=1) == targets).float().view(k, -1).mean(dim=1)
                last_success = hit
                better = (hit >= success) & (l1 < best_l1)
                best_l1 = torch.where(better, l1, best_l1)
                best_mask[better] = mask[better, 0]
                best_pattern[better] = pattern[better]
                best_success = torch.where(better, hit, best_success)
                up = torch.where(hit >= success, up + 1, torch.zeros_like(up))
                down = torch.where(hit < success, down + 1, torch.zeros_like(down))
                raise_cost = up >= patience
                lower_cost = down >= patience
                cost = torch.where(raise_cost, cost * 1.5, torch.where(lower_cost, cost / 1.5 ** 1.5, cost))
                up[raise_cost] = 0
                down[lower_cost] = 0
        with torch.no_grad():
            never = ~torch.isfinite(best_l1)  # never reached the success rate: keep the final mask
            mask, pattern = torch.sigmoid(mask_raw), torch.sigmoid(pattern_raw)
            best_mask[never] = mask[never, 0]
            best_pattern[never] = pattern[never]
            best_l1 = torch.where(never, mask.view(k, -1).sum(dim=1), best_l1)
            best_success = torch.where(never, last_success, best_success)
    l1_np = best_l1.numpy().astype(np.float64)
    index = mad_anomaly_index(l1_np)
    index = np.where(l1_np < np.median(l1_np), index, -index)  # signed: positive = smaller mask than typical
    return NeuralCleanse(mask_l1=l1_np, attack_success=best_success.numpy().astype(np.float64),
                         masks=best_mask.numpy(), patterns=best_pattern.numpy(), anomaly_index=index,
                         settings={"steps": int(steps), "batch_size": int(min(batch_size, n)), "lr": lr,
                                   "init_cost": init_cost, "success": success, "patience": patience, "seed": seed,
                                   "inputs": int(n)})
