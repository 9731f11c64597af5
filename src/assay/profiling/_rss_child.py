"""``python -m assay.profiling._rss_child SPEC_JSON BATCH_NPY``: the fresh process that measures peak memory.

It imports numpy, reads the batch (``np.load``, no pickle) and notes its peak RSS (the baseline), then
loads the model from its :class:`~assay.models.spec.ModelSpec` through the normal loader (the same
safety checks and no-unpickling guards as everywhere else; only the runtime the model needs is
imported), runs the batch once, and prints ``{"peak_rss_mb": ..., "baseline_rss_mb": ...}`` as one
JSON line. A bad spec or model is printed as ``Error: ...`` on stderr with exit code 2.

Peak RSS is ``VmHWM`` on Linux: ``ru_maxrss`` would keep the parent's peak across fork + exec.
Started by :func:`assay.profiling.memory.peak_rss_subprocess`; keep the imports above ``main`` minimal,
they are part of the baseline.
"""

from __future__ import annotations

import json
import sys

import numpy as np

MB = 2**20


def maxrss_mb() -> float | None:
    """Peak resident set size of this process in MB (2**20 bytes); None where the platform cannot say."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("Error: usage: python -m assay.profiling._rss_child SPEC_JSON BATCH_NPY", file=sys.stderr)
        return 2
    spec_json, batch_file = argv
    batch = np.load(batch_file, allow_pickle=False)
    baseline = maxrss_mb()

    from pydantic import ValidationError

    from assay.errors import UserError
    from assay.models.spec import ModelSpec

    try:
        model = ModelSpec.model_validate_json(spec_json).load()
        model.logits(batch)
    except ValidationError as exc:
        print(f"Error: not a model spec ({exc.error_count()} problem(s))", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"peak_rss_mb": maxrss_mb(), "baseline_rss_mb": baseline}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
