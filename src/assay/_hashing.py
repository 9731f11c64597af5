"""Content hashes of files (layer 1: the model loaders, the output rules, the registry and the card all name
files by the sha256 of their bytes, and read them the same way: in 1 MiB chunks, never whole)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str], *more: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, followed by the bytes of ``more`` files (e.g. ONNX external data)."""
    digest = hashlib.sha256()
    for name in (path, *more):
        with open(name, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
