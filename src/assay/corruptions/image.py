"""Image corruptions: the 15 ImageNet-C types and the 4 held-out ones (Hendrycks & Dietterich 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"), five severities each,
for batches of float images (N, C, H, W) in [0, 1] with 1 or 3 channels and any size.

Parameters come from the published scripts (see :mod:`assay.corruptions.image_tables`): the CIFAR-10-C
table for small images (``min(H, W) < 128``) and the ImageNet-C table otherwise, or as chosen with
``table``. The operations follow ``make_imagenet_c.py`` / ``make_cifar_c.py`` (hendrycks/robustness) and,
where those assume 224x224 or 32x32 RGB, their generalization in the ``imagecorruptions`` package
(bethgelab), re-written to work on whole batches. Deviations from the reference, all deliberate:

- outputs are float32 and are not rounded to 8 bits (the scripts save uint8; JPEG is 8-bit by nature);
  the 8-bit steps *inside* a corruption (glass blur's and snow's intermediate images, spatter's OpenCV
  pipeline) are kept; ``pixelate`` resamples in float (Pillow rounds between its two passes);
- ``glass_blur``: none in the pixel loop. The scripts' "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``
  runs on (H, W, 3) arrays, whose right-hand side are views, so it copies the random neighbour into the
  visited pixel and leaves the neighbour as it was; we do exactly that, in the loop's order, with its
  chains of copies (:func:`assay.corruptions.image_ops.neighbour_copies`, equal to the sequential loop),
  not the true swap the comment describes (which Assay did before revision 2: it moves pixel values up to
  1.5x as much on natural 32 px images, and made glass-blur accuracies incomparable with published
  CIFAR-10-C / ImageNet-C results). Given the same offsets, outputs equal ``imagecorruptions`` 1.1.2's to
  float32 precision, except where the first blur lands on an 8-bit boundary (flat areas and linear ramps,
  where float32 here and float64 there floor to neighbouring values: one 8-bit step at those pixels). The
  offsets come from our per-sample generators, so images match the scripts' in distribution, not draw
  for draw;
- ``motion_blur`` and ``snow``: ImageMagick's motion-blur kernel (as ``imagecorruptions`` re-implements
  it), without that re-implementation's early stop when a tap leaves the image (edges are repeated
  instead, as ImageMagick does);
- ``fog``: the plasma fractal is drawn at the next power of two above the image size (as
  ``imagecorruptions``; the scripts fix it at 256 / 32) and cropped;
- ``frost``: procedural textures (:mod:`assay.corruptions.frost`), not the five frost photographs;
- ``spatter``: exact Euclidean distances where OpenCV's ``distanceTransform`` uses a 5x5 mask approximation;
- ``elastic_transform``: the ImageNet-C / CIFAR-10-C script's version (random affine warp, then a
  Gaussian-smoothed random displacement field), not ``imagecorruptions``' later re-parametrization; the
  two bilinear resamplings use ``torch.grid_sample`` with the same reflections at the borders, at full
  floating-point precision (OpenCV's ``warpAffine`` rounds positions to 1/32 pixel);
- ``jpeg_compression`` encodes 1-channel images as grayscale JPEG (``imagecorruptions`` converts to RGB
  and back; the luma is the same up to rounding);
- 1-channel images: colour-based steps use the grey value itself where the reference would use luma
  (``snow``), grey versions of the colours (``spatter`` water and mud, the ``frost`` tint),
  ``brightness`` adds to the grey value (= the HSV value of a grey pixel), and ``saturate`` returns the
  image unchanged: a grey image has no saturation to change (``imagecorruptions`` also returns it as is).

Revisions: :data:`REVISIONS` numbers each corruption's definition; a change that alters any output raises
it, so that outputs stored under the old definition (e.g. cached model outputs) are not reused.

Randomness: sample ``i`` draws only from its own generator, seeded by ``(seed, name, severity,
index[i])`` (:func:`assay.corruptions.base.sample_rng`), and every array operation is batch-invariant
(:mod:`assay.corruptions.image_ops`), so results never depend on how the set was batched.
"""

from __future__ import annotations

import functools
import io
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from assay.corruptions import image_ops as ops
from assay.corruptions.base import CorruptionInfo, check_index, check_severity, unknown_corruption
from assay.corruptions.frost import FROST_VARIANTS, frost_textures
from assay.corruptions.image_tables import FROST_SCALE, TABLES
from assay.errors import UserError

