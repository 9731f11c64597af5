"""Shared helpers for benchmarks: timing with repeats, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, list[float]]:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs, and all runs."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), runs


def machine() -> str:
    from assay.environment import cpu_model_and_flags

    model, flags = cpu_model_and_flags()
    return f"{model or platform.processor()} ({os.cpu_count()} cores; {' '.join(flags)})"
