"""Plan the perturbed views a run needs (corruptions, adversarial attacks) and the facts the
robustness checks report about how they were run (sanity checks of the threat model).

Forward passes stay in the engine: this module only builds views and, for the gradient sanity check,
takes one input gradient on a handful of samples.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from assay.data.dataset import Dataset
from assay.engine.cache import ViewOutput
from assay.engine.robust_views import AdversarialView, AttackSpec, CorruptionView, attack_runner, logit_module
from assay.engine.views import View
from assay.errors import UserError
from assay.models.base import Model

__all__ = [
    "ATTACK_PRESETS",
    "MAX_OPTION_CHARS",
    "SUITES",
    "adversarial_views",
    "attack_specs",
    "available_corruptions",
    "corruption_views",
    "logit_module",
    "parse_eps",
    "parse_severities",
]

#: What each ``--suite`` adds on top of performance + calibration.
SUITES: dict[str, dict[str, Any]] = {
    "quick": {"corruptions": None, "adversarial": None},
    "standard": {"corruptions": "standard", "adversarial": None},
    "full": {"corruptions": "all", "adversarial": "auto"},
}

ATTACK_PRESETS: dict[str, tuple[str, ...]] = {
    "quick": ("apgd-ce",),
    "standard": ("apgd-ce", "apgd-t", "square"),
    "blackbox": ("square",),
}

DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}


def apply_suite(suite: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Fill ``corruptions`` / ``adversarial`` from a suite where the caller did not set them."""
    if suite is None:
        return options
    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}", where="suite", fix=f"choose from {', '.join(SUITES)}")
    defaults = SUITES[suite]
    if not options.get("corruptions") and defaults["corruptions"]:
        options["corruptions"] = [defaults["corruptions"]]
    if options.get("adversarial") is None and defaults["adversarial"]:
        options["adversarial"] = defaults["adversarial"]
    return options


#: The longest --eps / --severities text accepted (a list of every budget anyone uses is far shorter).
MAX_OPTION_CHARS = 1000


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _bounded_ascii(text: str, option: str, fix: str) -> None:
    """Option text is parsed by int/Fraction, which also read non-ASCII digits: keep it short and ASCII."""
    if len(text) > MAX_OPTION_CHARS or not text.isascii():
        what = f"is {len(text):,} characters long" if len(text) > MAX_OPTION_CHARS else "has non-ASCII characters"
        raise UserError(f"{option} {_shown(text)} {what}", where=option.lstrip("-"), fix=fix)


def parse_eps(text: str | float | list[float]) -> list[float]:
    """``"8/255"``, ``"0.03"`` or a comma list of those -> sorted positive floats."""
    fix = "give a fraction or decimal, e.g. 8/255 or 0.031, or a comma list 2/255,4/255,8/255"
    if isinstance(text, (int, float)):
        items: list[Any] = [text]
    elif isinstance(text, list):
        items = text
    else:
        _bounded_ascii(str(text), "--eps", fix)
        items = [t.strip() for t in str(text).split(",") if t.strip()]
    values = []
    for item in items:
        try:
            value = float(Fraction(str(item)))
        except (ValueError, ZeroDivisionError, OverflowError):
            raise UserError(f"--eps {_shown(str(item))} is not a number in float range", where="eps", fix=fix) from None
        if not 0 < value <= 64:
            raise UserError(f"--eps {_shown(str(item))} must be positive (and at most 64)", where="eps",
                            fix="inputs live in [0, 1]: a typical L-inf budget is 8/255, a typical L2 budget 0.5")
        values.append(value)
    if not values:
        raise UserError("--eps is empty", where="eps", fix="give at least one budget, e.g. 8/255")
    return sorted(set(values))


def parse_severities(text: str) -> list[int]:
    """``"1-5"``, ``"3"`` or ``"1,3,5"`` -> sorted severities in 1..5 (each bound checked before a range is
    expanded, so ``1-1000000000000`` is an error, not a trillion-element set)."""
    fix = "use a range or list of 1..5, e.g. 1-5 or 1,3,5"
    text = str(text)
    _bounded_ascii(text, "--severities", fix)
    out: set[int] = set()
    try:
        for raw in text.split(","):
            part = raw.strip()
            bounds = [int(p) for p in part.split("-", 1)] if "-" in part else [int(part)] if part else []
            if any(not 1 <= b <= 5 for b in bounds):
                raise UserError(f"--severities {_shown(text)} must lie in 1..5", where="severities", fix=fix)
            out.update(range(bounds[0], bounds[-1] + 1) if bounds else ())
    except ValueError:
        raise UserError(f"--severities {_shown(text)} is not a list of severities", where="severities",
                        fix=fix) from None
    if not out:
        raise UserError(f"--severities {_shown(text)} selects no severity", where="severities", fix=fix)
    return sorted(out)


