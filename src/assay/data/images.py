"""Load an image-classification folder laid out as ``root/<class>/<image>``.

The layout torchvision's ``ImageFolder`` uses: each subdirectory of ``root`` is a class, and class
indices follow the sorted subdirectory names (pass ``class_names`` to impose the model's order
instead). Images are read with Pillow, converted to ``"L"`` when every image is grayscale and to
``"RGB"`` otherwise (alpha is dropped), resized with bilinear interpolation when ``image_size`` is
given, and returned as float32 NCHW in [0, 1] — normalization belongs inside the model.
No EXIF rotation is applied. Hidden entries (names starting with ``.``) and non-image files are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from assay.data.dataset import Dataset
from assay.errors import UserError

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Read ``root/<class>/*.{png,jpg,jpeg,bmp,webp}`` into a labeled image Dataset.

    ``image_size``: an int (square) or ``(height, width)``; required only when images differ in size.
    ``class_names``: the class order to index labels by (default: sorted subdirectory names).
    ``ids`` are paths relative to ``root`` (``"cat/001.png"``); ``meta["path"]`` holds absolute paths.
    """
    root = Path(root)
    where = str(root)
    if not root.is_dir():
        raise UserError("no such directory", where=where, fix="give a folder laid out as ROOT/<class>/<image>")
    size = _target_size(image_size, where)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = _image_files(root)
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise UserError(
            f"no class subdirectories found{hint}",
            where=where,
            fix="put each class's images in its own subfolder: ROOT/<class>/<image>.png",
        )
    names = [p.name for p in class_dirs] if class_names is None else [str(c) for c in class_names]
    index_of = {class_name: i for i, class_name in enumerate(names)}
    unknown = [p.name for p in class_dirs if p.name not in index_of]
    if unknown:
        raise UserError(
            f"subfolders {unknown} are not among the given class names {names}",
            where=where,
            fix="rename the folders to the model's class names, or drop them",
        )

    files: list[Path] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        for file in _image_files(class_dir):
            files.append(file)
            labels.append(index_of[class_dir.name])
    if not files:
        raise UserError(
            f"the class folders {[p.name for p in class_dirs]} contain no images",
            where=where,
            fix=f"add images with one of the extensions {list(IMAGE_EXTENSIONS)}",
        )

    modes_and_sizes = [_probe(file) for file in files]
    mode = "L" if all(m in _GRAYSCALE_MODES for m, _ in modes_and_sizes) else "RGB"
    if size is None:
        sizes = sorted({(h, w) for _, (w, h) in modes_and_sizes})
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}" for h, w in sizes[:5]) + (" ..." if len(sizes) > 5 else "")
            raise UserError(
                f"the images differ in size ({len(sizes)} sizes, height x width: {shown})",
                where=where,
                fix="pass --image-size (image_size=) with the model's input size, e.g. --image-size 224",
            )
        size = sizes[0]

    height, width = size
    channels = 1 if mode == "L" else 3
    x = np.empty((len(files), channels, height, width), dtype=np.float32)
    for i, file in enumerate(files):
        x[i] = _read(file, mode, size)
    relative = np.array([file.relative_to(root).as_posix() for file in files])
    return Dataset(
        x=x,
        y=np.asarray(labels, dtype=np.int64),
        ids=relative,
        modality="image",
        name=name or root.resolve().name,
        source=where,
        class_names=names,
        meta=pd.DataFrame({"path": [str(file.resolve()) for file in files]}),
    )


def _target_size(image_size: int | tuple[int, int] | None, where: str) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise UserError(
            f"image_size must be a positive int or (height, width), got {image_size!r}",
            where=where,
            fix="pass e.g. --image-size 224",
        )
    return int(size[0]), int(size[1])


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _probe(file: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (width, height) from the header only."""
    try:
        with Image.open(file) as image:
            return image.mode, image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise _unreadable(file, exc) from exc


def _read(file: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image as a (C, H, W) float32 array in [0, 1]."""
    try:
        with Image.open(file) as image:
            image = image.convert(mode)
            if (image.height, image.width) != size:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _unreadable(file, exc) from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _unreadable(file: Path, exc: Exception) -> UserError:
    return UserError(
        f"cannot read image {file.name} ({exc})",
        where=str(file),
        fix="remove or re-save the file (it may be truncated or not an image)",
    )
