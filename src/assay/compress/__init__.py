"""Compression: variants (quantization, fp16, pruning) and the damage audit; the latency, FLOPs and energy
harness lives in :mod:`assay.profiling`.

The package is callable: ``assay.compress(model, data, ...)`` is the public facade
(:func:`assay.compress.run.compress`, its parameters validated), so the name works both as the function and as this
package's import path.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from assay._validation import validated_call
        from assay.compress.run import compress

        return validated_call(compress, *args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