__all__ = ["IMAGE_CORRUPTIONS", "REVISIONS", "SMALL_IMAGE_SIZE", "corrupt_images", "resolve_table"]

#: ``table="auto"`` uses the CIFAR-scale table when ``min(H, W)`` is below this, the ImageNet-scale one otherwise.
SMALL_IMAGE_SIZE = 128

Generators = Sequence[np.random.Generator]


def _info(name: str, family: str, description: str, held_out: bool = False) -> CorruptionInfo:
    return CorruptionInfo(name=name, family=family, held_out=held_out, description=description)


#: The 15 ImageNet-C corruptions (families as in the paper) followed by its 4 held-out ones.
IMAGE_CORRUPTIONS: dict[str, CorruptionInfo] = {c.name: c for c in [
    _info("gaussian_noise", "noise", "additive Gaussian noise per pixel and channel (sensor read noise)"),
    _info("shot_noise", "noise", "Poisson photon-count noise (low light)"),
    _info("impulse_noise", "noise", "salt-and-pepper noise: a fraction of values set to 0 or 1 (bit errors)"),
    _info("defocus_blur", "blur", "convolution with an anti-aliased disk (out-of-focus lens)"),
    _info("glass_blur", "blur", "Gaussian blur, local random pixel swaps, blur again (frosted glass)"),
    _info("motion_blur", "blur", "one-sided Gaussian line kernel at a random angle (camera shake)"),
    _info("zoom_blur", "blur", "mean of centred zooms of the image (camera moving towards the object)"),
    _info("snow", "weather", "motion-blurred flakes over a brightened, washed-out image"),
    _info("frost", "weather", "blend with a procedural frost-on-glass texture (not the ImageNet-C photos)"),
    _info("fog", "weather", "plasma-fractal haze added, contrast reduced"),
    _info("brightness", "weather", "HSV value raised (over-exposure, daylight)"),
    _info("contrast", "digital", "pixel values pulled towards each channel's mean"),
    _info("elastic_transform", "digital", "random affine warp plus a smooth random displacement field"),
    _info("pixelate", "digital", "box downscale and upscale (low-resolution source)"),
    _info("jpeg_compression", "digital", "JPEG encode and decode at low quality"),
    _info("speckle_noise", "noise", "multiplicative Gaussian noise", held_out=True),
    _info("gaussian_blur", "blur", "Gaussian blur", held_out=True),
    _info("spatter", "weather", "water droplets or mud splashes on the lens", held_out=True),
    _info("saturate", "digital", "HSV saturation scaled and shifted", held_out=True),
]}


#: Revision of each corruption's definition (1 unless listed). glass_blur 2: the published loop's copies
#: of the neighbouring pixel, where revision 1 swapped the two pixels.
REVISIONS: dict[str, int] = {**dict.fromkeys(IMAGE_CORRUPTIONS, 1), "glass_blur": 2}


# --------------------------------------------------------------------------------------------------- noise

def _gaussian_noise(x: np.ndarray, std: float, gens: Generators, table: str) -> np.ndarray:
    noise = ops.draws(gens, lambda g: g.standard_normal(x.shape[1:], dtype=np.float32))
    return x + np.float32(std) * noise


def _shot_noise(x: np.ndarray, photons: float, gens: Generators, table: str) -> np.ndarray:
    out = np.empty_like(x)
    for i, g in enumerate(gens):
        out[i] = g.poisson(x[i].astype(np.float64) * photons) / float(photons)
    return out


def _impulse_noise(x: np.ndarray, amount: float, gens: Generators, table: str) -> np.ndarray:
    # skimage.util.random_noise(mode="s&p", salt_vs_pepper=0.5): each value flips with probability
    # `amount`, to 1 or 0 with equal odds.
    out = x.copy()
    for i, g in enumerate(gens):
        flipped = g.random(x.shape[1:], dtype=np.float32) <= amount
        salted = g.random(x.shape[1:], dtype=np.float32) <= 0.5
        out[i][flipped & salted] = 1.0
        out[i][flipped & ~salted] = 0.0
    return out


def _speckle_noise(x: np.ndarray, std: float, gens: Generators, table: str) -> np.ndarray:
    noise = ops.draws(gens, lambda g: g.standard_normal(x.shape[1:], dtype=np.float32))
    return x + x * np.float32(std) * noise


# ---------------------------------------------------------------------------------------------------- blur

