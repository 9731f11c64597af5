"""Energy per 1,000 inferences: measured with Intel RAPL when the counter is readable, else estimated.

RAPL (Running Average Power Limit) exposes the package energy counter of Intel and recent AMD CPUs at
``/sys/class/powercap/intel-rapl:0/energy_uj`` (microjoules, wrapping at ``max_energy_range_uj``). It
counts the whole package -- every core, idle ones and other processes included -- so it is an upper
bound for the model's share on a busy machine. Since Linux 5.10 the file is readable by root only
(CVE-2020-8694), so most runs fall back to the estimate.

The estimate is ``watts_per_core x busy cores x seconds per inference x 1000`` with a constant
``DEFAULT_WATTS_PER_CORE`` = 10 W: server CPUs draw about 4-7 W per core at TDP (EPYC 7763: 280 W / 64
cores; Xeon 8380: 270 W / 40), desktop parts 10-16 W (i7-12700: 180 W max turbo / 12 cores). It is a
labelled order-of-magnitude figure, not a measurement; compare variants with it only on the same machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_WATTS_PER_CORE",
    "RAPL_PATH",
    "EnergyEstimate",
    "energy_per_1000",
    "measure_energy",
    "rapl_available",
]

RAPL_PATH = Path("/sys/class/powercap/intel-rapl:0")
DEFAULT_WATTS_PER_CORE = 10.0


class EnergyEstimate(BaseModel):
    """Joules per 1,000 inferences and how they were obtained."""

    model_config = ConfigDict(extra="forbid")

    joules: float
    method: Literal["rapl", "tdp-estimate"]
    detail: str


def _read_uj(path: Path) -> int:
    return int((path / "energy_uj").read_text().strip())


def rapl_available(path: Path = RAPL_PATH) -> bool:
    """True when the RAPL package energy counter can be read (usually root only)."""
    try:
        _read_uj(Path(path))
    except (OSError, ValueError):
        return False
    return True


def _busy_cores(threads: int | None) -> int:
    cores = os.cpu_count() or 1
    return max(1, min(int(threads or cores), cores))


def energy_per_1000(seconds_per_inference: float, threads: int | None, *,
                    watts_per_core: float = DEFAULT_WATTS_PER_CORE) -> EnergyEstimate:
    """TDP-style estimate: ``watts_per_core x min(threads, cores) x seconds_per_inference x 1000`` joules."""
    if not seconds_per_inference >= 0:
        raise ValueError(f"seconds_per_inference must be non-negative, got {seconds_per_inference}")
    cores = _busy_cores(threads)
    joules = watts_per_core * cores * seconds_per_inference * 1000.0
    return EnergyEstimate(joules=joules, method="tdp-estimate", detail=(
        f"ESTIMATE, not measured: {watts_per_core:g} W per busy core x {cores} core(s) x "
        f"{seconds_per_inference * 1e3:.4g} ms per inference x 1000 (RAPL counter not readable; the per-core "
        "figure is a documented default, see assay.profiling.energy)"))


def measure_energy(run: Callable[[], object], n_inferences: int, threads: int | None, *,
                   min_seconds: float = 1.0, max_calls: int = 1_000_000,
                   seconds_per_inference: float | None = None, rapl_path: Path = RAPL_PATH,
                   watts_per_core: float = DEFAULT_WATTS_PER_CORE) -> EnergyEstimate:
    """Joules per 1,000 inferences over repeated ``run()`` calls, each doing ``n_inferences`` inferences.

    With RAPL readable: calls ``run`` until ``min_seconds`` have passed (at least once), and divides the
    package energy used by the inferences done. Otherwise: :func:`energy_per_1000` from
    ``seconds_per_inference`` when given (``run`` is then not called), else from the calls' timing.
    """
    if n_inferences < 1:
        raise ValueError(f"n_inferences must be at least 1, got {n_inferences}")
    rapl_path = Path(rapl_path)
    if not rapl_available(rapl_path):
        if seconds_per_inference is None:
            calls, elapsed = _repeat(run, min_seconds, max_calls)
            seconds_per_inference = elapsed / (calls * n_inferences)
        return energy_per_1000(seconds_per_inference, threads, watts_per_core=watts_per_core)
    try:
        wrap = int((rapl_path / "max_energy_range_uj").read_text().strip())
    except (OSError, ValueError):
        wrap = None
    start = _read_uj(rapl_path)
    calls, elapsed = _repeat(run, min_seconds, max_calls)
    end = _read_uj(rapl_path)
    used_uj = end - start
    if used_uj < 0 and wrap:
        used_uj += wrap  # the counter wrapped once (it wraps after ~ hours at full power; more is not detectable)
    joules = used_uj / 1e6 / (calls * n_inferences) * 1000.0
    return EnergyEstimate(joules=joules, method="rapl", detail=(
        f"measured: RAPL package counter ({rapl_path.name}) over {calls} call(s) x {n_inferences} inference(s) in "
        f"{elapsed:.3g} s; counts the whole CPU package (all cores, other processes), so it bounds the model's share "
        "from above"))


def _repeat(run: Callable[[], object], min_seconds: float, max_calls: int) -> tuple[int, float]:
    calls = 0
    start = time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or calls >= max_calls:
            return calls, elapsed
