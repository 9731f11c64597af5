"""Registry throughput against MLflow's model registry, in one run (issue 13, "Measure").

    .venv/bin/python bench/bench_registry.py [--versions 1000] [--moves 10000] [--workdir DIR]

For each back-end: register ``--versions`` versions of one model, perform ``--moves`` alias moves of
``production`` (each a compare-and-swap on the holder, with its hash-chained audit row), then read the
history of that busy alias (median of 5). Assay runs on SQLite (the default, WAL) and on a throw-away
PostgreSQL server (tests/postgres.py's initdb/pg_ctl cluster); MLflow (``mlflow-skinny``) runs its
``SqlAlchemyStore`` model registry on a SQLite file, the store ``mlflow server --backend-store-uri
sqlite:///...`` uses, called in process as Assay is. Ratios are MLflow time / Assay time (> 1: Assay is
faster).

The operations are not the same work, and the output says so: an Assay ``register`` hashes and copies the
model file and its evidence bundle (~100 KB: evidence.json, predictions.npz, reference.npz, reports) into the
content-addressed store, checks the bundle against its manifest and the model's sha256, records the git commit
and appends an audit row; MLflow's ``create_model_version`` records a source URI. An Assay move is a
compare-and-swap plus an append-only move row plus an audit row; MLflow's ``set_registered_model_alias``
overwrites the alias and keeps no history (mlflow#2169), so "history of a busy alias" has no MLflow
counterpart: the nearest read, ``get_model_version_by_alias`` (current holder only), is timed instead.

Also timed: a promotion through the paired gate (``promote``: reads both stored bundles, paired bootstrap with
B=1000, stores comparison.json) on SQLite, and ``assay card`` on the demo model's bundle (when the card
command exists in this checkout).

Set-up (not timed): ``--versions`` distinct TorchScript linear models on 800 Gaussian-blob samples, each
evaluated into a real evidence bundle (kept in ``--workdir`` and reused by later runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from _common import machine  # noqa: E402


def make_versions(workdir: Path, n: int) -> list[tuple[Path, Path]]:
    """``n`` (model file, evidence bundle) pairs: distinct linear rules on the same blobs, each evaluated."""
    import numpy as np
    import torch

    from assay.api import run_evaluation, write_evaluation
    from assay.checks.base import EvaluateConfig
    from conftest import make_blobs_dataset

    workdir.mkdir(parents=True, exist_ok=True)
    done = workdir / "done.json"
    if done.exists() and json.loads(done.read_text()) >= n:
        return [(workdir / f"m{i}.pt", workdir / f"m{i}-bundle") for i in range(n)]
    ds, linear = make_blobs_dataset(n=800, num_classes=3, dim=4, seed=0, noise=2.0)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        model, bundle = workdir / f"m{i}.pt", workdir / f"m{i}-bundle"
        if not (bundle / "assay-manifest.json").exists():
            layer = torch.nn.Linear(4, 3)
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(linear.weight.T + rng.normal(0, 0.1, (3, 4)).astype(np.float32)))
                layer.bias.copy_(torch.from_numpy(linear.bias))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.trace(layer.eval(), torch.zeros(2, 4)), str(model))
            shutil.rmtree(bundle, ignore_errors=True)
            run = run_evaluation(str(model), ds, config=EvaluateConfig(n_bootstrap=100), cache_dir=None)
            write_evaluation(run, bundle)
        pairs.append((model, bundle))
        if (i + 1) % 100 == 0:
            print(f"  set-up: {i + 1}/{n} bundles", file=sys.stderr, flush=True)
    done.write_text(json.dumps(n))
    return pairs


def _move_targets(n_versions: int, n_moves: int) -> list[int]:
    """Versions the alias visits: 1, 2, ..., n, 1, 2, ... (never the current holder)."""
    return [i % n_versions + 1 for i in range(n_moves)]


def bench_assay(url: str, artifacts: Path, pairs: list[tuple[Path, Path]], n_moves: int) -> dict[str, float]:
    from assay.registry import open_registry

    reg = open_registry(url, artifacts=artifacts)
    try:
        t = time.perf_counter()
        for model, bundle in pairs:
            reg.register("clf", str(model), evidence=str(bundle))
        register_s = time.perf_counter() - t
        holder = None
        t = time.perf_counter()
        for version in _move_targets(len(pairs), n_moves):
            reg.move_alias("clf", "production", version, expected=holder, action="promote", reason="bench")
            holder = version
        moves_s = time.perf_counter() - t
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            history = reg.history("clf", "production")
            runs.append(time.perf_counter() - t)
        assert len(history) == n_moves
        t = time.perf_counter()
        report = reg.verify()
        verify_s = time.perf_counter() - t
        assert report.ok, report.problems[:3]
    finally:
        reg.close()
    return {"register_s": register_s, "moves_s": moves_s, "history_s": statistics.median(runs),
            "verify_s": verify_s}


def bench_mlflow(db: Path, pairs: list[tuple[Path, Path]], n_moves: int) -> dict[str, float] | str:
    try:
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
    except ImportError as exc:
        return f"MLflow is not installed ({exc}); `.venv/bin/python -m pip install mlflow-skinny`"
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    store = SqlAlchemyStore(f"sqlite:///{db}")
    store.create_registered_model("clf")
    t = time.perf_counter()
    for model, _ in pairs:
        store.create_model_version("clf", source=model.parent.as_uri(), run_id=None)
    register_s = time.perf_counter() - t
    t = time.perf_counter()
    for version in _move_targets(len(pairs), n_moves):
        store.set_registered_model_alias("clf", "production", str(version))
    moves_s = time.perf_counter() - t
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        store.get_model_version_by_alias("clf", "production")
        runs.append(time.perf_counter() - t)
    store.engine.dispose()
    return {"register_s": register_s, "moves_s": moves_s, "history_s": statistics.median(runs)}


def bench_promotions(pairs: list[tuple[Path, Path]], workdir: Path, n: int = 10) -> float:
    """Median seconds of a gated promotion (SQLite), each candidate against the previous holder."""
    from assay.registry import open_registry
    from assay.registry.promotion import promote

    folder = Path(tempfile.mkdtemp(dir=workdir))
    try:
        with open_registry(f"sqlite:///{folder / 'registry.db'}", artifacts=folder / "art") as reg:
            for model, bundle in pairs[: n + 1]:
                reg.register("clf", str(model), evidence=str(bundle))
            promote(reg, "clf", 1, "production")
            runs = []
            for version in range(2, n + 2):
                t = time.perf_counter()
                promote(reg, "clf", version, "production", force=True, reason="bench")  # the gate always runs
                runs.append(time.perf_counter() - t)
        return statistics.median(runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_card(workdir: Path) -> str:
    """`assay card` on the demo model's bundle (trained and evaluated once, kept in workdir)."""
    import assay.api

    if not hasattr(assay.api, "card"):
        return "assay card: not in this checkout"
    from assay.demo import run_demo

    bundle = workdir / "demo"
    if not (bundle / "evidence.json").exists():
        run_demo(bundle, progress=False, force=True)
    lines = []
    for label, out in (("built in memory (out=None)", None), ("written (MODEL_CARD.md, model_card.html, "
                                                                "crosswalk.json)", workdir / "card")):
        runs = []
        for _ in range(3):
            if out is not None:
                shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            try:
                assay.api.card([bundle], out=out)
            except Exception as exc:  # the card command is another engineer's work in progress
                lines.append(f"assay card on the demo bundle, {label}: failed ({type(exc).__name__}: {exc})")
                break
            runs.append(time.perf_counter() - t)
        else:
            lines.append(f"assay card on the demo bundle, {label}: {statistics.median(runs):.3f} s median of 3 "
                         f"(runs {', '.join(f'{r:.3f}' for r in runs)})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--moves", type=int, default=10000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "assay-bench-registry")
    parser.add_argument("--skip", default="", help="comma-separated: sqlite, postgresql, mlflow, promote, card")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    print(f"# registry: {args.versions:,} versions, {args.moves:,} alias moves, history of the busy alias — "
          f"{machine()}")
    t = time.perf_counter()
    pairs = make_versions(args.workdir / "versions", args.versions)
    print(f"set-up: {len(pairs):,} evaluated bundles in {time.perf_counter() - t:.0f} s (not timed below)")
    results: dict[str, dict[str, float] | str] = {}
    scratch = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        if "sqlite" not in skip:
            results["Assay SQLite"] = bench_assay(f"sqlite:///{scratch / 'assay.db'}", scratch / "art-sqlite", pairs,
                                                  args.moves)
        if "postgresql" not in skip:
            import postgres

            started = time.perf_counter()
            cluster = postgres._Cluster()
            print(f"PostgreSQL: throw-away cluster started in {time.perf_counter() - started:.1f} s")
            try:
                results["Assay PostgreSQL"] = bench_assay(cluster.create_database(), scratch / "art-pg", pairs,
                                                          args.moves)
            finally:
                cluster.stop()
        if "mlflow" not in skip:
            results["MLflow SQLite"] = bench_mlflow(scratch / "mlflow.db", pairs, args.moves)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"{'back-end':<18} {'register all':>13} {'per version':>12} {'all moves':>10} {'per move':>9} "
          f"{'history':>9} {'verify':>8}")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:<18} {r}")
            continue
        print(f"{name:<18} {r['register_s']:>11.1f} s {r['register_s'] / args.versions * 1e3:>9.1f} ms "
              f"{r['moves_s']:>8.1f} s {r['moves_s'] / args.moves * 1e3:>6.2f} ms {r['history_s'] * 1e3:>6.1f} ms "
              + (f"{r['verify_s']:>6.1f} s" if "verify_s" in r else "     n/a"))
    ml = results.get("MLflow SQLite")
    if isinstance(ml, dict):
        for name in ("Assay SQLite", "Assay PostgreSQL"):
            r = results.get(name)
            if isinstance(r, dict):
                print(f"ratio MLflow / {name}: register {ml['register_s'] / r['register_s']:.2f}x, "
                      f"alias moves {ml['moves_s'] / r['moves_s']:.2f}x  (> 1: Assay faster)")
        print(f"history of the busy alias ({args.moves:,} moves): MLflow keeps none (mlflow#2169); its current-holder "
              f"read get_model_version_by_alias takes {ml['history_s'] * 1e3:.1f} ms")
    if "promote" not in skip:
        print(f"gated promotion (paired gate B=1000 on 800 samples + comparison stored + CAS move), SQLite: "
              f"{bench_promotions(pairs, args.workdir):.3f} s median of 10")
    if "card" not in skip:
        print(bench_card(args.workdir))


if __name__ == "__main__":
    main()
