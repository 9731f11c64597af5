"""Array building blocks of the image corruptions, all over batches shaped (N, C, H, W).

Batch invariance: every result for image ``i`` depends only on image ``i`` (and its own random draws),
and is computed by code whose floating-point path does not depend on the batch size: element-wise numpy,
scipy.ndimage line filters and labelling within each image, ``numpy.take`` gathers and shifted sums,
``numpy.matmul`` with a batch of 2-D products (one BLAS call per image and channel), torch's
``interpolate`` and ``grid_sample`` (each output from its own inputs, in a fixed order), or a loop over
images or cache-sized chunks of images (some on a thread pool, each task writing only its own images).
So corrupting a set at once or in any batches gives bit-identical results (the tests check this).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
from scipy import ndimage

from assay.corruptions.base import sample_rng

__all__ = ["bilinear_sample", "box_sum3", "canny", "capped_roots", "clipped_zoom", "correlate2d", "correlate3x3",
           "disk_kernel", "draws", "equalize_hist", "filter_matrix", "for_each_chunk", "for_each_image",
           "gaussian_filter", "gaussian_weights", "generators", "glass_visits", "hsv_to_rgb", "luma", "motion_blur",
           "neighbour_copies", "pil_box_matrix", "pil_box_resize", "plasma_fractal", "rgb_to_hsv", "separable_filter",
           "truncated_distance", "truncated_squared_distance", "worker_threads"]

FilterMode = Literal["reflect", "constant", "nearest", "mirror", "wrap"]
"""A boundary mode of scipy.ndimage's line filters."""
PadMode = Literal["reflect101", "constant", "edge", "reflect", "symmetric", "wrap"]
"""OpenCV's BORDER_REFLECT_101 (``"reflect101"``) or a ``numpy.pad`` mode."""


# ---------------------------------------------------------------------------------------------- randomness

def generators(seed: int, name: str, severity: int, index: np.ndarray) -> list[np.random.Generator]:
    """One generator per sample, a function of ``(seed, name, severity, index[i])`` only."""
    return [sample_rng(seed, name, severity, int(i)) for i in index]


def draws(gens: Sequence[np.random.Generator], draw: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
    """``draw`` applied to each sample's generator, stacked along a new first axis."""
    return np.stack([np.asarray(draw(g)) for g in gens])


_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0


def worker_threads() -> int:
    """Threads the per-image pool may use: the process's intra-op thread count as torch reports it (which
    follows ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``torch.set_num_threads``, e.g. ``--threads``),
    at most the core count and 8."""
    import torch

    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1, 8))


def for_each_image(work: Callable[[int], None], n: int, pixels: int) -> None:
    """Run ``work(i)`` for ``i`` in ``0..n-1``, on a small thread pool when the images (or chunks of
    images) are big enough (``pixels`` each) to pay for it and more than one thread is allowed
    (:func:`worker_threads`); the work should be C code that releases the GIL (Pillow's codecs, numpy
    on large arrays). Each call touches only its own images, so the result does not depend on scheduling."""
    global _POOL, _POOL_WORKERS
    workers = worker_threads() if n >= 4 and pixels >= 96 * 96 else 1
    if workers < 2:
        for i in range(n):
            work(i)
        return
    if _POOL is None or workers != _POOL_WORKERS:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="assay-corrupt")
        _POOL_WORKERS = workers
    for future in [_POOL.submit(work, i) for i in range(n)]:
        future.result()