def _gaussian_blur(x: np.ndarray, sigma: float, gens: Generators, table: str) -> np.ndarray:
    return ops.gaussian_filter(x, sigma)


def _glass_blur(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    sigma, delta, iterations = params
    n, c, h, w = x.shape
    x = np.floor(np.clip(ops.gaussian_filter(x, sigma), 0, 1) * 255) / 255  # np.uint8(gaussian(x) * 255)
    rows, cols = ops.glass_visits(h, delta), ops.glass_visits(w, delta)
    if rows.size and cols.size:
        # One (dx, dy) per visit, in the loop's order: np.random.randint(-d, d, size=(2,)) in the scripts.
        shape = (iterations, rows.size, cols.size, 2)
        offsets = ops.draws(gens, lambda g: g.integers(-delta, delta, size=shape, dtype=np.int8))
        x = ops.neighbour_copies(x, offsets, delta)
    return ops.gaussian_filter(x, sigma)


def _defocus_blur(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    radius, alias_blur = params
    return ops.correlate2d(x, ops.disk_kernel(radius, alias_blur))


def _motion_blur(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    radius, sigma = params
    angles = np.array([g.uniform(-45, 45) for g in gens])
    return ops.motion_blur(x, radius, sigma, angles)


def _zoom_blur(x: np.ndarray, zooms: np.ndarray, gens: Generators, table: str) -> np.ndarray:
    out = x.copy()
    for zoom in zooms:
        out += ops.clipped_zoom(x, float(zoom))
    return out / np.float32(len(zooms) + 1)


# ------------------------------------------------------------------------------------------------- weather

def _grey(x: np.ndarray) -> np.ndarray:
    return ops.luma(x) if x.shape[1] == 3 else x


def _snow(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, keep = params
    n, c, h, w = x.shape
    # Only the centre crop of the reference's full-size noise layer survives clipped_zoom: draw just that.
    ch, cw = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    layer: np.ndarray = np.zeros((n, 1, h, w), dtype=np.float32)
    angles = np.empty(n)
    for i, g in enumerate(gens):
        layer[i, 0, top:top + ch, left:left + cw] = g.standard_normal((ch, cw), dtype=np.float32) * std + mean
        angles[i] = g.uniform(-135, -45)
    layer = ops.clipped_zoom(layer, zoom)
    layer[layer < threshold] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255  # the 8-bit PNG handed to ImageMagick
    layer = np.round(ops.motion_blur(layer, radius, sigma, angles) * 255) / 255
    x = keep * x + (1 - keep) * np.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + layer + layer[:, :, ::-1, ::-1]


def _frost_texture_size(size: int) -> int:
    # Textures tile (they are periodic), so any size works; a margin lets crops move, a cap bounds memory.
    return min(size + max(size // 2, 8), 512)


def _frost(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    keep, weight = params
    n, c, h, w = x.shape
    th, tw = _frost_texture_size(h), _frost_texture_size(w)
    textures = frost_textures(th, tw, FROST_SCALE[table], c)
    out = np.empty_like(x)
    for i, g in enumerate(gens):
        variant = int(g.integers(FROST_VARIANTS))
        rows = (int(g.integers(th)) + np.arange(h)) % th
        cols = (int(g.integers(tw)) + np.arange(w)) % tw
        out[i] = keep * x[i] + weight * textures[variant][:, rows[:, None], cols[None, :]]
    return out


def _fog(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    strength, decay = params
    n, c, h, w = x.shape
    mapsize = 1 << max(max(h, w) - 1, 0).bit_length()  # next power of two, as imagecorruptions
    uniforms = ops.draws(gens, lambda g: g.uniform(-1, 1, mapsize * mapsize - 1))
    plasma = ops.plasma_fractal(uniforms, mapsize, decay)[:, None, :h, :w].astype(np.float32)
    top = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + np.float32(strength) * plasma) * top / (top + np.float32(strength))


def _spatter(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    mean, std, sigma, threshold, intensity, mud = params
    n, c, h, w = x.shape
    liquid = np.empty((n, h, w), dtype=np.float32)
    for i, g in enumerate(gens):
        g.standard_normal(dtype=np.float32, out=liquid[i])
    liquid *= np.float32(std)
    liquid += np.float32(mean)
    liquid = ops.gaussian_filter(liquid, sigma)
    liquid[liquid < threshold] = 0
    if not mud:
        colour = np.array([175, 238, 238], dtype=np.float32) / 255  # pale turquoise water (RGB)
        mask = np.empty_like(liquid)

        def water(images: slice) -> None:
            mask[images] = _water_mask(liquid[images])

        ops.for_each_chunk(water, n, h * w)  # cache-sized chunks: many passes over small integer arrays
        mask *= np.float32(intensity)  # (N, H, W)
        if c == 3:
            out = mask[:, None] * colour[None, :, None, None]
            out += x
            return out
        added = np.clip(mask[:, None] * colour[None, :, None, None], 0, 1)
        return x + (0.2989 * added[:, 0:1] + 0.5870 * added[:, 1:2] + 0.1140 * added[:, 2:3])
    colour = np.array([63, 42, 20], dtype=np.float32) / 255  # mud brown (RGB)
    mask = ops.gaussian_filter((liquid > threshold).astype(np.float32), intensity)
    mask[mask < 0.8] = 0
    mask = mask[:, None]
    if c == 1:
        colour = np.array([0.2989 * colour[0] + 0.5870 * colour[1] + 0.1140 * colour[2]], dtype=np.float32)
    out = x * (1 - mask)
    out += mask * colour[None, :, None, None]
    return out


#: The water drops' distances are float32 square roots below 20, all multiples of 2**-23 (the spacing
#: of float32 in [1, 2)): as integers in that unit, sums of nine stay below 2**31 and are exact.
_DISTANCE_UNIT_BITS = 23


@functools.lru_cache(maxsize=1)
def _fixed_point_roots() -> np.ndarray:
    roots = ops.capped_roots(20).astype(np.float64) * 2.0**_DISTANCE_UNIT_BITS
    assert (roots == np.round(roots)).all()
    return roots.astype(np.int32)


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """The script's OpenCV pipeline for water drops: Canny edges of the liquid layer, distance to them
    (truncated at 20), 3x3 box blur, histogram equalization, an emboss-like 3x3 filter, box blur again,
    times the liquid layer, normalized per image to a maximum of 1.

    All in integers, with the results of the float reference (``scipy.ndimage`` in float64): the capped
    distances are float32 square roots that are whole multiples of 2**-23, so their 3x3 sums are exact
    in float64 (in any order) and equal to integer sums in that unit, and ``floor(sum / 9)`` of a sum
    of such multiples is their integer quotient by ``9 * 2**23`` (a quotient below an integer k falls short
    of it by at least 1 / (9 * 2**23), far more than float64 rounding near 20). Everything after is
    integer-valued: the emboss and the second blur are integer sums, ``round(s / 9)`` never ties."""
    liquid8 = np.clip(liquid * 255, 0, 255).astype(np.uint8)  # (liquid * 255).astype(uint8)
    edges = ops.canny(liquid8, 50, 150)
    squared = ops.truncated_squared_distance(edges, 20)  # cv2.distanceTransform (exact here), capped at 20
    sums = ops.box_sum3(_fixed_point_roots()[squared])  # cv2.blur's 3x3 sums, in units of 2**-23
    dist = (sums // (9 << _DISTANCE_UNIT_BITS)).astype(np.int16)  # ... / 9, astype(uint8)
    dist = ops.equalize_hist(dist)
    emboss = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))  # filter2D into CV_8U: saturate
    dist = np.clip(ops.correlate3x3(dist, emboss), 0, 255)
    dist = (ops.box_sum3(dist) + 4) // 9  # cv2.blur on uint8: round(sum / 9), never a tie
    mask = (liquid8.astype(np.int32) * dist).astype(np.float32)
    top = mask.max(axis=(1, 2), keepdims=True)
    return mask / np.where(top == 0, 1, top)


# ------------------------------------------------------------------------------------------------- digital

def _brightness(x: np.ndarray, shift: float, gens: Generators, table: str) -> np.ndarray:
    if x.shape[1] == 1:
        return x + np.float32(shift)  # the HSV value of a grey pixel is the grey value
    hsv = ops.rgb_to_hsv(x)
    hsv[:, 2] = np.clip(hsv[:, 2] + np.float32(shift), 0, 1)
    return ops.hsv_to_rgb(hsv)


def _saturate(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    factor, shift = params
    if x.shape[1] == 1:
        return x.copy()  # no saturation in a grey image
    hsv = ops.rgb_to_hsv(x)
    hsv[:, 1] = np.clip(hsv[:, 1] * np.float32(factor) + np.float32(shift), 0, 1)
    return ops.hsv_to_rgb(hsv)


def _contrast(x: np.ndarray, factor: float, gens: Generators, table: str) -> np.ndarray:
    means = x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    return (x - means) * np.float32(factor) + means


def _pixelate(x: np.ndarray, factor: float, gens: Generators, table: str) -> np.ndarray:
    n, c, h, w = x.shape
    small_h, small_w = max(int(h * factor), 1), max(int(w * factor), 1)
    # PIL: resize((w * f, h * f), BOX), then back to (w, h) with BOX.
    return ops.pil_box_resize(ops.pil_box_resize(x, small_h, small_w), h, w)


def _jpeg_compression(x: np.ndarray, quality: int, gens: Generators, table: str) -> np.ndarray:
    from PIL import Image

    n, c, h, w = x.shape
    mode = "L" if c == 1 else "RGB"

    def codec(pixels: np.ndarray) -> np.ndarray:  # (H, W, C) uint8 -> the same after a JPEG round trip
        buffer = io.BytesIO()
        Image.fromarray(pixels[:, :, 0] if c == 1 else pixels, mode=mode).save(buffer, format="JPEG",
                                                                               quality=int(quality))
        buffer.seek(0)
        image = np.asarray(Image.open(buffer))
        return image[:, :, None] if c == 1 else image

    if h * w < 96 * 96:  # small images: convert the batch at once, the codec is the cheap part
        pixels = np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        decoded = np.stack([codec(p) for p in pixels])
        return decoded.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
    out = np.empty_like(x)

    def one(i: int) -> None:  # large images: everything per image, on the thread pool
        pixels = np.empty((h, w, c), dtype=np.uint8)
        np.rint(x[i].transpose(1, 2, 0) * 255, out=pixels, casting="unsafe")
        np.multiply(codec(pixels).transpose(2, 0, 1), np.float32(1 / 255), out=out[i])

    ops.for_each_image(one, n, h * w)
    return out


def _elastic_transform(x: np.ndarray, params: tuple, gens: Generators, table: str) -> np.ndarray:
    alpha, sigma, affine = params
    n, c, h, w = x.shape
    cx, cy, square = w // 2, h // 2, min(h, w) // 3
    source = np.array([[cx + square, cy + square], [cx + square, cy - square], [cx - square, cy - square]],
                      dtype=np.float64)  # (x, y) points, as cv2.getAffineTransform takes them
    moves = np.empty((n, 3, 2))
    fields = np.empty((n, 2, h, w), dtype=np.float32)
    for i, g in enumerate(gens):
        moves[i] = g.uniform(-affine, affine, size=(3, 2))
        fields[i] = g.random((2, h, w), dtype=np.float32) * 2 - 1  # dx, then dy: U(-1, 1)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    lhs = np.concatenate([source, np.ones((3, 1))], axis=1)
    warped_y = np.empty((n, h, w))
    warped_x = np.empty((n, h, w))
    for i in range(n):
        try:  # M maps the source points to the moved ones; warpAffine samples the source at M^-1(x, y)
            forward = np.linalg.solve(lhs, source + moves[i]).T
            inverse = np.linalg.inv(np.vstack([forward, [0.0, 0.0, 1.0]]))
        except np.linalg.LinAlgError:  # degenerate (images under 3 pixels): no affine part
            inverse = np.eye(3)
        warped_x[i] = inverse[0, 0] * xx + inverse[0, 1] * yy + inverse[0, 2]
        warped_y[i] = inverse[1, 0] * xx + inverse[1, 1] * yy + inverse[1, 2]
    image = ops.bilinear_sample(x, warped_y, warped_x, "mirror")  # warpAffine(..., BORDER_REFLECT_101)
    if sigma > 0:
        weights = ops.gaussian_weights(sigma, truncate=3.0)
        fields = ops.separable_filter(fields, weights, weights, "reflect")
    fields = fields * np.float32(alpha)
    return ops.bilinear_sample(image, yy[None] + fields[:, 1], xx[None] + fields[:, 0], "reflect")


# ----------------------------------------------------------------------------------------------------- API

_Corruption = Callable[[np.ndarray, Any, Generators, str], np.ndarray]

_FUNCTIONS: dict[str, _Corruption] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression, "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur,
    "spatter": _spatter, "saturate": _saturate,
}
# Corruptions that draw no random numbers (the seed does not change them).
_DETERMINISTIC = frozenset({"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                            "jpeg_compression", "gaussian_blur", "saturate"})


def resolve_table(table: str, shape: Sequence[int]) -> str:
    """``"cifar"`` or ``"imagenet"``: ``table`` itself, or for ``"auto"`` by the image size (CIFAR-scale
    when ``min(H, W) < SMALL_IMAGE_SIZE``)."""
    if table == "auto":
        return "cifar" if min(shape[-2], shape[-1]) < SMALL_IMAGE_SIZE else "imagenet"
    if isinstance(table, str) and table in TABLES:
        return table
    raise UserError(f"unknown corruption parameter table {table!r}", where="table",
                    fix="use 'auto' (by image size), 'cifar' (32x32-scale) or 'imagenet' (224x224-scale)")


def _check_images(images: object) -> tuple[np.ndarray, bool]:
    """The images as contiguous float32, and whether they already lie in [0, 1] exactly."""
    x = np.asarray(images)
    if x.ndim != 4:
        raise UserError(f"image corruptions need a batch shaped (N, C, H, W); got {x.ndim} dimension(s) "
                        f"{tuple(x.shape)}", where="images",
                        fix="add a batch axis (x[None]) or a channel axis (x[:, None]); channels go first")
    if x.shape[1] not in (1, 3):
        raise UserError(f"image corruptions need 1 or 3 channels on axis 1; got shape {tuple(x.shape)}",
                        where="images", fix="pass NCHW images (transpose NHWC with x.transpose(0, 3, 1, 2))")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise UserError(f"images have an empty side: shape {tuple(x.shape)}", where="images",
                        fix="pass images at least 1x1")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise UserError(f"images must be numeric, got dtype {x.dtype}", where="images",
                        fix="pass float32 images in [0, 1]")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.size:
        return x, True
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
        raise UserError(f"image values must lie in [0, 1] (found {lo:.4g} .. {hi:.4g})", where="images",
                        fix="scale to [0, 1] before corrupting (uint8: x / 255) and normalize afterwards, "
                            "in the model")
    return x, lo >= 0 and hi <= 1


def corrupt_images(images: np.ndarray, name: str, severity: int, *, seed: int = 0,
                   index: np.ndarray | None = None, table: str = "auto") -> np.ndarray:
    """Corrupt a batch of images (N, C, H, W), float in [0, 1], C in {1, 3}, any H and W.

    Returns float32 of the same shape, clipped to [0, 1]. ``severity`` is 1..5. Randomness for sample
    ``i`` comes only from ``(seed, name, severity, index[i])`` (``index`` defaults to ``arange(N)``), so a
    dataset corrupted in batches, each with its samples' positions as ``index``, equals the dataset
    corrupted at once. ``table`` picks the parameter table: ``"auto"`` (CIFAR-scale below
    ``SMALL_IMAGE_SIZE`` pixels on the short side, ImageNet-scale otherwise), ``"cifar"`` or ``"imagenet"``.
    """
    if not isinstance(name, str) or name not in _FUNCTIONS:
        raise unknown_corruption(name, IMAGE_CORRUPTIONS, "image")
    check_severity(severity)
    try:
        seed = operator.index(seed)
    except TypeError:
        raise UserError(f"seed {seed!r} is not an integer", where="seed", fix="pass an integer seed, e.g. 0") from None
    x, in_range = _check_images(images)
    index = check_index(index, x.shape[0])
    scale = resolve_table(table, x.shape)
    if x.shape[0] == 0:
        return x.copy()
    params = TABLES[scale][name][int(severity) - 1]
    gens = [] if name in _DETERMINISTIC else ops.generators(seed, name, int(severity), index)
    if not in_range:
        x = np.clip(x, 0, 1)
    # One BLAS thread: the filters are many small matrix products, for which a second BLAS thread only adds
    # synchronisation (measured 25x slower for gaussian_blur at 224 px on a busy 2-core machine), and a fixed
    # thread count makes the float rounding, and so the corrupted images, the same on every machine.
    with threadpool_limits(1, user_api="blas"):
        out = np.ascontiguousarray(_FUNCTIONS[name](x, params, gens, scale), dtype=np.float32)
    if np.may_share_memory(out, x):  # never hand back (or clip) the caller's array
        out = out.copy()
    return np.clip(out, 0, 1, out=out)
