"""Procedural frost textures for the ``frost`` corruption (nothing shipped, nothing downloaded).

ImageNet-C blends each image with a random crop of one of five photographs of frost on a window pane
(``frost1.png`` ... ``frost5.jpg`` next to ``make_imagenet_c.py``). We do not ship those photos; instead
each texture is generated from a fixed seed (independent of the user's seed and of numpy's global state),
so it is the same in every run, and on every machine up to floating-point rounding:

1. *density*: smooth multi-scale noise (white noise low-passed at three scales, by FFT, so the texture
   tiles), squashed to (0, 1) - where the pane is frosted thickly and where thinly;
2. *crystals*: dendrites as ice grows them on glass - straight stems in random directions with side
   branches at +-60 degrees (hexagonal ice), each drawn as an anti-aliased streak whose brightness follows
   the density, then saturated (``1 - exp(-k * coverage)``) so crossings do not blow out;
3. *rime*: fine-grained speckle where the density is high;
4. a pale base level and a cold tint, (0.82, 0.91, 1.0) x brightness, as in the photos (white-blue ice).

Feature sizes are in pixels at ``scale=1`` (ImageNet-C crops the photos at full size) and shrink with
``scale`` (the CIFAR script shrinks the photos to 0.2 first). The mean brightness (about 0.66 in blue) and
contrast are set to those of the photos, but numbers measured with these textures are *not*
comparable to ImageNet-C's frost column: this is a different frost. Each corrupted image takes a random
variant and a random (wrapping) crop, as the reference takes a random photo and crop.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["FROST_TINT", "FROST_VARIANTS", "frost_texture", "frost_textures"]

#: Number of distinct textures a sample can draw from (ImageNet-C draws one of its first five photos).
FROST_VARIANTS = 5
#: RGB multiplier of the texture's brightness: ice is white-blue.
FROST_TINT = (0.82, 0.91, 1.0)
_SEED = 20190328  # fixed: the textures are part of the corruption's definition, not of the user's seed


def _lowpass(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian low-pass (the texture tiles), normalized to zero mean and unit variance."""
    h, w = noise.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    response = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    out = np.fft.irfft2(np.fft.rfft2(noise) * response, s=(h, w))
    out -= out.mean()
    return out / (out.std() + 1e-12)


