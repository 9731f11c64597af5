"""Runs the ``imagecorruptions`` package (bethgelab, the reference) for bench_corruptions.py.

Standalone on purpose: it runs under *another* Python environment (one with imagecorruptions,
scikit-image, opencv-python-headless and scipy; see bench_corruptions.py), never imports assay, and
prints one JSON object per corruption on stdout.

imagecorruptions 1.1.2 (the current release) predates scikit-image 0.19, which removed the
``multichannel=`` argument of ``skimage.filters.gaussian``; we translate it to ``channel_axis=-1`` before
importing the package (the computation is the same). Nothing else is changed.

Threads: the caller sets ``OMP_NUM_THREADS`` and friends in the environment; OpenCV keeps its own pool,
so ``ASSAY_BENCH_THREADS=N`` (set by ``bench_corruptions.py --threads N``) is passed to
``cv2.setNumThreads(N)``.

usage: python _corruptions_reference.py time IMAGES.npy BUDGET_S NAME [NAME ...]
       python _corruptions_reference.py apply IMAGES.npy OUT.npz NAME [NAME ...]
IMAGES.npy: float32 (N, 3, H, W) in [0, 1] for ``time`` (each image is converted to uint8 HWC, corrupted
and converted back inside the timed loop: the task Assay's function does), uint8 (N, H, W, 3) for ``apply``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _shim() -> None:
    import skimage.filters

    original = skimage.filters.gaussian

    def gaussian(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return original(image, *args, **kwargs)

    skimage.filters.gaussian = gaussian


def _limit_threads() -> None:
    threads = os.environ.get("ASSAY_BENCH_THREADS")
    if threads:
        import cv2

        cv2.setNumThreads(int(threads))


def main(argv: list[str]) -> int:
    import numpy as np

    _limit_threads()
    _shim()
    from imagecorruptions import corrupt

    mode, path = argv[0], argv[1]
    images = np.load(path, allow_pickle=False)
    if mode == "time":
        budget = float(argv[2])
        for name in argv[3:]:
            done, start = 0, time.perf_counter()
            try:
                # Cycle through the images and severities 1..5 until the budget is spent (at least one image).
                while True:
                    image = np.rint(images[done % len(images)].transpose(1, 2, 0) * 255).astype(np.uint8)
                    out = corrupt(image, severity=done % 5 + 1, corruption_name=name)
                    out = out.transpose(2, 0, 1).astype(np.float32) / 255
                    done += 1
                    if time.perf_counter() - start > budget or done >= 5 * len(images):
                        break
                elapsed = time.perf_counter() - start
                print(json.dumps({"name": name, "images": done, "seconds": elapsed}), flush=True)
            except Exception as exc:  # reported, not fatal: the table says "could not run"
                last = traceback.extract_tb(exc.__traceback__)[-1]
                print(json.dumps({"name": name, "error": f"{type(exc).__name__}: {exc} "
                                                          f"({last.name}, line {last.lineno})"}), flush=True)
        return 0
    out = {}
    for name in argv[3:]:
        for severity in range(1, 6):
            np.random.seed(severity)
            out[f"{name}:{severity}"] = np.stack([corrupt(im, severity=severity, corruption_name=name)
                                                  for im in images])
    np.savez(argv[2], **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