def for_each_chunk(work: Callable[[slice], None], n: int, pixels: int, chunk_pixels: int = 1 << 17) -> None:
    """Run ``work(images)`` over consecutive slices of ``n`` images of ``pixels`` each, as few images per
    slice as make about ``chunk_pixels`` (at least one): multi-pass array code then works in the CPU's
    cache instead of streaming the whole batch through memory at every pass. One slice after another: such
    code makes many short numpy calls, which hold the GIL between them, so threads would not run it faster."""
    per = max(1, chunk_pixels // max(pixels, 1))
    for start in range(0, n, per):
        work(slice(start, min(start + per, n)))


# ------------------------------------------------------------------------------------------ linear filters

def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The 1-D Gaussian of ``scipy.ndimage.gaussian_filter1d`` (radius ``int(truncate * sigma + 0.5)``),
    which ``skimage.filters.gaussian`` (used by the published scripts) calls."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return phi / phi.sum()


@functools.lru_cache(maxsize=64)
def _filter_matrix(n: int, weights: tuple[float, ...], mode: FilterMode) -> np.ndarray:
    # Column j is the filter's response to the unit vector e_j, so out = M @ in along that axis; built by
    # scipy itself, so the boundary mode (and kernels longer than the axis) behave exactly as ndimage's.
    matrix = ndimage.correlate1d(np.eye(n), np.asarray(weights), axis=0, mode=mode).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def filter_matrix(n: int, weights: np.ndarray, mode: FilterMode) -> np.ndarray:
    """(n, n) matrix of the 1-D correlation with ``weights`` (centred) and an ndimage boundary ``mode``."""
    return _filter_matrix(int(n), tuple(float(w) for w in np.asarray(weights, dtype=np.float64)), mode)


def separable_filter(x: np.ndarray, weights_h: np.ndarray, weights_w: np.ndarray, mode: FilterMode) -> np.ndarray:
    """Correlate the last two axes with 1-D kernels, as two matrix products (``M_h @ x @ M_w.T``).

    A dense (n, n) product costs more multiply-adds than a short kernel, but runs in BLAS and does not care
    how long the kernel is (the elastic transform smooths with sigma up to 171 pixels)."""
    mh = filter_matrix(x.shape[-2], weights_h, mode)
    mw = filter_matrix(x.shape[-1], weights_w, mode)
    return np.matmul(np.matmul(mh, x), mw.T)


def gaussian_filter(x: np.ndarray, sigma: float, *, mode: FilterMode = "nearest", truncate: float = 4.0) -> np.ndarray:
    """Gaussian blur of the last two axes, as ``skimage.filters.gaussian`` (``mode='nearest'``,
    ``truncate=4``) does it for a multichannel image; ``sigma <= 0`` leaves ``x`` unchanged."""
    x = np.asarray(x, dtype=np.float32)
    if sigma <= 0 or int(truncate * sigma + 0.5) == 0:
        return x.copy()
    w = gaussian_weights(sigma, truncate)
    return separable_filter(x, w, w, mode)


def _pad(x: np.ndarray, ph: int, pw: int, mode: PadMode) -> np.ndarray:
    widths = [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)]
    if mode == "reflect101":
        if x.shape[-2] == 1 or x.shape[-1] == 1:  # nothing to reflect off: the edge value repeats
            return np.pad(x, widths, mode="edge")
        return np.pad(x, widths, mode="reflect")  # numpy's "reflect" is OpenCV's BORDER_REFLECT_101
    return np.pad(x, widths, mode=mode)


