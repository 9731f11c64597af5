"""What machine and software a run used: recorded in every evidence bundle."""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

import numpy as np

from assay._version import __version__
from assay.evidence.schema import EnvironmentInfo

__all__ = ["cpu_model_and_flags", "environment_info"]

# ISA extensions that change inference speed (vector width, int8 dot products, fp16 arithmetic).
_INTERESTING_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "fphp", "sve",
)


@lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str | None, tuple[str, ...]]:
    """CPU model name and the inference-relevant ISA flags, from /proc/cpuinfo (Linux) or platform."""
    model: str | None = None
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and model is None:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or None
    return model, tuple(f for f in _INTERESTING_FLAGS if f in flags)


def _version(module: str) -> str | None:
    """The installed version of ``module`` without importing it (importing torch costs ~1 s); the loaded
    module's own ``__version__`` when it is already imported (the two agree for pip-installed packages)."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> EnvironmentInfo:
    model, flags = cpu_model_and_flags()
    return EnvironmentInfo(
        assay=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        numpy=np.__version__,
        torch=_version("torch"),
        onnxruntime=_version("onnxruntime"),
        cpu_model=model,
        cpu_count=os.cpu_count(),
        isa_flags=list(flags),
    )