def available_corruptions(modality: str) -> dict[str, Any]:
    """Name -> CorruptionInfo of the corruptions defined for a modality."""
    from assay.corruptions import IMAGE_CORRUPTIONS, TABULAR_CORRUPTIONS, TEXT_CORRUPTIONS

    return {"image": IMAGE_CORRUPTIONS, "text": TEXT_CORRUPTIONS, "tabular": TABULAR_CORRUPTIONS}[modality]


def resolve_corruptions(selection: str | list[str] | None, modality: str) -> list[str]:
    """``all`` | ``standard`` (the 15 ImageNet-C types for images; all for other modalities) | names."""
    if not selection:
        return []
    known = available_corruptions(modality)
    if not known:
        raise UserError(f"no corruptions are defined for {modality} data", where="corruptions",
                        fix="drop --corruptions for this data")
    items = [selection] if isinstance(selection, str) else list(selection)
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if names == ["all"]:
        return list(known)
    if names == ["standard"]:
        return [name for name, info in known.items() if not info.held_out]
    unknown = [n for n in names if n not in known]
    if unknown:
        others = {m: list(available_corruptions(m)) for m in ("image", "text", "tabular") if m != modality}
        elsewhere = [f"{n!r} is a {m} corruption" for n in unknown for m, names_m in others.items() if n in names_m]
        raise UserError(
            f"unknown {modality} corruption(s) {unknown}" + (f" ({'; '.join(elsewhere)})" if elsewhere else ""),
            where="corruptions",
            fix=f"choose from: all, standard, {', '.join(known)}",
        )
    return names


def corruption_views(dataset: Dataset, names: list[str], severities: list[int], *, seed: int,
                     table: str) -> list[View]:
    return [CorruptionView(dataset, name, s, seed=seed, table=table) for name in names for s in severities]


ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-t", "square")


def parse_attacks(text: str | list[str]) -> list[str]:
    """``"pgd,square"`` -> validated attack names (for ``--attacks``, overriding a preset's list)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise UserError(f"unknown attack(s) {unknown or names}", where="attacks",
                        fix=f"choose from {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


def attack_specs(preset: str | list[str], eps: list[float], norm: str, *, steps: int, restarts: int, queries: int,
                 seed: int) -> list[AttackSpec]:
    """Specs for a preset name, or for an explicit list of attack names, at every eps."""
    names = ATTACK_PRESETS[preset] if isinstance(preset, str) else preset
    specs = []
    for e in eps:
        for attack in names:
            budget = queries if attack == "square" else steps
            specs.append(AttackSpec(attack=attack, eps=e, norm=norm, steps=budget,
                                    restarts=1 if attack == "square" else restarts, seed=seed))
    return specs


def adversarial_views(model: Model, dataset: Dataset, clean: ViewOutput, specs: list[AttackSpec],
                      batch_size: int) -> list[View]:
    """One view per attack spec, attacking the clean-correct samples."""
    if dataset.modality != "image":
        raise UserError(f"adversarial evaluation needs image inputs in [0, 1]; this data is {dataset.modality}",
                        where="adversarial", fix="drop --adversarial, or evaluate corruption robustness instead")
    if any(s.white_box for s in specs) and model.torch_module() is None:
        raise UserError(
            f"white-box attacks need gradients, and a {model.info.format} model has none in Assay",
            where="adversarial",
            fix="use --adversarial blackbox (Square attack, queries only), or evaluate the torch model "
                "(TorchScript, torch.export or factory + weights)",
        )
    assert dataset.y is not None
    correct = clean.logits.argmax(axis=1) == dataset.y
    return [AdversarialView(spec, attack_runner(model, spec), dataset.y, correct, batch_size) for spec in specs]


def adversarial_facts(model: Model, dataset: Dataset, clean: ViewOutput, max_samples: int = 32) -> dict[str, Any]:
    """Threat-model sanity facts: eval mode, input range, input-gradient magnitude on a few samples."""
    x = np.asarray(dataset.x)
    facts: dict[str, Any] = {"input_min": float(x.min()), "input_max": float(x.max()),
                             "outputs": model.info.outputs}
    module = model.torch_module()
    if module is None:
        facts["white_box"] = False
        return facts
    import torch

    facts["white_box"] = True
    facts["training_modules"] = [name or "<root>" for name, m in module.named_modules() if m.training][:10]
    assert dataset.y is not None
    pick = np.flatnonzero(clean.logits.argmax(1) == dataset.y)[:max_samples]
    if pick.size:
        xt = torch.from_numpy(np.ascontiguousarray(x[pick], dtype=np.float32)).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(logit_module(model)(xt), torch.from_numpy(dataset.y[pick]))
        (grad,) = torch.autograd.grad(loss, xt)
        per_sample = grad.abs().flatten(1).sum(1).numpy()
        facts["gradient_l1_mean"] = float(per_sample.mean())
        facts["gradient_zero_fraction"] = float((per_sample == 0).mean())
        facts["gradient_samples"] = int(pick.size)
    return facts