def _segments(rng: np.random.Generator, h: int, w: int, density: np.ndarray,
              scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stems and their side branches: start points (y, x), directions, lengths and brightness."""
    spacing = max(9.0 * scale, 1.0)
    n_stems = max(int(h * w / spacing**2), 4)
    y0 = rng.uniform(0, h, n_stems)
    x0 = rng.uniform(0, w, n_stems)
    theta = rng.uniform(0, np.pi, n_stems)
    length = rng.uniform(10.0, 36.0, n_stems) * scale
    local = density[y0.astype(int) % h, x0.astype(int) % w]
    bright = rng.uniform(0.35, 1.0, n_stems) * local**1.5
    n_branches = rng.integers(3, 8, n_stems)
    stem = np.repeat(np.arange(n_stems), n_branches)
    t = rng.uniform(0.1, 0.9, stem.size)
    side = np.where(rng.random(stem.size) < 0.5, -1.0, 1.0)
    by = y0[stem] + t * length[stem] * np.sin(theta[stem])
    bx = x0[stem] + t * length[stem] * np.cos(theta[stem])
    btheta = theta[stem] + side * np.pi / 3
    blength = length[stem] * (1 - t) * rng.uniform(0.25, 0.55, stem.size)
    return (np.concatenate([y0, by]), np.concatenate([x0, bx]), np.concatenate([theta, btheta]),
            np.concatenate([length, blength]), np.concatenate([bright, 0.75 * bright[stem]]))


def _draw(h: int, w: int, y: np.ndarray, x: np.ndarray, theta: np.ndarray, length: np.ndarray,
          bright: np.ndarray, scale: float) -> np.ndarray:
    """Accumulate segments as points every half pixel, splatted bilinearly (wrapping at the borders).
    Deposits are weighted by ``scale`` so that coverage per pixel does not depend on it (stems are
    ``scale`` times shorter but ``1 / scale**2`` times as many per pixel)."""
    steps = np.maximum(np.ceil(length / 0.5).astype(np.int64), 1) + 1
    seg = np.repeat(np.arange(y.size), steps)
    offset = np.arange(seg.size) - np.repeat(np.cumsum(steps) - steps, steps)
    frac = offset / np.maximum(steps[seg] - 1, 1)
    py = y[seg] + frac * length[seg] * np.sin(theta[seg])
    px = x[seg] + frac * length[seg] * np.cos(theta[seg])
    value = bright[seg] * 0.5 * min(scale, 1.0)  # half-pixel steps: ~1 per pixel of a full streak
    iy, ix = np.floor(py).astype(np.int64), np.floor(px).astype(np.int64)
    fy, fx = py - iy, px - ix
    acc = np.zeros(h * w)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            flat = ((iy + dy) % h) * w + (ix + dx) % w
            acc += np.bincount(flat, weights=value * wy * wx, minlength=h * w)
    return acc.reshape(h, w)


def frost_texture(height: int, width: int, variant: int, scale: float = 1.0) -> np.ndarray:
    """One texture's brightness, (height, width) float32 in [0, 1], fully determined by its arguments."""
    rng = np.random.default_rng(np.random.SeedSequence([_SEED, int(variant)]))
    h, w = int(height), int(width)
    s = max(float(scale), 1e-3)
    density = (0.55 * _lowpass(rng.standard_normal((h, w)), 45.0 * s)
               + 0.3 * _lowpass(rng.standard_normal((h, w)), 14.0 * s)
               + 0.15 * _lowpass(rng.standard_normal((h, w)), 4.0 * s))
    density = 1.0 / (1.0 + np.exp(-1.6 * density - 0.3))
    streaks = _draw(h, w, *_segments(rng, h, w, density, s), s)
    blur = max(0.6 * s, 0.5)
    streaks = np.clip(_lowpass_keep(streaks, blur), 0, None)
    crystals = 1.0 - np.exp(-2.5 * streaks)
    haze = 1.0 - np.exp(-1.2 * _lowpass_keep(streaks, 3.0 * s + 0.5))
    grain = _lowpass(rng.standard_normal((h, w)), max(0.8 * s, 0.5))
    rime = np.clip(grain - 0.5, 0, None) * density
    pattern = (0.35 * density + 0.6 * crystals * (0.4 + 0.6 * density) + 0.35 * haze * density
               + 0.2 * rime)
    # Ice over a pale pane: level and contrast set so the blue channel averages ~0.66 with spread ~0.14,
    # like the five ImageNet-C frost photos (channel means 0.3-0.8, standard deviations 0.09-0.17).
    return np.clip(0.40 + 0.75 * pattern, 0.0, 1.0).astype(np.float32)


def _lowpass_keep(image: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur that keeps the mean (for the streak image)."""
    h, w = image.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    response = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(image) * response, s=(h, w))


@functools.lru_cache(maxsize=4)
def _brightness(height: int, width: int, scale: float) -> np.ndarray:
    return np.stack([frost_texture(height, width, v, scale) for v in range(FROST_VARIANTS)])


@functools.lru_cache(maxsize=4)
def frost_textures(height: int, width: int, scale: float = 1.0, channels: int = 3) -> np.ndarray:
    """All variants, (FROST_VARIANTS, channels, height, width) float32: tinted for 3 channels, the tint's
    luma (ITU-R BT.601) for 1 channel. Cached per size (read-only)."""
    tint = np.asarray(FROST_TINT, dtype=np.float32)
    if channels == 1:
        tint = np.asarray([0.299 * tint[0] + 0.587 * tint[1] + 0.114 * tint[2]], dtype=np.float32)
    out = _brightness(int(height), int(width), float(scale))[:, None] * tint[None, :, None, None]
    out.setflags(write=False)
    return out
