"""Comparing models: the paired regression gate (``gate``), its policies (``policy``), model selection under
constraints (``select``) and the library entry points (``run``).

The package is callable: ``assay.compare(baseline, candidate, ...)`` is the public facade
(:func:`assay.api.compare`), so the name works both as the function and as this package's import path.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from assay.api import compare

        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