def correlate2d(x: np.ndarray, kernel: np.ndarray, *, border: PadMode = "reflect101") -> np.ndarray:
    """2-D correlation of each image and channel with a centred odd-sized ``kernel``, borders as OpenCV's
    ``filter2D`` (BORDER_REFLECT_101). Small kernels as shifted sums; large ones by FFT, one image at a time."""
    kernel = np.asarray(kernel, dtype=np.float64)
    rows, cols = np.nonzero(kernel)
    kh, kw = kernel.shape
    # Crop all-zero margins symmetrically (zero taps add nothing; the crop keeps the kernel centred).
    mh = min(rows.min(), kh - 1 - rows.max()) if rows.size else kh // 2
    mw = min(cols.min(), kw - 1 - cols.max()) if cols.size else kw // 2
    kernel = kernel[mh:kh - mh, mw:kw - mw]
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    n, c, h, w = x.shape
    padded = _pad(np.asarray(x, dtype=np.float32), rh, rw, border)
    if kh * kw <= 25:
        out = np.zeros(x.shape, dtype=np.float32)
        for u in range(kh):
            for v in range(kw):
                if kernel[u, v] != 0.0:
                    out += np.float32(kernel[u, v]) * padded[:, :, u:u + h, v:v + w]
        return out
    from scipy import fft

    shape = (fft.next_fast_len(h + 2 * rh, real=True), fft.next_fast_len(w + 2 * rw, real=True))
    spectrum = fft.rfft2(kernel[::-1, ::-1], s=shape)
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(n):  # per image: the FFT's code path then never depends on the batch
        full = fft.irfft2(fft.rfft2(padded[i].astype(np.float64), s=shape) * spectrum, s=shape)
        out[i] = full[:, kh - 1:kh - 1 + h, kw - 1:kw - 1 + w]
    return out


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The anti-aliased disk of the published ``disk()``: a binary disk on a grid of half-width
    ``max(8, radius)``, normalized, then Gaussian-blurred (OpenCV ``GaussianBlur``, 3x3 for radius <= 8 and
    5x5 above, sigma ``alias_blur``, BORDER_REFLECT_101)."""
    half, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2.0 * alias_blur**2))
    g /= g.sum()
    return ndimage.correlate1d(ndimage.correlate1d(disk, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")


# ---------------------------------------------------------------------------------------------- resampling

def clipped_zoom(x: np.ndarray, zoom: float) -> np.ndarray:
    """The published ``clipped_zoom``: crop the centre ``ceil(size / zoom)``, enlarge it by ``zoom`` with
    linear interpolation (``scipy.ndimage.zoom(order=1)``, i.e. bilinear with aligned corners, output size
    ``round(crop * zoom)``), and trim the centre back to the original size. Works per axis, so non-square
    images keep their shape."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    if zoom == 1:
        return np.array(x, dtype=np.float32, copy=True)
    ch, cw = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    oh, ow = int(round(ch * zoom)), int(round(cw * zoom))
    crop = torch.from_numpy(np.ascontiguousarray(x[:, :, top:top + ch, left:left + cw], dtype=np.float32))
    with torch.no_grad():
        big = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True).numpy()
    th, tw = (oh - h) // 2, (ow - w) // 2
    return np.ascontiguousarray(big[:, :, th:th + h, tw:tw + w])


def bilinear_sample(x: np.ndarray, ys: np.ndarray, xs: np.ndarray, border: str) -> np.ndarray:
    """``out[n, c, i, j] = x[n, c]`` at the real position ``(ys[n, i, j], xs[n, i, j])`` (pixel centres at
    integers), bilinear, by ``torch.nn.functional.grid_sample`` (each output from its own neighbours).
    Positions outside reflect: ``border="mirror"`` about the border pixels' centres (OpenCV
    BORDER_REFLECT_101, as ``warpAffine`` in the elastic script), ``"reflect"`` about the image edges
    (scipy's half-sample ``mode="reflect"``, as its ``map_coordinates``)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    aligned = border == "mirror"

    def normalized(pos: np.ndarray, size: int) -> np.ndarray:
        if aligned:
            return np.zeros_like(pos) if size == 1 else pos * (2.0 / (size - 1)) - 1.0
        return (2.0 * pos + 1.0) / size - 1.0

    grid = np.stack([normalized(xs, w), normalized(ys, h)], axis=-1).astype(np.float32)
    with torch.no_grad():
        out = F.grid_sample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(grid),
                            mode="bilinear", padding_mode="reflection", align_corners=aligned)
    return out.numpy()


@functools.lru_cache(maxsize=64)
def _pil_box_matrix(in_size: int, out_size: int) -> np.ndarray:
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        pos = (np.arange(xmin, xmax) - center + 0.5) / filterscale
        weights = ((pos > -0.5) & (pos <= 0.5)).astype(np.float64)
        if weights.sum() != 0.0:
            weights /= weights.sum()
        matrix[xx, xmin:xmax] = weights
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def pil_box_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of Pillow's ``Image.BOX`` resampling along one axis (the coefficients of
    ``precompute_coeffs`` in Pillow's ``Resample.c`` with the box filter, support 0.5)."""
    return _pil_box_matrix(int(in_size), int(out_size))


