"""How much memory a loaded data set may take, checked *before* anything is allocated.

A hostile or mistaken input can declare far more data than the machine holds: an NPZ header with shape
``(10**10, 3, 224, 224)``, ``--image-size 100000``, a Parquet footer claiming 10**12 rows. Allocating it
raises ``MemoryError`` deep inside NumPy (an internal error, exit 1) or gets the process killed. Loaders
therefore compute the bytes the loaded data set will need from headers alone and call
:func:`require_fits`, which refuses anything above :func:`memory_limit` with a ``DataError`` (or the
error class the caller names, e.g. ``OptionError`` for ``--image-size``) that names both numbers.

The limit is half of the machine's physical memory — or of the container's cgroup memory limit when that
is lower — because an evaluation needs about as much again for views (corruptions, attacks) and outputs.
The environment variable ``ASSAY_MAX_DATA_BYTES`` (a byte count, optionally with a K/M/G/T suffix in
powers of 1024, e.g. ``48G``) replaces it, for a user who knows the data fits.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from assay.errors import DataError, OptionError, UserError

__all__ = ["MEMORY_FRACTION", "MEMORY_LIMIT_ENV", "format_bytes", "machine_memory", "memory_limit", "require_fits"]

MEMORY_LIMIT_ENV = "ASSAY_MAX_DATA_BYTES"
MEMORY_FRACTION = 0.5
_SUFFIXES = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_CGROUP_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def format_bytes(n: int | float) -> str:
    """A byte count for people: exact below 1 KiB, else three significant digits in binary units."""
    n = float(n)
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        n /= 1024
        if n < 1024 or unit == "EiB":
            return f"{n:.3g} {unit}"
    raise AssertionError("unreachable")


def machine_memory() -> int | None:
    """Physical memory in bytes, lowered to the cgroup (container) limit if one is set; None if unknown."""
    known: list[int] = []
    with contextlib.suppress(AttributeError, ValueError, OSError):  # not POSIX (Windows), or unsupported names
        known.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for file in _CGROUP_LIMIT_FILES:
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            known.append(int(text))  # v1 reports "no limit" as a huge number, which min() then ignores
    known = [k for k in known if k > 0]
    return min(known) if known else None


def memory_limit() -> tuple[int | None, str]:
    """The most bytes a loaded data set may take, and where that number comes from (for messages).

    ``None`` when neither ``ASSAY_MAX_DATA_BYTES`` is set nor the machine's memory can be read.
    """
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if text:
        return _parse_bytes(text), f"set by {MEMORY_LIMIT_ENV}"
    total = machine_memory()
    if total is None:
        return None, "unknown"
    return int(total * MEMORY_FRACTION), f"half of this machine's {format_bytes(total)} of memory"


def require_fits(
    needed: int,
    *,
    what: str,
    where: str,
    fix: str,
    error: type[UserError] = DataError,
) -> None:
    """Raise ``error`` when ``needed`` bytes exceed :func:`memory_limit`; ``what`` names what needs them."""
    limit, source = memory_limit()
    if limit is None or needed <= limit:
        return
    exact = "" if needed < 1024 else f" ({needed:,} bytes)"
    raise error(
        f"{what} needs {format_bytes(needed)}{exact} of memory, more than the limit of "
        f"{format_bytes(limit)} ({source})",
        where=where,
        fix=f"{fix}; if the machine really has the memory, raise the limit with the environment variable "
        f"{MEMORY_LIMIT_ENV}=<bytes> (e.g. {MEMORY_LIMIT_ENV}=64G)",
    )


def _parse_bytes(text: str) -> int:
    number, suffix = text, ""
    if text[-1:].isalpha():
        number, suffix = text[:-1], text[-1:].upper()
        if suffix == "B" and number[-1:].isalpha():  # "64GB"
            number, suffix = number[:-1], number[-1:].upper()
    try:
        value = float(number) * _SUFFIXES[suffix]
    except (KeyError, ValueError):
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise OptionError(
            f"{MEMORY_LIMIT_ENV}={text!r} is not a positive byte count",
            where=f"environment variable {MEMORY_LIMIT_ENV}",
            fix=f"give bytes, optionally with a K/M/G/T suffix (powers of 1024), e.g. {MEMORY_LIMIT_ENV}=64G, "
            "or unset it to use half of the machine's memory",
        )
    return int(value)
