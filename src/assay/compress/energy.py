"""Deprecated: energy per 1,000 inferences moved to :mod:`assay.profiling.energy` (this path works for one
release and warns)."""

from __future__ import annotations

from typing import Any

from assay.compress._moved import moved_attribute

_MOVED = {
    "assay.profiling.energy": ("DEFAULT_WATTS_PER_CORE", "RAPL_PATH", "EnergyEstimate", "energy_per_1000",
                               "measure_energy", "rapl_available"),
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
