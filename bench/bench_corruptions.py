"""Image-corruption throughput (images/s) per type: Assay's ``corrupt_images`` against the
``imagecorruptions`` package (bethgelab 1.1.2, the usual reference) in the same run. Targets: >= 1.0x for
every type, >= 10x for glass blur.

Sizes: 32x32 (batch of 256) and 224x224 (batch of 16), RGB, synthetic natural-like images (gradients,
shapes, texture). Both sides run severities 1..5 with the ImageNet-C parameters (imagecorruptions has
only that table; ours is forced with ``table="imagenet"`` so the work is the same), and ours also with
the CIFAR table at 32x32 (what ``table="auto"`` picks there). Both do the same task, the one the engine
needs: float32 (C, H, W) images in [0, 1] in, the same out. Ours: whole batches, median of 3 runs after
one warm-up (the warm-up fills the per-size caches: frost textures, filter matrices). Reference: one
image at a time through ``imagecorruptions.corrupt`` (which takes uint8 HWC: the conversion to it and
back is timed with it), cycling through images and severities until a time budget is spent (at least
one image per type).

The reference runs in a separate Python environment, because it needs scikit-image, OpenCV and an old
SciPy API that Assay does not depend on. Set it up once (it is not a dependency of Assay):

    python3 -m venv /tmp/icvenv
    /tmp/icvenv/bin/pip install "numpy<2" scipy scikit-image opencv-python-headless pillow setuptools
    /tmp/icvenv/bin/pip install --no-deps imagecorruptions

and point ``ASSAY_IMAGECORRUPTIONS_PYTHON`` at its python (default ``/tmp/icvenv/bin/python``). Without
it the table says "could not run" for the reference. ``_corruptions_reference.py`` is the script that
runs there (it adapts one renamed scikit-image argument; see its docstring).

Threads: ``--threads N`` sets ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``NUMBA_NUM_THREADS`` before numpy, scipy or torch load (here and in the reference process, which also
calls ``cv2.setNumThreads(N)``); Assay's per-image thread pool follows ``torch.get_num_threads()``. Without
it both sides use their defaults (every core). ``--corruptions a,b`` and ``--sizes 224`` run a subset.

usage: python bench/bench_corruptions.py [--threads N] [--corruptions NAME,...] [--sizes 32,224]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Image-corruption throughput against imagecorruptions.")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both sides (OMP/MKL/OpenBLAS/numba, torch, OpenCV); default: all cores")
    parser.add_argument("--corruptions", default=None, help="comma-separated subset of corruption names")
    parser.add_argument("--sizes", default="32,224", help="comma-separated image sides out of 32 and 224")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else parse_args([])
if ARGS.threads is not None:  # before numpy / scipy / torch load their thread pools
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(ARGS.threads)

import numpy as np  # noqa: E402

from _common import machine, timed  # noqa: E402
from assay.corruptions import IMAGE_CORRUPTIONS, corrupt_images  # noqa: E402

HERE = Path(__file__).parent
BATCHES = {32: 256, 224: 16}  # side -> batch
REFERENCE_BUDGET_S = 3.0


def natural_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) float32 in [0, 1]: a colour gradient, a few soft-edged discs and bars, and
    smooth texture - enough structure that blurs, compressions and colour shifts have something to act on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        base = rng.uniform(0.2, 0.8, 3)[:, None, None] + rng.uniform(-0.3, 0.3, (3, 1, 1)) * (
            np.cos(rng.uniform(0, np.pi)) * xx + np.sin(rng.uniform(0, np.pi)) * yy)
        for _ in range(4):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3)
            edge = 1 / (1 + np.exp(-(r - np.hypot(yy - cy, xx - cx)) * size / 2))
            base = base * (1 - edge) + rng.uniform(0, 1, (3, 1, 1)) * edge
        bar = (np.abs(xx - rng.uniform(0.2, 0.8)) < 0.05).astype(float)
        base = base * (1 - bar) + rng.uniform(0, 1, (3, 1, 1)) * bar
        noise = rng.standard_normal((size + 8, size + 8))
        texture = sum(np.roll(np.roll(noise, a, 0), b, 1) for a in range(3) for b in range(3))[4:-4, 4:-4] / 9
        out[i] = np.clip(base + 0.04 * texture, 0, 1)
    return out


def ours(images: np.ndarray, name: str, table: str) -> float:
    """Images per second over severities 1..5."""
    def run() -> None:
        for severity in range(1, 6):
            corrupt_images(images, name, severity, table=table)

    run()  # warm-up: per-size caches
    seconds, _ = timed(run, repeats=3)
    return 5 * len(images) / seconds


def reference(images: np.ndarray, names: list[str]) -> dict[str, dict]:
    """name -> {"rate": img/s} or {"error": why} from the imagecorruptions environment."""
    python = os.environ.get("ASSAY_IMAGECORRUPTIONS_PYTHON", "/tmp/icvenv/bin/python")
    if not Path(python).exists():
        why = f"no Python with imagecorruptions at {python} (set ASSAY_IMAGECORRUPTIONS_PYTHON; see docstring)"
        return {name: {"error": why} for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        np.save(path, images)
        env = dict(os.environ)
        if ARGS.threads is not None:
            env["ASSAY_BENCH_THREADS"] = str(ARGS.threads)  # the reference calls cv2.setNumThreads with it
        proc = subprocess.run([python, str(HERE / "_corruptions_reference.py"), "time", str(path),
                               str(REFERENCE_BUDGET_S), *names], capture_output=True, text=True, env=env)
    results = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        results[row["name"]] = ({"error": row["error"]} if "error" in row
                                else {"rate": row["images"] / row["seconds"], "images": row["images"]})
    for name in names:
        if name not in results:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results[name] = {"error": f"reference process failed: {tail}"}
    return results


def main() -> int:
    import torch

    if ARGS.threads is not None:
        torch.set_num_threads(ARGS.threads)
    names = list(IMAGE_CORRUPTIONS)
    if ARGS.corruptions:
        names = [n for n in ARGS.corruptions.split(",") if n]
        unknown = sorted(set(names) - set(IMAGE_CORRUPTIONS))
        if unknown:
            print(f"unknown corruption(s) {unknown}; choose from {', '.join(IMAGE_CORRUPTIONS)}", file=sys.stderr)
            return 2
    sizes = [int(s) for s in ARGS.sizes.split(",") if s]
    if not sizes or set(sizes) - set(BATCHES):
        print(f"--sizes takes values out of {sorted(BATCHES)}", file=sys.stderr)
        return 2
    threads = (f"{ARGS.threads} thread(s) (--threads: {'/'.join(THREAD_VARIABLES)}, torch, cv2)"
               if ARGS.threads is not None else f"default threads (torch {torch.get_num_threads()})")
    print(f"# image corruptions, images/s over severities 1-5 (ImageNet-C parameters on both sides), {threads} "
          f"- {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    print("# ours: whole batch; reference: imagecorruptions 1.1.2, one image at a time (float CHW -> uint8 HWC "
          f"-> corrupt -> float CHW), {REFERENCE_BUDGET_S:.0f} s budget per type")
    rows, failures = {}, []
    for size in sizes:
        images = natural_images(BATCHES[size], size)
        theirs = reference(images, names)
        for name in names:
            row = rows.setdefault(name, {})
            row[f"ours{size}"] = ours(images, name, "imagenet")
            if size == 32:
                row["cifar32"] = ours(images, name, "cifar")
            row[f"ref{size}"] = theirs[name]
    header = f"{'corruption':18s}"
    if 32 in sizes:
        header += f" | {'32x32 ours':>10s} {'ref':>8s} {'ratio':>7s} {'(cifar)':>8s}"
    if 224 in sizes:
        header += f" | {'224x224 ours':>12s} {'ref':>8s} {'ratio':>7s}"
    print(header)
    print("-" * len(header))
    notes = []
    for name in names:
        row = rows[name]
        line = f"{name:18s}"
        for size in sizes:
            mine, ref = row[f"ours{size}"], row[f"ref{size}"]
            if "rate" in ref:
                ratio = mine / ref["rate"]
                target = 10.0 if name == "glass_blur" else 1.0
                if ratio < target:
                    failures.append(f"{name} {size}x{size}: {ratio:.2f}x < {target:.0f}x")
                cells = (f"{mine:.0f}", f"{ref['rate']:.3g}", f"{ratio:.1f}x")
                if ref["images"] < 5:
                    notes.append(f"reference {name} {size}x{size}: {ref['images']} image(s) in the budget")
            else:
                cells = (f"{mine:.0f}", "n/a", "n/a")
                notes.append(f"reference {name} {size}x{size} could not run: {ref['error']}")
            if size == 32:
                line += f" | {cells[0]:>10s} {cells[1]:>8s} {cells[2]:>7s} {row['cifar32']:8.0f}"
            else:
                line += f" | {cells[0]:>12s} {cells[1]:>8s} {cells[2]:>7s}"
        print(line)
    for note in notes:
        print(f"# {note}")
    print(f"# load average {os.getloadavg()[0]:.1f} at the end (other processes share the cores: with more "
          "runnable threads than cores, multi-threaded BLAS and OpenMP slow down sharply)")
    verdict = "met" if not failures else "MISSED: " + "; ".join(failures)
    print(f"targets (>= 1.0x every type, >= 10x glass_blur): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
