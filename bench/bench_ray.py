"""Scale-out: ``--suite standard`` (clean + the 15 ImageNet-C corruptions x 5 severities = 76 views) on an
image set of ``--images`` rows (default 10,000), run on the local backend (the model on every core, and on one
thread: the work of one worker, the baseline of Ray's own overhead), the processes backend with 2 workers and,
when ``"ray" in BACKENDS``, Ray with 1 and 2 workers on this machine (a local Ray started by the backend).
Ratios are against the local runs measured in the same run.

Data: the digits test split (540 images, 1x8x8) resampled to ``--images`` rows, each shifted by up to one pixel
and given Gaussian noise (sd 0.05, clipped to [0, 1]), seeded: distinct rows, so no corruption work is shared.
Model: the demo's DigitsCNN trained on digits:train (10 epochs: accuracy is not the point), exported to ONNX,
so a worker reloads it from its path. Every run writes a fresh output cache (driver-side cache writes count).

Every backend is wrapped in a meter that records, per shard: the worker's own compute (corruption + forward,
``ShardResult.transform_seconds + forward_seconds``), the bytes of the shard's inputs (what travels to a
worker) and of its result (logits, features, kept examples: what travels back), the time the driver waits on
the backend, and the time to the first result (start-up: Ray's init, actor start, model load). Driver-side
time = wall - waiting on the backend (load, planning, merging, cache writes, checks): the serial part.

The projection to N nodes (``c`` workers each, ``--workers-per-node``) is Amdahl's law with the run's own
structure, from the measured numbers:

    T(N) = S + L + max( sum over views of ceil(k_v / (N c)) * (t_shard + o),  B / bandwidth )

- S: driver-side time of the local run (serial: one driver merges, writes the cache, runs the checks);
- L: Ray's start-up (time to the first result minus one shard's compute), paid once;
- k_v: shards of view v; views run one after another (``run_views`` hands the backend one view at a time and
  the backend yields in shard order), so a view cannot use more than k_v workers and each view ends on its
  slowest round -- with batch 256 and 10,000 rows, more than 40 workers buy nothing;
- t_shard: mean per-shard compute at 1 thread (measured in Ray's 1-worker run, else the processes run);
  o: Ray's per-shard overhead at 1 worker, (wait on the backend - L - compute) / shards;
- B: bytes of shard inputs + results, all through the driver's link (``--bandwidth-gbit``, default 10 Gbit/s),
  assumed overlapped with compute (a lower bound on transfer, not added);
- assumed: identical nodes, no stragglers or retries, the model file on a shared filesystem (each worker loads
  it once; not counted per shard), the object store never spills.

Speed-ups in the projection are against the same model for one thread in the driver without Ray
(S + all shards x t_shard): on a shared machine the load moves between the runs, and the measured runs' ratios
move with it (their "compute s" column shows by how much); the per-shard means are the steadier numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from _common import machine
from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.data.dataset import Dataset
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.engine.backends import BACKENDS, Backend, LocalBackend, ProcessPoolBackend
from assay.engine.planning import apply_suite
from assay.models.export import export_onnx

if TYPE_CHECKING:
    from assay.engine.views import View
    from assay.engine.work import Shard, ShardResult
    from assay.evaluation import EvaluationRun
    from assay.models.base import Model

BATCH = 256


@dataclass
class Meter:
    """What one backend did over one evaluation run."""

    shards: int = 0
    compute: list[float] = field(default_factory=list)  # per shard, in the worker: corruption + forward
    bytes_in: int = 0  # shard inputs and per-row data, driver -> worker
    bytes_out: int = 0  # logits, features, kept examples, worker -> driver
    waiting: float = 0.0  # driver blocked on the backend
    first_result: float | None = None  # from the first run() call to its first result
    shards_per_view: list[int] = field(default_factory=list)


class MeteredBackend(Backend):
    """Delegates to ``inner`` and records a :class:`Meter` (the contract is unchanged: same results, in order)."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.name, self.meter = inner, inner.name, Meter()

    def run(self, model: Model, view: View, shards: Iterable[Shard]) -> Iterator[ShardResult]:
        meter = self.meter

        def counted() -> Iterator[Shard]:
            for shard in shards:
                meter.bytes_in += shard.x.nbytes + sum(v.nbytes for v in shard.rows.values())
                yield shard

        count = 0
        t = time.perf_counter()
        for result in self.inner.run(model, view, counted()):
            now = time.perf_counter()
            meter.waiting += now - t
            if meter.first_result is None:
                meter.first_result = now - t
            meter.shards += 1
            count += 1
            meter.compute.append(result.transform_seconds + result.forward_seconds)
            meter.bytes_out += result.logits.nbytes + sum(e.nbytes for e in result.examples.values())
            meter.bytes_out += 0 if result.features is None else result.features.nbytes
            yield result
            t = time.perf_counter()
        meter.shards_per_view.append(count)

    def close(self) -> None:
        self.inner.close()


