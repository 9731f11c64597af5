"""Deprecated: the latency harness and ``profile_model`` moved to :mod:`assay.profiling` (this path works for
one release and warns).

``assay.compress.latency.X`` -> :mod:`assay.profiling.latency` (harness), :mod:`assay.profiling.profile`
(``profile_model``, ``EfficiencyProfile``), :mod:`assay.profiling.memory` (peak RSS) or
:mod:`assay.stats.order` (order-statistic intervals).
"""

from __future__ import annotations

from typing import Any

from assay.compress._moved import moved_attribute

_MOVED = {
    "assay.profiling.latency": ("BatchLatency", "CI_METHOD", "LatencyProfile", "QUANTILES", "make_batch",
                                "measure_latency", "summarize_times"),
    "assay.profiling.profile": ("EfficiencyProfile", "profile_model"),
    "assay.profiling.memory": ("RSS_TIMEOUT_S", "peak_rss_subprocess"),
    "assay.stats.order": ("min_runs_for_upper_bound", "quantile_ci", "sample_quantile"),
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
