"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML), L∞ and L2: APGD-CE and the targeted APGD-T (DLR loss).

Re-implemented from the paper's Algorithm 1 and the authors' reference code (fra31/auto-attack,
``autoattack/autopgd_base.py``, MIT licence); no code copied. What the reference does, and so do we:

* start at a random point of the eps-sphere (L∞: scaled uniform noise; L2: scaled Gaussian), clipped to
  [0, 1]; initial step size eta = 2 * eps, per sample;
* step x -> z = P(x + eta * sign(grad)) (L∞) or P(x + eta * grad / ||grad||) (L2), then the momentum
  update x' = P(x + alpha (z - x) + (1 - alpha)(x - x_prev)) with alpha = 0.75 (1 at the first step);
* checkpoints after 0.22 N iterations, then intervals shrinking by 0.03 N down to 0.06 N (integer
  parts, at least 1), i.e. p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06);
* at a checkpoint a sample's step size is halved and it restarts from its best point (highest loss,
  with that point's gradient) when (1) the loss increased in at most rho * k of the k steps since the
  last checkpoint (rho = 0.75; the reference counts "at most", the paper "fewer than"), or (2) its
  step size was not halved at the last checkpoint and its best loss has not improved since;
* any misclassified iterate is a success; restarts (and, for APGD-T, the target classes) only attack
  the samples not yet fooled.

Differences, none of which changes any sample's trajectory: the oscillation count of the first
interval compares the first step with the loss at the starting point (the reference compares it with
an unset zero); fooled samples leave the batch at once (each sample's update depends only on itself);
the gradient of the very last iterate is not computed (nothing uses it); samples never fooled are
returned at their highest-loss point (the reference returns the clean input); randomness comes from a
local generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from assay.attacks.common import (
    check_attack_inputs,
    check_positive_int,
    check_threat_model,
    dlr_loss,
    dlr_targeted_loss,
    input_layout,
    linf_box,
    per_sample_norm,
    project_l2,
    torch_generator,
)
from assay.errors import UserError

__all__ = ["APGD_LOSSES", "apgd", "checkpoint_intervals"]

APGD_LOSSES = ("ce", "dlr", "dlr-targeted")
MOMENTUM = 0.75
_MIN_CLASSES = {"ce": 2, "dlr": 3, "dlr-targeted": 4}

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return dlr_loss(logits, y)


def _dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    assert target is not None
    return dlr_targeted_loss(logits, y, target)


_LOSS_FNS: dict[str, LossFn] = {"ce": _ce, "dlr": _dlr, "dlr-targeted": _dlr_targeted}


def checkpoint_intervals(steps: int) -> list[int]:
    """Lengths of the intervals between APGD's step-size checkpoints for an ``steps``-iteration run,
    as the reference computes them: first max(int(0.22 N), 1), then shrinking by max(int(0.03 N), 1)
    down to max(int(0.06 N), 1)."""
    k = max(int(0.22 * steps), 1)
    decrease, minimum = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, total = [], 0
    while total + k <= steps:
        out.append(k)
        total += k
        k = max(k - decrease, minimum)
    return out


def _random_sphere_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        t = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device).mul_(2).sub_(1)
    else:
        t = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    return (x + eps * t / (per_sample_norm(t, norm) + 1e-12)).clamp_(0.0, 1.0)


@dataclasses.dataclass
class _Run:
    """Per-sample state of one APGD run; rows are dropped as samples get fooled."""

    idx: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    lo: torch.Tensor | None
    hi: torch.Tensor | None
    adv: torch.Tensor
    adv_prev: torch.Tensor
    grad: torch.Tensor
    x_best: torch.Tensor
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    prev_loss: torch.Tensor
    increases: torch.Tensor
    step: torch.Tensor
    best_at_check: torch.Tensor
    reduced_at_check: torch.Tensor

    def keep(self, mask: torch.Tensor) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                setattr(self, field.name, value[mask])


