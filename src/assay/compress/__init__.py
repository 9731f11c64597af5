"""Compression: variants (quantization, fp16, pruning) and the damage audit; the latency, FLOPs and energy
harness lives in :mod:`assay.profiling`.

The package is callable: ``assay.compress(model, data, ...)`` is the public facade
(:func:`assay.compress.run.compress`, its parameters validated; data may be arrays in memory, the model must be
a file or factory spec because the variants are rebuilt from it), so the name works both as the function and as this
package's import path.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from assay.compress.run import compress
        from assay.evaluation.inputs import call_with_in_memory_inputs

        return call_with_in_memory_inputs(compress, *args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