@functools.lru_cache(maxsize=64)
def _box_plan(in_size: int, out_size: int) -> tuple[str, np.ndarray, np.ndarray]:
    """How to apply Pillow's box resampling along one axis: ``("copy", source, _)`` when every output
    copies one input (enlarging), ``("runs", start, length)`` when the outputs average runs of inputs that
    tile the axis (shrinking), ``("matrix", _, _)`` otherwise."""
    matrix = pil_box_matrix(in_size, out_size)
    nonzero = matrix != 0
    start = nonzero.argmax(axis=1)
    stop = in_size - nonzero[:, ::-1].argmax(axis=1)
    counts = stop - start
    if out_size > in_size and (counts == 1).all():
        assert np.array_equal(start, _nearest_exact(in_size, out_size))
        return "copy", start, counts
    if out_size < in_size and start[0] == 0 and stop[-1] == in_size and (start[1:] == stop[:-1]).all():
        return "runs", start, counts
    return "matrix", start, counts


def _along(axis: int, index: object) -> tuple:
    return (slice(None),) * axis + (index,)


def _run_means(t: np.ndarray, axis: int, start: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of each run ``t[start[k]:start[k] + counts[k]]`` along ``axis``, summed left to right in
    float32 then divided by the run length (the order and rounding of the torch ``index_add_`` this
    replaced, so the results are bit-identical)."""
    longest = int(counts.max())
    if (counts == longest).all():  # equal runs: a reshape, then one strided add per position in the run
        runs = t.reshape(t.shape[:axis] + (counts.size, longest) + t.shape[axis + 1:])
        total = np.array(runs[_along(axis + 1, 0)])
        for j in range(1, longest):
            total += runs[_along(axis + 1, j)]
    else:  # runs of two lengths: gather the j-th pixel of every run; a run without one adds an exact 0
        total = np.take(t, start, axis=axis)
        trailing = (1,) * (t.ndim - axis - 1)
        for j in range(1, longest):
            longer = counts > j
            if longer.all():
                total += np.take(t, start + j, axis=axis)
            else:
                pixels = np.take(t, np.where(longer, start + j, start), axis=axis)
                pixels *= longer.astype(np.float32).reshape((-1,) + trailing)
                total += pixels
    lengths = counts.astype(np.float32).reshape((-1,) + (1,) * (t.ndim - axis - 1))
    total /= lengths
    return total


def pil_box_resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow's ``resize((width, height), Image.BOX)`` of every image and channel, in float.

    Box weights are equal over a run of input pixels, and when shrinking the runs tile the input, so a
    shrink is a mean per run; when enlarging each output copies one input pixel (``nearest-exact``), a
    gather. Both element by element in numpy (batch-invariant), widths first, then heights. Other cases
    (a run structure that does not tile) fall back to the dense matrices."""
    t = np.ascontiguousarray(x, dtype=np.float32)
    for axis, out_size in ((3, width), (2, height)):
        in_size = t.shape[axis]
        if out_size == in_size:
            continue
        how, start, counts = _box_plan(in_size, out_size)
        if how == "copy":
            t = np.take(t, start, axis=axis)
        elif how == "runs":
            t = _run_means(t, axis, start, counts)
        else:
            import torch

            m = torch.from_numpy(np.array(pil_box_matrix(in_size, out_size)))
            with torch.no_grad():
                tt = torch.from_numpy(np.ascontiguousarray(t))
                t = (torch.matmul(tt, m.T) if axis == 3 else torch.matmul(m, tt)).numpy()
    return t


@functools.lru_cache(maxsize=64)
def _nearest_exact(in_size: int, out_size: int) -> np.ndarray:
    return np.minimum(np.floor((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(np.int64), in_size - 1)


def motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage(radius, sigma, angle)``, which the ImageNet-C scripts call through
    Wand and ``imagecorruptions`` re-implements: a one-sided line kernel of ``2 * ceil(radius) + 1`` taps
    with Gaussian weights ``exp(-i^2 / (2 sigma^2))`` (normalized), tap ``i`` reading the pixel
    ``(ceil(i sin(a) - 0.5), ceil(i cos(a) - 0.5))`` away (rows, columns), edges repeated (ImageMagick's
    default virtual pixels). One angle per image, in degrees."""
    n, c, h, w = x.shape
    width = 2 * int(math.ceil(radius)) + 1
    taps = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2.0 * sigma**2))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    pad = width
    padded = np.pad(np.asarray(x, dtype=np.float32), [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="edge")
    out = np.zeros(x.shape, dtype=np.float32)
    for i in range(n):
        a = math.radians(float(angles[i]))
        dys = np.ceil(taps * math.sin(a) - 0.5).astype(np.int64)
        dxs = np.ceil(taps * math.cos(a) - 0.5).astype(np.int64)
        acc = out[i]
        for k in range(width):
            r0, c0 = pad + int(dys[k]), pad + int(dxs[k])
            acc += kernel[k] * padded[i, :, r0:r0 + h, c0:c0 + w]
    return out


# -------------------------------------------------------------------------------------------- glass blur

def glass_visits(size: int, delta: int) -> np.ndarray:
    """Rows (or columns) the published glass-blur loop visits on an axis of ``size`` pixels, in its
    order: ``range(size - delta, delta, -1)``."""
    return np.arange(size - delta, delta, -1)


def neighbour_copies(x: np.ndarray, offsets: np.ndarray, delta: int) -> np.ndarray:
    """The pixel loop of the published glass blur (``make_imagenet_c.py`` / ``make_cifar_c.py``,
    ``imagecorruptions``) on a batch (N, C, H, W), exactly.

    The loop visits rows ``H - delta .. delta + 1`` and within each row columns ``W - delta .. delta + 1``
    (both descending, :func:`glass_visits`) and runs ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an
    (H, W, C) array. The right-hand side holds two *views*: the first assignment copies the partner into
    ``x[h, w]``, the second writes that same value back into the partner. So each visit copies the
    partner's current value into the visited pixel and leaves the partner as it was (on a 2-D array the
    same line would swap two scalars; the scripts always run it on colour arrays).

    ``offsets`` (N, iterations, rows, cols, 2) holds each visit's ``(dx, dy)``, in ``[-delta, delta)``.
    A visit reads a pixel's *current* value: the pixel's new value if the loop visited it earlier in the
    pass (it lies later in raster order and inside the visited rectangle), its value before the pass
    otherwise. Each pass is resolved at once by following those chains with pointer jumping (each round
    doubles the followed length), then one gather; the result equals the sequential loop exactly."""
    n, c, h, w = x.shape
    rows, cols = glass_visits(h, delta), glass_visits(w, delta)
    out = np.array(x, dtype=np.float32, copy=True)
    if not (rows.size and cols.size):
        return out
    inside = np.zeros(h * w, dtype=bool)  # pixels the loop visits
    visits = (rows[:, None] * w + cols[None, :]).ravel()  # in visiting order: descending raster index
    inside[visits] = True

    def chunk(images: slice) -> None:
        m = images.stop - images.start
        pixels = np.ascontiguousarray(out[images].transpose(0, 2, 3, 1)).reshape(m * h * w, c)
        start = (np.arange(m, dtype=np.int64) * (h * w))[:, None]
        visited = (start + visits).ravel()
        for step in range(offsets.shape[1]):
            d = offsets[images, step].astype(np.int64)
            partner = ((rows[None, :, None] + d[..., 1]) * w + (cols[None, None, :] + d[..., 0])).reshape(m, -1)
            # Visited before this pixel in the pass: a visited pixel with a larger raster index.
            ahead = (partner > visits) & inside[partner]
            source = np.arange(m * h * w, dtype=np.int64)  # where each pixel's value comes from
            final = np.ones(m * h * w, dtype=bool)  # source holds a value from before the pass
            source[visited] = (start + partner).ravel()
            final[visited] = ~ahead.ravel()
            pending = np.flatnonzero(~final)
            while pending.size:
                via = source[pending]
                source[pending], final[pending] = source[via], final[via]
                pending = pending[~final[pending]]
            pixels = pixels[source]
        out[images] = pixels.reshape(m, h, w, c).transpose(0, 3, 1, 2)

    for_each_chunk(chunk, n, h * w)
    return out


# ------------------------------------------------------------------------------------------------- colour

def luma(x: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (N, 3, H, W) RGB, shape (N, 1, H, W) (OpenCV's RGB2GRAY weights)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).astype(np.float32)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hsv`` over channel axis 1 (hue in [0, 1); grey pixels get hue 0 and
    saturation 0; ties between maxima resolved as skimage does, blue over green over red)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    grey = delta == 0
    safe = np.where(grey, 1, delta)
    s = np.where(grey, 0, delta / np.where(v == 0, 1, v))
    h = np.where(r == v, (g - b) / safe, 0)
    h = np.where(g == v, 2 + (b - r) / safe, h)
    h = np.where(b == v, 4 + (r - g) / safe, h)
    h = np.where(grey, 0, np.mod(h / 6, 1))
    return np.stack([h, s, v], axis=1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``skimage.color.hsv2rgb`` over channel axis 1."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = sector.astype(np.int64) % 6
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.empty(hsv.shape, dtype=np.float32)
    for ch in range(3):
        out[:, ch] = np.choose(sector, [row[ch] for row in table])
    return out


# ------------------------------------------------------------------------------------------- fog (plasma)

def plasma_fractal(uniforms: np.ndarray, mapsize: int, wibbledecay: float) -> np.ndarray:
    """The published diamond-square ``plasma_fractal`` (a modification of FLHerne/mapgen), one map per row
    of ``uniforms`` (N, mapsize**2 - 1) of U(-1, 1) draws, consumed in the script's order; returns
    (N, mapsize, mapsize) in [0, 1]."""
    n = uniforms.shape[0]
    m = mapsize
    maparray = np.zeros((n, m, m), dtype=np.float64)
    stepsize, wibble, used = m, 100.0, 0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        nonlocal used
        size = array.shape[1] * array.shape[2]
        noise = uniforms[:, used:used + size].reshape(array.shape)
        used += size
        return array / 4 + wibble * (wibble * noise)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[:, 0:m:stepsize, 0:m:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=1)
        squares = squares + np.roll(squares, shift=-1, axis=2)
        maparray[:, half:m:stepsize, half:m:stepsize] = wibbledmean(squares)
        dr = maparray[:, half:m:stepsize, half:m:stepsize]
        ul = maparray[:, 0:m:stepsize, 0:m:stepsize]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        maparray[:, 0:m:stepsize, half:m:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        maparray[:, half:m:stepsize, 0:m:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min(axis=(1, 2), keepdims=True)
    top = maparray.max(axis=(1, 2), keepdims=True)
    return maparray / np.where(top == 0, 1, top)


# ------------------------------------------------------------------------------- spatter (OpenCV pieces)

def canny(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV's ``Canny(img, low, high)`` (3x3 Sobel with replicated borders, L1 gradient magnitude,
    non-maximum suppression with its tan(22.5 deg) sector test, hysteresis as 8-connected components of
    candidates that hold a strong pixel) for a batch (N, H, W) of uint8-valued images; returns bool edges.
    In int16 (Sobel responses of 8-bit images lie within +-1020)."""
    src = np.pad(np.asarray(img).astype(np.int16), [(0, 0), (1, 1), (1, 1)], mode="edge")
    left, right = src[:, :, :-2], src[:, :, 2:]
    smooth_rows = src[:, :, 1:-1] * np.int16(2)
    smooth_rows += left
    smooth_rows += right  # [1, 2, 1] along x
    diff_rows = right - left  # [-1, 0, 1] along x
    gx = diff_rows[:, 1:-1] * np.int16(2)
    gx += diff_rows[:, :-2]
    gx += diff_rows[:, 2:]
    gy = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    ax, ay = np.abs(gx), np.abs(gy)
    h, w = ax.shape[1:]
    m = np.zeros((ax.shape[0], h + 2, w + 2), dtype=np.int16)  # outside the image the magnitude is 0
    mag = m[:, 1:-1, 1:-1]
    np.add(ax, ay, out=mag)

    def nb(dy: int, dx: int) -> np.ndarray:
        return m[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    wide_ax, shifted_ay = ax.astype(np.int32), ay.astype(np.int32) << 15
    tg22x = wide_ax * 13573  # round(tan(22.5 deg) * 2**15), as OpenCV (CANNY_SHIFT = 15)
    horizontal = shifted_ay < tg22x
    tg22x += wide_ax << 16
    vertical = shifted_ay > tg22x
    diagonal = ~(horizontal | vertical)
    same_sign = (gx ^ gy) >= 0  # OpenCV's s = +1: previous row x-1, next row x+1
    peak = horizontal & (mag > nb(0, -1)) & (mag >= nb(0, 1))
    peak |= vertical & (mag > nb(-1, 0)) & (mag >= nb(1, 0))
    rising = diagonal & same_sign
    peak |= rising & (mag > nb(-1, -1)) & (mag > nb(1, 1))
    peak |= (diagonal ^ rising) & (mag > nb(-1, 1)) & (mag > nb(1, -1))
    candidate = peak & (mag > low)
    strong = candidate & (mag > high)
    within_image = np.zeros((3, 3, 3), dtype=bool)
    within_image[1] = True  # 8-connected inside each image, never across the batch axis
    labels, count = ndimage.label(candidate, structure=within_image)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[strong]] = True
    keep[0] = False
    return keep[labels]


def truncated_squared_distance(edges: np.ndarray, limit: int) -> np.ndarray:
    """Squared Euclidean distance from each pixel to the nearest ``True`` pixel of the same image of a
    (N, H, W) bool batch where it is below ``limit**2``, and some value from ``limit**2`` up to
    ``2 limit**2`` where it is not (also where an image has none); int16.

    Separable (the squared distance is the minimum over columns of dx^2 + dy^2): the vertical distance
    to the nearest edge in each column comes from running max/min of edge row indices, capped at
    ``limit``; the horizontal pass takes the minimum of ``k^2 + dy^2`` over the shifts ``|k| < limit``.
    A distance below ``limit`` has both offsets below ``limit``, so it is among the candidates, and
    every candidate is a true distance or at least ``limit**2``."""
    n, h, w = edges.shape
    limit = int(limit)
    cap = np.int16(limit)
    index = np.int16 if h + 2 * limit < np.iinfo(np.int16).max else np.int32
    rows = np.arange(h, dtype=index)[None, :, None]
    above = np.where(edges, rows, index(-cap))  # the last edge row at or above (or far away)
    np.maximum.accumulate(above, axis=1, out=above)
    below = np.where(edges, rows, index(h + cap))  # the first edge row at or below
    below = np.minimum.accumulate(below[:, ::-1], axis=1)[:, ::-1]
    dy = np.minimum(np.minimum(rows - above, below - rows), cap).astype(np.int16)
    pad = max(limit - 1, 0)
    padded = np.full((n, h, w + 2 * pad), cap * cap, dtype=np.int16)
    squared = padded[:, :, pad:pad + w]
    np.multiply(dy, dy, out=squared)
    best = squared.copy()
    pair = np.empty_like(best)
    for k in range(1, limit):
        np.minimum(padded[:, :, pad - k:pad - k + w], padded[:, :, pad + k:pad + k + w], out=pair)
        pair += np.int16(k * k)
        np.minimum(best, pair, out=best)
    return best


def truncated_distance(edges: np.ndarray, limit: int) -> np.ndarray:
    """``min(scipy.ndimage.distance_transform_edt(~edges[i]), limit)`` per image of a (N, H, W) bool batch,
    float32 (``limit`` everywhere when an image has no ``True`` pixel): see
    :func:`truncated_squared_distance`."""
    return capped_roots(int(limit))[truncated_squared_distance(edges, limit)]


@functools.lru_cache(maxsize=4)
def capped_roots(limit: int) -> np.ndarray:
    """float32(min(sqrt(d2), limit)) for every d2 that :func:`truncated_squared_distance` can return."""
    roots = np.minimum(np.sqrt(np.arange(2 * limit**2 + 1, dtype=np.float64)), float(limit))
    roots = roots.astype(np.float32)
    roots.setflags(write=False)
    return roots


def box_sum3(x: np.ndarray) -> np.ndarray:
    """Sum over each pixel's 3x3 neighbourhood in the last two axes, borders mirrored as OpenCV's
    BORDER_REFLECT_101 (``scipy.ndimage`` ``mode="mirror"``), as two 1-D passes. The same as a 3x3
    correlation with ones whenever the sums are exact in ``x``'s dtype (integers; see ``_water_mask``)."""
    p = _pad(x, 1, 1, "reflect101")
    rows = p[..., :-2] + p[..., 1:-1]
    rows += p[..., 2:]
    out = rows[..., :-2, :] + rows[..., 1:-1, :]
    out += rows[..., 2:, :]
    return out


def correlate3x3(x: np.ndarray, kernel: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """3x3 correlation of the last two axes with an integer ``kernel``, borders BORDER_REFLECT_101, in
    ``x``'s (integer) dtype: shifted multiply-adds over the non-zero taps."""
    p = _pad(x, 1, 1, "reflect101")
    h, w = x.shape[-2:]
    out = np.zeros(x.shape, dtype=x.dtype)
    for u in range(3):
        for v in range(3):
            weight = int(kernel[u][v])
            window = p[..., u:u + h, v:v + w]
            if weight == 1:
                out += window
            elif weight == -1:
                out -= window
            elif weight:
                out += window * x.dtype.type(weight)
    return out


def equalize_hist(img: np.ndarray) -> np.ndarray:
    """OpenCV's ``equalizeHist`` per image of a (N, H, W) uint8-valued batch; int16 values 0..255."""
    n = img.shape[0]
    codes = img.reshape(n, -1).astype(np.intp)
    total = codes.shape[1]
    codes += 256 * np.arange(n, dtype=np.intp)[:, None]  # image i's values index its own 256 bins
    hist = np.bincount(codes.ravel(), minlength=256 * n).reshape(n, 256)
    first = np.argmax(hist > 0, axis=1)
    first_count = hist[np.arange(n), first]
    scale = np.float32(255.0) / np.maximum(total - first_count, 1).astype(np.float32)
    cum = np.cumsum(hist, axis=1) - first_count[:, None]  # running sum from the first occupied bin (exclusive)
    lut = np.clip(np.rint(cum.astype(np.float32) * scale[:, None]), 0, 255).astype(np.int16)
    bins = np.arange(256)[None, :]
    lut = np.where(bins <= first[:, None], np.int16(0), lut)
    constant = first_count == total
    lut[constant] = np.arange(256)  # a constant image stays as it is
    return lut.ravel()[codes].reshape(img.shape)