def _loss_grad(module: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
               loss_fn: LossFn, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-sample loss and logits (detached) at ``adv``, and the input gradient of the summed loss."""
    if not need_grad:
        with torch.no_grad():
            logits = module(adv)
            return loss_fn(logits, y, target), logits, None
    adv = adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = module(adv)
        loss = loss_fn(logits, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), adv)
    return loss.detach(), logits.detach(), grad


def _apgd_run(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *,
              eps: float, norm: str, steps: int, rho: float, loss_fn: LossFn, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run from a random start. Returns (points, fooled, best loss): a fooled sample's point is
    a misclassified iterate, any other sample's its highest-loss iterate."""
    n = x.shape[0]
    out = torch.empty_like(x)
    out_loss = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)

    def proj(z: torch.Tensor, s: _Run) -> torch.Tensor:
        return torch.clamp(z, s.lo, s.hi) if norm == "linf" else project_l2(z, s.x, eps)

    def direction(g: torch.Tensor) -> torch.Tensor:
        return g.sign() if norm == "linf" else g / (per_sample_norm(g, "l2") + 1e-12)

    adv = _random_sphere_start(x, eps, norm, gen)
    lo, hi = linf_box(x, eps) if norm == "linf" else (None, None)
    loss, logits, grad = _loss_grad(module, adv, y, target, loss_fn, need_grad=True)
    assert grad is not None
    view = (n,) + (1,) * (x.dim() - 1)
    s = _Run(idx=torch.arange(n, device=x.device), x=x, y=y, target=target, lo=lo, hi=hi, adv=adv,
             adv_prev=adv.clone(), grad=grad, x_best=adv.clone(), grad_best=grad.clone(), loss_best=loss.clone(),
             prev_loss=loss, increases=torch.zeros(n, dtype=torch.int64, device=x.device),
             step=torch.full(view, 2.0 * eps, dtype=x.dtype, device=x.device), best_at_check=loss.clone(),
             reduced_at_check=torch.ones(n, dtype=torch.bool, device=x.device))

    def drop_fooled(logits: torch.Tensor) -> bool:
        """Record misclassified iterates; True when no sample is left."""
        wrong = logits.argmax(dim=1) != s.y
        if bool(wrong.any()):
            out[s.idx[wrong]] = s.adv[wrong]
            fooled[s.idx[wrong]] = True
            s.keep(~wrong)
        return s.idx.numel() == 0

    if drop_fooled(logits):
        return out, fooled, out_loss

    checkpoints: dict[int, int] = {}  # iteration count -> length of the interval it closes
    total = 0
    for k in checkpoint_intervals(steps):
        total += k
        checkpoints[total] = k
    for i in range(steps):
        last = i == steps - 1
        with torch.no_grad():
            alpha = MOMENTUM if i > 0 else 1.0
            momentum = s.adv - s.adv_prev
            s.adv_prev = s.adv
            z = proj(s.adv + s.step * direction(s.grad), s)
            s.adv = proj(s.adv + alpha * (z - s.adv) + (1.0 - alpha) * momentum, s)
        loss, logits, grad = _loss_grad(module, s.adv, s.y, s.target, loss_fn, need_grad=not last)
        with torch.no_grad():
            improved = loss > s.loss_best
            s.x_best[improved] = s.adv[improved]
            if grad is not None:  # None after the last step only
                s.grad_best[improved] = grad[improved]
                s.grad = grad
            s.loss_best = torch.where(improved, loss, s.loss_best)
            s.increases += (loss > s.prev_loss).to(torch.int64)
            s.prev_loss = loss
        if drop_fooled(logits):
            return out, fooled, out_loss
        interval = checkpoints.get(i + 1)
        if interval is None or last:
            continue
        with torch.no_grad():
            oscillating = s.increases <= interval * rho
            stalled = ~s.reduced_at_check & (s.best_at_check >= s.loss_best)
            reduce = oscillating | stalled
            s.reduced_at_check = reduce
            s.best_at_check = s.loss_best.clone()
            if bool(reduce.any()):
                s.step[reduce] /= 2.0
                s.adv[reduce] = s.x_best[reduce]
                s.grad[reduce] = s.grad_best[reduce]
            s.increases.zero_()
    out[s.idx] = s.x_best
    out_loss[s.idx] = s.loss_best
    return out, fooled, out_loss


def apgd(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         steps: int = 100, restarts: int = 1, loss: str = "ce", n_target_classes: int = 9, seed: int = 0,
         rho: float = 0.75) -> torch.Tensor:
    """APGD (Croce & Hein 2020) with the cross-entropy (``loss="ce"``, APGD-CE), the DLR loss (``"dlr"``)
    or the targeted DLR loss (``"dlr-targeted"``, APGD-T: one run per target class, the
    ``n_target_classes`` highest-scoring wrong classes at the clean input, in order).

    Each run takes ``steps`` iterations (``steps + 1`` forward passes); ``restarts`` runs per loss (per
    target for APGD-T). Inputs already misclassified are returned unchanged; a fooled sample gets a
    misclassified point, any other its highest-loss point. AutoAttack's standard setting is
    ``steps=100, restarts=1`` for APGD-CE and ``steps=100, n_target_classes=9, restarts=1`` for APGD-T.
    """
    where = f"apgd ({loss})"
    check_threat_model(eps, norm, where)
    check_positive_int(steps, "steps", where)
    check_positive_int(restarts, "restarts", where)
    check_positive_int(n_target_classes, "n_target_classes", where)
    check_attack_inputs(x, y, where)
    if loss not in APGD_LOSSES:
        raise UserError(f"unknown APGD loss {loss!r}", where="apgd", fix=f"use one of {', '.join(APGD_LOSSES)}")
    if not 0.0 < rho < 1.0:
        raise UserError(f"rho must be in (0, 1), got {rho!r}", where=where, fix="use the paper's rho=0.75")
    y = y.detach().to(torch.int64)
    n = x.shape[0]
    if n == 0:
        return x.detach().clone()
    x = x.detach().contiguous(memory_format=input_layout(module, x))
    with torch.no_grad():
        clean_logits = module(x)
    num_classes = clean_logits.shape[1]
    if num_classes < _MIN_CLASSES[loss]:
        raise UserError(f"APGD with the {loss} loss needs at least {_MIN_CLASSES[loss]} classes; the model has "
                        f"{num_classes}", where=where,
                        fix="use APGD-CE (--adversarial quick) for models with few classes")

    if loss == "dlr-targeted":
        ranked = clean_logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
        targets: list[torch.Tensor | None] = [ranked[:, j] for j in range(min(n_target_classes, num_classes - 1))]
    else:
        targets = [None]
    loss_fn = _LOSS_FNS[loss]
    gen = torch_generator(seed, x.device)
    best = x.clone()
    best_loss = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    done = clean_logits.argmax(dim=1) != y  # already adversarial at the clean point
    for target in targets:
        for _ in range(restarts):
            active = torch.nonzero(~done).squeeze(1)
            if active.numel() == 0:
                return best.contiguous()
            points, fooled, run_loss = _apgd_run(
                module, x[active], y[active], None if target is None else target[active],
                eps=eps, norm=norm, steps=steps, rho=rho, loss_fn=loss_fn, gen=gen)
            take = fooled | (run_loss > best_loss[active])
            best[active[take]] = points[take]
            best_loss[active] = torch.maximum(best_loss[active], run_loss)
            done[active] = fooled
    return best.contiguous()
