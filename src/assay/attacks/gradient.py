"""First-order attacks on the cross-entropy loss: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018).

Gradients are taken with respect to the inputs only (``torch.autograd.grad(loss, x_adv)``), so the
model's parameters are never touched and no ``.grad`` accumulates on them. The module is used as given:
the caller puts it in eval mode (the adversarial check reports a module left in training mode).

PGD stops attacking a sample as soon as one of its iterates is misclassified and keeps that iterate
("first successful adversarial example"); a fooled sample leaves the batch, so a step gets cheaper
as the attack succeeds. Samples that are never fooled end at the final
iterate of the restart with the highest loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from assay.attacks.common import (
    check_attack_inputs,
    check_positive_int,
    check_threat_model,
    input_layout,
    linf_box,
    per_sample_norm,
    project_l2,
    torch_generator,
)

__all__ = ["fgsm", "pgd"]

_L2_GRAD_FLOOR = 1e-10  # as torchattacks' PGDL2, so zero gradients give a zero step rather than NaN


def _ce_grad(module: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (detached) and the gradient of the summed cross-entropy with respect to ``x_adv`` only."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = module(x_adv)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
    return logits.detach(), grad


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction for a unit step: sign for L∞, the normalized gradient for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / (per_sample_norm(grad, "l2") + _L2_GRAD_FLOOR)


def fgsm(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf") -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps along the loss gradient
    (its sign for L∞, its direction for L2 — the "fast gradient method"), clipped to [0, 1]."""
    where = "fgsm"
    check_threat_model(eps, norm, where)
    check_attack_inputs(x, y, where)
    if len(x) == 0:
        return x.detach().clone()
    x = x.detach().contiguous(memory_format=input_layout(module, x))
    _, grad = _ce_grad(module, x, y.detach().to(torch.int64))
    with torch.no_grad():
        adv = x + eps * _direction(grad, norm)
        if norm == "linf":
            lo, hi = linf_box(x, eps)
            return torch.clamp(adv, lo, hi).contiguous()
        return project_l2(adv, x, eps).contiguous()


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """Uniform in the L∞ cube (Madry et al.); for L2 a random direction with radius U(0, eps), as torchattacks."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device).mul_(2 * eps).sub_(eps)
    else:
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
        radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen, dtype=x.dtype, device=x.device)
        noise = noise * (radius * eps / (per_sample_norm(noise, "l2") + 1e-12))
    return (x + noise).clamp_(0.0, 1.0)


def _pgd_run(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int,
             step_size: float, random_start: bool, gen: torch.Generator, final_check: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One PGD run. Returns (adversarial inputs, fooled mask, loss of the not-fooled ones or None).

    A sample's first misclassified iterate is kept and the sample leaves the batch. Without
    ``final_check`` the last iterate is not evaluated (one forward pass saved when nothing compares it)."""
    n = x.shape[0]
    adv = _random_start(x, eps, norm, gen) if random_start else x.clone()
    out = adv.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    idx = torch.arange(n, device=x.device)
    xa, ya = x, y
    lo, hi = linf_box(x, eps) if norm == "linf" else (None, None)
    for _ in range(steps):
        logits, grad = _ce_grad(module, adv, ya)
        wrong = logits.argmax(dim=1) != ya
        if bool(wrong.any()):
            out[idx[wrong]] = adv[wrong]
            fooled[idx[wrong]] = True
            keep = ~wrong
            idx, adv, grad, xa, ya = idx[keep], adv[keep], grad[keep], xa[keep], ya[keep]
            if lo is not None and hi is not None:
                lo, hi = lo[keep], hi[keep]
            if idx.numel() == 0:
                return out, fooled, None
        with torch.no_grad():
            adv = adv + step_size * _direction(grad, norm)
            adv = torch.clamp(adv, lo, hi) if norm == "linf" else project_l2(adv, xa, eps)
    out[idx] = adv
    if not final_check:
        return out, fooled, None
    with torch.no_grad():
        logits = module(adv)
        wrong = logits.argmax(dim=1) != ya
        fooled[idx[wrong]] = True
        loss = torch.full((n,), float("-inf"), dtype=logits.dtype, device=x.device)
        loss[idx] = F.cross_entropy(logits, ya, reduction="none")
    return out, fooled, loss


def pgd(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, restarts: int = 1, random_start: bool = True,
        seed: int = 0) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy (Madry et al. 2018), L∞ (sign steps) or L2
    (normalized-gradient steps), with ``restarts`` random starts.

    ``step_size`` defaults to 2.5 * eps / steps (Madry et al.). Per sample, the first misclassified
    iterate over all restarts is returned; a restart only attacks the samples still standing. Samples
    never fooled get the final iterate with the highest loss over restarts. With ``random_start=False``
    (then every restart is the same, so use one) this is torchattacks' ``PGD``/``PGDL2`` except that a
    sample stops at its first misclassified iterate instead of running on.
    """
    where = "pgd"
    check_threat_model(eps, norm, where)
    check_positive_int(steps, "steps", where)
    check_positive_int(restarts, "restarts", where)
    check_attack_inputs(x, y, where)
    step = 2.5 * eps / steps if step_size is None else float(step_size)
    y = y.detach().to(torch.int64)
    n = x.shape[0]
    if n == 0:
        return x.detach().clone()
    x = x.detach().contiguous(memory_format=input_layout(module, x))
    gen = torch_generator(seed, x.device)
    best = x.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        active = torch.nonzero(~done).squeeze(1)
        if active.numel() == 0:
            break
        adv, fooled, loss = _pgd_run(module, x[active], y[active], eps=eps, norm=norm, steps=steps, step_size=step,
                                     random_start=random_start, gen=gen, final_check=restarts > 1)
        if loss is None:  # one restart, or every sample fooled: each takes this run's result
            best[active] = adv
            done[active] = fooled
            continue
        better = fooled | (loss > best_loss[active])
        best[active[better]] = adv[better]
        best_loss[active] = torch.maximum(best_loss[active], loss)
        done[active] = fooled
    return best.contiguous()
