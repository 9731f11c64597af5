"""On-disk cache of model outputs, keyed by model hash + data fingerprint + view spec."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["OutputCache", "ViewOutput", "cache_key", "default_cache_dir"]

# Bump when the meaning of cached arrays changes.
CACHE_FORMAT = "1"


@dataclass
class ViewOutput:
    """Outputs of the model on one view: logits (N, C), features (N, D) or None, and a few of the
    view's model inputs (``examples`` at rows ``example_index``) for reports to show."""

    logits: np.ndarray
    features: np.ndarray | None
    examples: np.ndarray | None = None
    example_index: np.ndarray | None = None


def default_cache_dir() -> Path:
    """``$ASSAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/assay``, else ``~/.cache/assay``."""
    if env := os.environ.get("ASSAY_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assay"


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in (CACHE_FORMAT, *parts):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


class OutputCache:
    """A directory of ``<key>.npz`` files; writes are atomic (temp file + rename)."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npz"

    def get(self, key: str) -> ViewOutput | None:
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                optional = {k: z[k] if k in z.files else None for k in ("features", "examples", "example_index")}
                return ViewOutput(logits=z["logits"], **optional)
        except (OSError, ValueError, KeyError):
            return None  # a corrupt entry is a miss; it is overwritten below

    def put(self, key: str, output: ViewOutput) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"logits": output.logits}
        for name in ("features", "examples", "example_index"):
            value = getattr(output, name)
            if value is not None:
                arrays[name] = value.astype(str) if value.dtype == object else value
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
