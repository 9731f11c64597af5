"""Model-file scan: Assay's static pickle scan vs picklescan (the baseline), and what the scan adds to a load.

Files (written to a temporary folder before any clock starts):

- ``big``: one state dict of few large tensors (``--big-mb`` MB of float32 in 8 tensors): the pickle is tiny and
  the storages are large, so a scan that reads only the pickles should not grow with the file;
- ``many``: a state dict of ``--many`` small tensors (a deep network's worth of entries): the pickle itself is large;
- ``checkpoint``: ``many`` plus an SGD optimizer state, saved in the legacy (non-zip) ``torch.save`` format.

For each file: the best of ``--repeat`` wall times of ``assay.security.scan_model`` (sha256 included),
``assay.models.pickle_scan.scan_file`` (the pickle scan alone, which the loaders run), ``picklescan``'s
``scan_file_path``, and ``torch.load(weights_only=True)`` (the load the loaders' scan comes before). Ratios are
against picklescan and against the load, measured in the same run.

    .venv/bin/python bench/bench_scan.py [--big-mb 256] [--many 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=int, default=256)
    parser.add_argument("--many", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch
    from picklescan.scanner import scan_file_path

    from assay.models.pickle_scan import scan_file
    from assay.security import scan_model

    with tempfile.TemporaryDirectory() as folder:
        d = Path(folder)
        per_tensor = args.big_mb * 2**20 // 4 // 8
        files = {"big": d / "big.pt", "many": d / "many.pt", "checkpoint": d / "checkpoint.pt"}
        torch.save({f"layer{i}.weight": torch.randn(per_tensor) for i in range(8)}, files["big"])
        many = {f"block{i}.conv.weight": torch.randn(16, 16) for i in range(args.many)}
        torch.save(many, files["many"])
        params = [torch.nn.Parameter(t) for t in list(many.values())[:500]]
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        sum(p.sum() for p in params).backward()  # type: ignore[union-attr]
        opt.step()
        torch.save({"model": many, "optimizer": opt.state_dict(), "epoch": 3}, files["checkpoint"],
                   _use_new_zipfile_serialization=False)
        print(f"{'file':<11} {'MB':>7} {'scan_model':>11} {'scan_file':>10} {'picklescan':>11} {'torch.load':>11} "
              f"{'vs picklescan':>14} {'scan/load':>10} verdict")
        for name, path in files.items():
            verdict = scan_model(path).verdict
            t_model = _best(lambda p=path: scan_model(p), args.repeat)
            t_file = _best(lambda p=path: scan_file(p), args.repeat)
            t_ps = _best(lambda p=path: scan_file_path(str(p)), args.repeat)
            t_load = _best(lambda p=path: torch.load(p, weights_only=True), args.repeat)
            print(f"{name:<11} {path.stat().st_size / 2**20:7.1f} {t_model:10.3f}s {t_file:9.3f}s {t_ps:10.3f}s "
                  f"{t_load:10.3f}s {t_file / t_ps:13.2f}x {t_file / t_load:9.2f}x {verdict}")


if __name__ == "__main__":
    main()
