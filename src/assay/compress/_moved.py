"""PEP 562 shims for names that moved out of :mod:`assay.compress` (kept one release, with a warning)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import import_module
from typing import Any

__all__ = ["moved_attribute"]


def moved_attribute(old_module: str, name: str, moved: Mapping[str, tuple[str, ...]]) -> Any:
    """``name`` from the module it moved to, with a DeprecationWarning naming the new path; AttributeError
    for a name that never lived in ``old_module``."""
    for new_module, names in moved.items():
        if name in names:
            warnings.warn(f"{old_module}.{name} moved to {new_module}.{name}; the old path will be removed in the "
                          "next release", DeprecationWarning, stacklevel=3)
            return getattr(import_module(new_module), name)
    raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
