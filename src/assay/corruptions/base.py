"""What every corruption shares: its description, the severity range, and the determinism contract.

Determinism contract: the randomness that corrupts sample ``i`` derives only from
``(seed, corruption name, severity, index[i])``, never from the batch it arrives in, so corrupting the
whole set at once or in any batches (with the matching ``index``) gives identical results. Two sources
honour it:

- :func:`sample_rng`: one ``numpy.random.Generator`` per sample (fine where each sample is handled in
  Python anyway, e.g. text);
- :func:`sample_uniforms` / :func:`sample_normals`: vectorized counter-based draws (SplitMix64 of the
  key and the position within the sample; Steele, Lea & Flood 2014), for cheap per-row work such as
  tabular corruptions where one Generator per row would dominate the cost.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass

import numpy as np

from assay.errors import UserError

__all__ = ["SEVERITIES", "CorruptionInfo", "check_index", "check_severity", "sample_normals", "sample_rng",
           "sample_uniforms", "unknown_corruption"]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

_U64 = 2**64


@dataclass(frozen=True)
class CorruptionInfo:
    """A corruption's name, family (e.g. ``noise``, ``blur``, ``character``, ``word``), whether it is a
    held-out type (reported apart from the standard mean, as ImageNet-C does), and what it does."""

    name: str
    family: str
    held_out: bool = False
    description: str = ""


def check_severity(severity: object) -> None:
    """Raise a UserError unless ``severity`` is an integer in 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise UserError(f"severity {severity!r} is not an integer in 1..5", where="severity",
                        fix="choose a severity 1, 2, 3, 4 or 5")


def unknown_corruption(name: object, known: dict[str, CorruptionInfo], modality: str) -> UserError:
    """The error for a corruption name that does not exist, listing the valid ones."""
    return UserError(f"unknown {modality} corruption {name!r}", where="corruption name",
                     fix=f"choose one of: {', '.join(known)}")


def check_index(index: np.ndarray | None, n: int) -> np.ndarray:
    """``index`` (one non-negative integer per sample, default ``0..n-1``) as int64."""
    if index is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(index)
    if arr.shape != (n,) or not (np.issubdtype(arr.dtype, np.integer) or (arr.size == 0)):
        raise UserError(f"index must be a 1-D integer array with one entry per sample ({n}), got "
                        f"dtype {arr.dtype} and shape {arr.shape}", where="index",
                        fix="pass the samples' positions in the whole evaluation set, e.g. np.arange(start, stop)")
    if arr.size and arr.min() < 0:
        raise UserError("index has negative entries", where="index", fix="pass non-negative sample positions")
    return arr.astype(np.int64, copy=False)


def _seed_u64(seed: object) -> int:
    try:
        return operator.index(seed) % _U64  # type: ignore[arg-type]
    except TypeError:
        raise UserError(f"seed {seed!r} is not an integer", where="seed", fix="pass an integer seed, e.g. 0") from None


def _name_key(name: str) -> int:
    """A stable 64-bit key for a corruption name (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def sample_rng(seed: int, name: str, severity: int, index: int) -> np.random.Generator:
    """The generator for one sample: a function of ``(seed, name, severity, index)`` only."""
    entropy = [_seed_u64(seed), _name_key(name), int(severity), int(index)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (Steele, Lea & Flood 2014): a bijective 64-bit mix with full avalanche."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _sample_keys(seed: int, name: str, severity: int, index: np.ndarray) -> np.ndarray:
    base = _splitmix64(np.array([_seed_u64(seed) ^ _name_key(name)], dtype=np.uint64))
    base = _splitmix64(base + np.uint64(int(severity) * int(_GOLDEN) % _U64))
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    return _splitmix64(base ^ _splitmix64(idx + _GOLDEN))


def sample_uniforms(seed: int, name: str, severity: int, index: np.ndarray, size: int, *,
                    stream: int = 0) -> np.ndarray:
    """Uniform draws in the open interval (0, 1), shape ``(len(index), size)``; row ``i`` depends only on
    ``(seed, name, severity, index[i], stream)``. Different ``stream`` values give independent draws."""
    keys = _sample_keys(seed, name, severity, index)[:, None]
    counter = (np.arange(size, dtype=np.uint64) + np.uint64(1) + np.uint64(stream) * np.uint64(2**40))[None, :]
    with np.errstate(over="ignore"):
        bits = _splitmix64(keys + counter * _GOLDEN)
    # Top 53 bits -> a double in [0, 1); the half-step offset keeps it strictly inside (0, 1).
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2**53)


def sample_normals(seed: int, name: str, severity: int, index: np.ndarray, size: int, *,
                   stream: int = 0) -> np.ndarray:
    """Standard normal draws, shape ``(len(index), size)``, by the Box-Muller transform of two uniform
    streams; same dependence as :func:`sample_uniforms`."""
    u1 = sample_uniforms(seed, name, severity, index, size, stream=2 * stream)
    u2 = sample_uniforms(seed, name, severity, index, size, stream=2 * stream + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
