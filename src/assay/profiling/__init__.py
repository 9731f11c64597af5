"""Profiling: what a model costs on this machine -- latency, FLOPs, parameters, size, peak memory, energy, cost.

Modules: ``latency`` (the timing harness with order-statistic CIs, and ``interleaved_latency`` for head-to-head
timings), ``flops`` (FLOP and parameter counts), ``memory`` (peak RSS of a fresh process that loads the model
from its spec), ``energy`` (RAPL, else a labelled estimate) and ``profile`` (``profile_model`` ->
``EfficiencyProfile``, all of the above). Used by ``evaluate`` (the efficiency check), ``profile``,
``compare``/``select`` (through the evidence) and ``compress``.

The names below are loaded on first use (PEP 562), so ``import assay.profiling`` costs nothing -- the
memory-measuring child process imports this package before it takes its baseline.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.profiling.energy import EnergyEstimate
    from assay.profiling.flops import FlopCount, count_flops, count_parameters
    from assay.profiling.latency import BatchLatency, LatencyProfile, interleaved_latency, measure_latency
    from assay.profiling.memory import peak_rss_subprocess
    from assay.profiling.profile import EfficiencyProfile, profile_model

_LAZY = {
    "BatchLatency": "assay.profiling.latency",
    "EfficiencyProfile": "assay.profiling.profile",
    "EnergyEstimate": "assay.profiling.energy",
    "FlopCount": "assay.profiling.flops",
    "LatencyProfile": "assay.profiling.latency",
    "count_flops": "assay.profiling.flops",
    "count_parameters": "assay.profiling.flops",
    "interleaved_latency": "assay.profiling.latency",
    "measure_latency": "assay.profiling.latency",
    "peak_rss_subprocess": "assay.profiling.memory",
    "profile_model": "assay.profiling.profile",
}

__all__ = [
    "BatchLatency",
    "EfficiencyProfile",
    "EnergyEstimate",
    "FlopCount",
    "LatencyProfile",
    "count_flops",
    "count_parameters",
    "interleaved_latency",
    "measure_latency",
    "peak_rss_subprocess",
    "profile_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'assay.profiling' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