def image_set(n: int, seed: int = 0) -> Dataset:
    """``n`` distinct 1x8x8 images: digits:test rows, shifted by -1..1 pixels each way, with noise (sd 0.05)."""
    test = load_data("digits:test")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(test), n)
    padded = np.pad(np.asarray(test.x, np.float32)[pick], ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, n), rng.integers(0, 3, n)
    x = np.empty((n, 1, 8, 8), np.float32)
    for a in range(3):
        for b in range(3):
            rows = np.flatnonzero((dy == a) & (dx == b))
            x[rows] = padded[rows, :, a:a + 8, b:b + 8]
    x = np.clip(x + rng.normal(0, 0.05, x.shape).astype(np.float32), 0, 1)
    assert test.y is not None
    return Dataset.from_arrays(x, test.y[pick], class_names=test.class_names, name=f"digits:test x{n} augmented")


@dataclass
class Measured:
    label: str
    wall: float
    meter: Meter
    run: EvaluationRun
    workers: int


def evaluate(label: str, backend: Backend, model_path: Path, data: Dataset, cache: Path,
             threads: int | None = None) -> Measured:
    """One ``--suite standard`` run on ``backend`` (``threads``: the local model's; workers use 1 each)."""
    metered = MeteredBackend(backend)
    config = EvaluateConfig(batch_size=BATCH, **apply_suite("standard", {}))
    t = time.perf_counter()
    try:
        run = run_evaluation(str(model_path), data, config=config, cache_dir=cache, backend=metered,
                             model_options={"threads": threads} if threads else None)
    finally:
        metered.close()
    wall = time.perf_counter() - t
    print(f"  {label}: {wall:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    return Measured(label, wall, metered.meter, run, int(getattr(backend, "workers", None) or 1))


def same_outputs(a: EvaluationRun, b: EvaluationRun) -> str:
    """How far ``b``'s outputs are from ``a``'s (logits; predictions) and whether the checks' sections agree."""
    diff = max(float(np.abs(a.outputs[k].logits - b.outputs[k].logits).max()) for k in a.outputs.views)
    agree = all(np.array_equal(a.outputs[k].logits.argmax(1), b.outputs[k].logits.argmax(1)) for k in a.outputs.views)
    sections = all(a.evidence.sections[k].model_dump() == b.evidence.sections[k].model_dump()
                   for k in a.evidence.sections)
    return (f"max |logit diff| {diff:.1e}, predictions {'identical' if agree else 'DIFFER'}, "
            f"check sections {'identical' if sections else 'differ'}")


def ray_costs(ray1: Measured) -> tuple[float, float]:
    """Ray's start-up (time to the first result minus that shard's compute) and its mean cost per shard beyond
    the shard's compute, from the 1-worker run (one worker: no compute overlaps another's)."""
    m = ray1.meter
    assert m.first_result is not None
    startup = max(0.0, m.first_result - m.compute[0])
    return startup, max(0.0, (m.waiting - startup - sum(m.compute)) / m.shards)


def project(local: Measured, unit: Measured, ray1: Measured | None, per_node: int, gbit: float) -> list[str]:
    """The projection table (see the module docstring for the model and its assumptions)."""
    serial = local.wall - local.meter.waiting
    t_shard = float(np.mean(unit.meter.compute))
    startup, overhead = ray_costs(ray1) if ray1 is not None else (0.0, 0.0)
    # The same cost model for one thread in the driver, without Ray: the baseline of the speed-ups (the measured
    # local runs carry the machine's load at the time they ran, which the per-shard mean averages over).
    modelled_local = serial + sum(unit.meter.shards_per_view) * t_shard
    moved = unit.meter.bytes_in + unit.meter.bytes_out
    transfer = moved / (gbit * 1e9 / 8)
    lines = [f"S (driver-side, serial) {serial:.1f} s; L (start-up) {startup:.1f} s; t_shard {t_shard * 1e3:.0f} ms; "
             f"o (Ray per shard) {overhead * 1e3:.0f} ms; B {moved / 1e6:.0f} MB -> {transfer:.2f} s "
             f"at {gbit:g} Gbit/s; shards per view {max(unit.meter.shards_per_view)}",
             f"modelled local run on one thread: {modelled_local:.1f} s",
             f"{'nodes':>5} {'workers':>7} {'projected s':>11} {'speed-up vs modelled local':>26}"]
    for nodes in (1, 2, 4, 8, 16, 32):
        workers = nodes * per_node
        rounds = sum(math.ceil(k / workers) for k in unit.meter.shards_per_view)
        total = serial + startup + max(rounds * (t_shard + overhead), transfer)
        lines.append(f"{nodes:>5} {workers:>7} {total:>11.1f} {modelled_local / total:>25.2f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="evaluation rows (default 10000)")
    parser.add_argument("--workers-per-node", type=int, default=2, help="projection: workers per node (default 2)")
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0, help="projection: driver link (default 10)")
    args = parser.parse_args(argv)

    train = load_data("digits:train")
    assert train.y is not None
    data = image_set(args.images)
    t = time.perf_counter()
    net = train_digits_cnn(train.x, train.y, epochs=10, progress=False)
    train_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "digits_cnn.onnx"
        export_onnx(net, torch.from_numpy(data.x[:2]), model_path)
        print(f"# --suite standard on {len(data):,} images 1x8x8 (digits:test resampled, shifted, noised), DigitsCNN "
              f"ONNX (trained {train_s:.1f} s), batch {BATCH}, a fresh output cache per run — {machine()}; "
              f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
        # (label, backend factory, local model threads): the default local run uses every core; "local, 1 thread"
        # does the work of one worker in the driver, the baseline of Ray's own overhead.
        plan: list[tuple[str, Any, int | None]] = [("local", LocalBackend, None), ("local, 1 thread", LocalBackend, 1),
                                                   ("processes, 2 workers", lambda: ProcessPoolBackend(2), None)]
        if "ray" in BACKENDS:
            ray_backend: Any = BACKENDS["ray"]
            plan += [(f"ray, {w} worker{'s' * (w > 1)}", lambda w=w: ray_backend(workers=w), None) for w in (1, 2)]
        else:
            print("# Ray: not measured (no 'ray' backend registered in this checkout)")
        runs = [evaluate(label, make(), model_path, data, Path(tmp) / f"cache{i}", threads)
                for i, (label, make, threads) in enumerate(plan)]
    local = runs[0]
    # compute s: the shards' own compute summed (what the load on the machine inflates); not compute s: wall time
    # minus the driver's part minus compute / workers (start-up, transfer, scheduling, idle workers at view ends).
    print(f"{'backend':<22} {'wall s':>7} {'vs local':>8} {'driver s':>8} {'start-up s':>10} {'compute s':>9} "
          f"{'not compute s':>13} {'shard ms (median, p90)':>22}")
    for r in runs:
        m = r.meter
        first = f"{m.first_result:.2f}" if m.first_result is not None else "-"
        rest = m.waiting - sum(m.compute) / r.workers
        print(f"{r.label:<22} {r.wall:>7.1f} {local.wall / r.wall:>7.2f}x {r.wall - m.waiting:>8.1f} {first:>10} "
              f"{sum(m.compute):>9.1f} {rest:>13.1f} {np.median(m.compute) * 1e3:>13.0f}, "
              f"{np.percentile(m.compute, 90) * 1e3:.0f}")
    m = local.meter
    print(f"per run: {m.shards} shards over {len(m.shards_per_view)} views; shard inputs {m.bytes_in / 1e6:.1f} MB "
          f"({m.bytes_in / m.shards / 1e3:.0f} kB each), results {m.bytes_out / 1e6:.1f} MB "
          f"({m.bytes_out / m.shards / 1e3:.0f} kB each)")
    for r in runs[1:]:
        print(f"{r.label} vs local: {same_outputs(local.run, r.run)}")
    ray1 = next((r for r in runs if r.label == "ray, 1 worker"), None)
    if ray1 is not None:
        one = runs[1]
        startup, overhead = ray_costs(ray1)
        print(f"Ray overhead at 1 worker: wall {ray1.wall / one.wall:.2f}x that of {one.label} ({ray1.wall:.1f} s vs "
              f"{one.wall:.1f} s), {ray1.wall / local.wall:.2f}x that of local: ratios that the machine's changing "
              f"load moves as much as Ray does (compare their compute s). Measured apart from the load: start-up "
              f"{startup:.1f} s + {overhead * 1e3:.1f} ms per shard beyond its compute "
              f"({startup + overhead * ray1.meter.shards:.1f} s in all)")
    unit = ray1 or runs[1]
    print(f"# projection to N nodes x {args.workers_per_node} workers (Amdahl; per-shard costs of the "
          f"{unit.label} run; assumptions in the module docstring)")
    print("\n".join(project(local, unit, ray1, args.workers_per_node, args.bandwidth_gbit)))
    print(f"# load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
