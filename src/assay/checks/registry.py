"""The check registry: every trust dimension an evaluation can run, by name.

Registered explicitly (no discovery magic): one line per check, ``name -> "module:Class"``. A check's module is
imported when its settings model is first needed (validating a run configuration) or when it runs; check
modules keep heavy libraries (scipy.stats, scikit-learn, torch) out of their top level, so loading every
settings model stays cheap.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assay.checks.base import Check, CheckConfig

__all__ = ["CHECKS", "DEFAULT_CHECKS", "check_names", "config_models", "get_check", "option_owners"]

#: name -> "module:Class", in the order a run lists its sections.
CHECKS: dict[str, str] = {
    "performance": "assay.checks.performance:PerformanceCheck",
    "calibration": "assay.checks.calibration:CalibrationCheck",
    "efficiency": "assay.checks.efficiency:EfficiencyCheck",
    "corruption": "assay.checks.corruption:CorruptionCheck",
    "adversarial": "assay.checks.adversarial:AdversarialCheck",
    "label_free": "assay.checks.label_free_check:LabelFreeCheck",
    "ood": "assay.checks.ood:OODCheck",
    "slices": "assay.checks.slices:SlicesCheck",
    "fairness": "assay.checks.slices:FairnessCheck",
    "backdoor": "assay.checks.backdoor:BackdoorCheck",
    "privacy": "assay.checks.privacy:PrivacyCheck",
}

#: What ``assay evaluate`` runs when no ``checks`` are given (plus every check whose input is given).
DEFAULT_CHECKS: tuple[str, ...] = ("performance", "calibration")


def check_names() -> list[str]:
    return list(CHECKS)


@functools.cache
def get_check(name: str) -> Check:
    """The registered check ``name`` (one shared instance; checks hold no state)."""
    module, cls = CHECKS[name].split(":")
    check = getattr(importlib.import_module(module), cls)()
    if check.name != name:
        raise RuntimeError(f"registry entry {name!r} points at a check named {check.name!r}")
    return check


@functools.lru_cache(maxsize=1)
def config_models() -> dict[str, type[CheckConfig]]:
    """Check name -> its settings model."""
    return {name: type(get_check(name)).Config for name in CHECKS}


@functools.lru_cache(maxsize=1)
def option_owners() -> dict[str, str]:
    """Flat option name (``severities``) -> the check whose settings declare it; names are unique."""
    owners: dict[str, str] = {}
    for name, model in config_models().items():
        for option in model.model_fields:
            if option in owners:
                raise RuntimeError(f"option {option!r} is declared by both {owners[option]} and {name}")
            owners[option] = name
    return owners
