"""Load an image-classification folder laid out as ``root/<class>/<image>``.

The layout torchvision's ``ImageFolder`` uses: each subdirectory of ``root`` is a class, and class
indices follow the sorted subdirectory names (pass ``class_names`` to impose the model's order
instead; without it ``Dataset.notes`` records the order used). Images are read with Pillow and returned
as float32 NCHW in [0, 1] — normalization belongs inside the model. The data set is grayscale (1 channel)
when every image is, else RGB (3 channels; grayscale images are copied to the three channels, noted).

Pixel depth and modes, each scaled by its own range (never clipped to 8 bits first):

- 8-bit ``L``, ``RGB``; ``1`` (bilevel) -> 0 or 1; ``P`` (palette) -> its palette colours; ``CMYK`` ->
  RGB by Pillow's formula ``R = (255 - C)(255 - K) / 255`` (no colour profile; noted) — all divided by 255;
- 16-bit grayscale PNG (``I;16``, and ``I`` as older Pillow opens it) divided by 65535 (noted); mode ``I``
  values outside 0..65535 are refused;
- 32-bit float (``F``) taken as stored; values outside [0, 1] are kept and noted.
- Alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency) is dropped, not composited: the colour stored
  under a transparent pixel is kept, as PIL's ``convert("RGB")`` and torchvision's default loader do, so
  the data match what such a model was trained on. Noted, with the number of images concerned.

``image_size`` resizes with bilinear interpolation (8-bit images in 8 bits, as torchvision's ``Resize`` on
PIL images does; 16-bit and float images in float32). No EXIF rotation is applied. Hidden entries (names
starting with ``.``) and non-image files are skipped.

Hostile files: every image's size is read from its header first. An image with more pixels than
``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's decompression-bomb limit) is refused as a ``DataError``, and the
decoded data set (N x C x H x W x 4 bytes) must fit :func:`assay.data.limits.memory_limit` before
anything is decoded (``OptionError`` when ``image_size`` asked for the size).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from assay.data.dataset import Dataset, image_range_note, sorted_classes_note
from assay.data.limits import format_bytes, require_fits
from assay.errors import DataError, OptionError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IMAGE_EXTENSIONS", "image_to_array", "load_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Modes whose pixels are integers or floats wider than 8 bits, and the value that maps to 1.0.
_HIGH_DEPTH_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", *_HIGH_DEPTH_SCALE})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class _Probe:
    """What an image's header says: mode, size, and whether it carries alpha."""

    mode: str
    width: int
    height: int
    has_alpha: bool


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Read ``root/<class>/*.{png,jpg,jpeg,bmp,webp}`` into a labeled image Dataset.

    ``image_size``: an int (square) or ``(height, width)``; required only when images differ in size.
    ``class_names``: the class order to index labels by (default: sorted subdirectory names, noted).
    ``ids`` are paths relative to ``root`` (``"cat/001.png"``); ``meta["path"]`` holds absolute paths.
    """
    root = Path(root)
    where = str(root)
    if not root.is_dir():
        raise DataError("no such directory", where=where, fix="give a folder laid out as ROOT/<class>/<image>")
    size = _target_size(image_size, where)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = _image_files(root)
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(
            f"no class subdirectories found{hint}",
            where=where,
            fix="put each class's images in its own subfolder: ROOT/<class>/<image>.png",
        )
    names = [p.name for p in class_dirs] if class_names is None else [str(c) for c in class_names]
    index_of = {class_name: i for i, class_name in enumerate(names)}
    unknown = [p.name for p in class_dirs if p.name not in index_of]
    if unknown:
        raise DataError(
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
        raise DataError(
            f"the class folders {[p.name for p in class_dirs]} contain no images",
            where=where,
            fix=f"add images with one of the extensions {list(IMAGE_EXTENSIONS)}",
        )

    probes = [_probe(file) for file in files]
    rgb = not all(p.mode in _GRAYSCALE_MODES for p in probes)
    if size is None:
        sizes = sorted({(p.height, p.width) for p in probes})
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}" for h, w in sizes[:5]) + (" ..." if len(sizes) > 5 else "")
            raise DataError(
                f"the images differ in size ({len(sizes)} sizes, height x width: {shown})",
                where=where,
                fix="pass --image-size (image_size=) with the model's input size, e.g. --image-size 224",
            )
        size = sizes[0]

    height, width = size
    channels = 3 if rgb else 1
    _require_memory(len(files), channels, size, asked=image_size, where=where)
    try:
        x = np.empty((len(files), channels, height, width), dtype=np.float32)
    except MemoryError as exc:  # under the limit, but the machine has less free memory right now
        raise DataError(
            f"not enough free memory for {len(files)} images of {channels}x{height}x{width}",
            where=where,
            fix="free memory, pass a smaller --image-size, or evaluate fewer images",
        ) from exc
    for i, file in enumerate(files):
        x[i] = _read(file, rgb=rgb, size=size)

    relative = np.array([file.relative_to(root).as_posix() for file in files])
    notes = _conversion_notes(probes, relative.tolist(), rgb)
    range_note = image_range_note(x)  # only float (mode F) images can leave [0, 1]
    if range_note is not None:
        notes.append(range_note)
    if class_names is None:
        notes.insert(0, sorted_classes_note(names, "sorted folder names"))
    return Dataset(
        x=x,
        y=np.asarray(labels, dtype=np.int64),
        ids=relative,
        modality="image",
        name=name or root.resolve().name,
        source=where,
        class_names=names,
        meta=_path_column([str(file.resolve()) for file in files]),
        notes=notes,
    )


def image_to_array(image: Image.Image, *, rgb: bool, size: tuple[int, int] | None = None) -> np.ndarray:
    """One PIL image as a (C, H, W) float32 array, C = 3 if ``rgb`` else 1, scaled by its pixel depth
    (see the module docstring) and resized to ``size = (height, width)`` if given.

    Raises ValueError for integer pixels outside 0..65535 and for modes Pillow cannot convert.
    """
    if image.mode in _HIGH_DEPTH_SCALE:
        values = np.asarray(image, dtype=np.float32)
        if image.mode == "I":
            lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
            if lo < 0 or hi > 65535:
                raise ValueError(f"32-bit integer pixels range over [{lo:.0f}, {hi:.0f}], outside 16-bit 0..65535")
        values = values / np.float32(_HIGH_DEPTH_SCALE[image.mode])
        if size is not None and values.shape != size:
            resized = Image.fromarray(values).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            values = np.asarray(resized, dtype=np.float32)
        plane = values[None]
        return np.repeat(plane, 3, axis=0) if rgb else plane
    image = _eight_bit(image, "RGB" if rgb else "L")
    if size is not None and (image.height, image.width) != size:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _eight_bit(image: Image.Image, target: str) -> Image.Image:
    """Convert to ``L`` or ``RGB``, dropping alpha (transparent palettes and premultiplied modes go through
    RGBA first, which Pillow converts without warnings)."""
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("PA", "La", "RGBa"):
        image = image.convert("RGBA")
    return image.convert(target)


def _target_size(image_size: int | tuple[int, int] | None, where: str) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
        raise OptionError(
            f"image_size must be a positive int or (height, width), got {image_size!r}",
            where=where,
            fix="pass e.g. --image-size 224",
        )
    return int(size[0]), int(size[1])


def _require_memory(n: int, channels: int, size: tuple[int, int], *, asked: object, where: str) -> None:
    """Refuse before allocating when the decoded data set would not fit (N x C x H x W float32), or when
    ``image_size`` asks for images larger than Pillow's decompression-bomb limit allows us to decode."""
    height, width = size
    needed = n * channels * height * width * 4
    what = f"decoding {n} image(s) to {channels}x{height}x{width} float32"
    if asked is None:
        require_fits(
            needed,
            what=what,
            where=where,
            fix="pass --image-size with the model's (smaller) input size, or evaluate fewer images",
        )
        return
    option = f"--image-size {height}x{width} (image_size={asked!r})"
    fix = "pass the model's input size, e.g. --image-size 224"
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > limit:
        raise OptionError(
            f"{option} asks for {height * width:,} pixels per image, more than PIL.Image.MAX_IMAGE_PIXELS = "
            f"{limit:,}; {what} would need {format_bytes(needed)} ({needed:,} bytes)",
            where=where,
            fix=fix,
        )
    require_fits(needed, what=f"{option}: {what}", where=where, fix=fix, error=OptionError)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _probe(file: Path) -> _Probe:
    """Mode, size and alpha from the header only; refuses decompression bombs before any decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                probe = _Probe(image.mode, image.width, image.height, _has_alpha(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(file, f"Pillow: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _unreadable(file, exc) from exc
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and probe.width * probe.height > limit:
        raise _bomb(file, f"{probe.width}x{probe.height} = {probe.width * probe.height:,} pixels")
    return probe


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def _read(file: Path, *, rgb: bool, size: tuple[int, int]) -> np.ndarray:
    """One image file as a (C, H, W) float32 array (see :func:`image_to_array`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                return image_to_array(image, rgb=rgb, size=size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(file, f"Pillow: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _unreadable(file, exc) from exc


def _conversion_notes(probes: list[_Probe], ids: list[str], rgb: bool) -> list[str]:
    """One note per lossy or non-obvious conversion, with how many images it touched and the first one."""
    notes = []

    def note(flags: list[bool], text: str) -> None:
        if any(flags):
            notes.append(f"{sum(flags)} image(s) {text} (first: {ids[flags.index(True)]})")

    note([p.mode in _HIGH_DEPTH_SCALE and p.mode != "F" for p in probes],
         "have 16-bit pixels, scaled to [0, 1] by dividing by 65535")
    note([p.has_alpha for p in probes],
         "have an alpha channel, which was dropped: the colour stored under transparent pixels is kept, "
         "not composited (as PIL's convert('RGB') and torchvision's ImageFolder do)")
    note([p.mode == "CMYK" for p in probes],
         "are CMYK, converted to RGB by Pillow's formula without a colour profile")
    if rgb:
        note([p.mode in _GRAYSCALE_MODES for p in probes],
             "are grayscale and were copied to 3 channels because other images in the folder are in colour")
    return notes


def _bomb(file: Path, detail: str) -> DataError:
    return DataError(
        f"image {file.name} is too large to decode safely ({detail}); images above Pillow's decompression-bomb "
        f"limit PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels are refused",
        where=str(file),
        fix="downscale the image (e.g. to the model's input size) before evaluation; if you trust the file, "
        "raise the limit in Python (PIL.Image.MAX_IMAGE_PIXELS = ...) and call assay.evaluate",
    )


def _unreadable(file: Path, exc: Exception) -> DataError:
    return DataError(
        f"cannot read image {file.name} ({exc})",
        where=str(file),
        fix="remove or re-save the file (it may be truncated or not an image)",
    )


def _path_column(paths: list[str]) -> pd.DataFrame:
    import pandas as pd  # only image folders pay for pandas here (their "path" metadata column)

    return pd.DataFrame({"path": paths})
