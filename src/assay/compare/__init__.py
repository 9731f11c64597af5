"""Comparing models: the paired regression gate (``gate``), its policies (``policy``), model selection under
constraints (``select``) and the library entry points (``run``).

The package is callable: ``assay.compare(baseline, candidate, ...)`` is the public facade
(:func:`assay.compare.run.compare`, its parameters validated; models and data may be objects in memory, as for
:func:`assay.evaluate`), so the name works both as the function and as this
package's import path.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from assay.compare.run import compare
        from assay.evaluation.inputs import call_with_in_memory_inputs

        return call_with_in_memory_inputs(compare, *args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
