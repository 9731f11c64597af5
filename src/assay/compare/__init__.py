"""Comparing models: the paired regression gate (``gate``), its policies (``policy``), model selection under
constraints (``select``) and the library entry points (``run``).

The package is callable: ``assay.compare(baseline, candidate, ...)`` is the public facade
(:func:`assay.compare.run.compare`, its parameters validated), so the name works both as the function and as this
package's import path.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from assay._validation import validated_call
        from assay.compare.run import compare

        return validated_call(compare, *args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
