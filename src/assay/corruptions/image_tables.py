"""Severity parameters of the image corruptions, copied from the published Apache-2.0 definitions.

Two tables, one per image scale (Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations"):

- ``CIFAR_TABLE``: ``ImageNet-C/create_c/make_cifar_c.py`` in github.com/hendrycks/robustness (the script
  that made CIFAR-10-C / CIFAR-100-C, 32x32 images);
- ``IMAGENET_TABLE``: ``ImageNet-C/create_c/make_imagenet_c.py`` in the same repository (ImageNet-C,
  224x224 images). The same numbers are in ``imagecorruptions/corruptions.py`` of the ``imagecorruptions``
  package (bethgelab, Apache-2.0), which we follow where it generalizes the script to other sizes and to
  grayscale.

Entry ``s - 1`` of each list is severity ``s``. The tuples keep the scripts' order, named in
``PARAMETER_NAMES``. Pixel-valued parameters (blur radii, displacements, the elastic field) are used as
published, in pixels, whatever the image size: the table is chosen by size (``table="auto"``) so they
are applied at roughly the scale they were tuned for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CIFAR_TABLE", "DESIGN_SIZE", "FROST_SCALE", "IMAGENET_TABLE", "PARAMETER_NAMES", "TABLES"]

#: What the entries of each corruption's tuples are (order as in the published scripts).
PARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "gaussian_noise": ("std",),
    "shot_noise": ("photons per unit intensity",),
    "impulse_noise": ("fraction of values replaced",),
    "speckle_noise": ("multiplicative std",),
    "gaussian_blur": ("sigma",),
    "glass_blur": ("sigma", "max displacement", "iterations"),
    "defocus_blur": ("disk radius", "anti-alias sigma"),
    "motion_blur": ("radius", "sigma"),
    "zoom_blur": ("zoom factors",),
    "fog": ("strength", "wibble decay"),
    "frost": ("image weight", "frost weight"),
    "snow": ("mean", "std", "zoom", "threshold", "blur radius", "blur sigma", "image weight"),
    "spatter": ("mean", "std", "sigma", "threshold", "intensity / mud sigma", "mud (1) or water (0)"),
    "contrast": ("contrast factor",),
    "brightness": ("value shift",),
    "saturate": ("saturation factor", "saturation shift"),
    "jpeg_compression": ("quality",),
    "pixelate": ("downscale factor",),
    "elastic_transform": ("alpha", "sigma", "affine displacement"),
}

# make_cifar_c.py (hendrycks/robustness, Apache-2.0). Elastic: the script writes IMSIZE * f with IMSIZE = 32.
_CIFAR = 32
CIFAR_TABLE: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95),
             (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0),
                (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "elastic_transform": [(_CIFAR * 0, _CIFAR * 0, _CIFAR * 0.08),
                          (_CIFAR * 0.05, _CIFAR * 0.2, _CIFAR * 0.07),
                          (_CIFAR * 0.08, _CIFAR * 0.06, _CIFAR * 0.06),
                          (_CIFAR * 0.1, _CIFAR * 0.04, _CIFAR * 0.05),
                          (_CIFAR * 0.1, _CIFAR * 0.03, _CIFAR * 0.03)],
}

# make_imagenet_c.py (hendrycks/robustness, Apache-2.0); identical numbers in imagecorruptions/corruptions.py
# (bethgelab, Apache-2.0) except elastic_transform, where we keep the ImageNet-C script's values ("244 should
# have been 224, but ultimately nothing is incorrect", says its comment).
IMAGENET_TABLE: dict[str, list[Any]] = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
    "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
    "gaussian_blur": [1, 2, 3, 4, 6],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                  np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
    "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8),
             (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0),
                (0.65, 0.3, 3, 0.68, 0.6, 0),
                (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1),
                (0.67, 0.4, 1, 0.65, 1.5, 1)],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "elastic_transform": [(244 * 2, 244 * 0.7, 244 * 0.1),
                          (244 * 2, 244 * 0.08, 244 * 0.2),
                          (244 * 0.05, 244 * 0.01, 244 * 0.02),
                          (244 * 0.07, 244 * 0.01, 244 * 0.02),
                          (244 * 0.12, 244 * 0.01, 244 * 0.02)],
}

TABLES: dict[str, dict[str, list[Any]]] = {"cifar": CIFAR_TABLE, "imagenet": IMAGENET_TABLE}

#: The image side (pixels) each table's parameters were tuned for: CIFAR-10-C is 32x32, ImageNet-C 224x224.
DESIGN_SIZE: dict[str, int] = {"cifar": 32, "imagenet": 224}

#: How much smaller the frost texture's features are in the CIFAR script: it shrinks the frost photos to
#: 0.2 of their size before cropping 32x32 patches (make_cifar_c.py); ImageNet-C crops them at full size.
FROST_SCALE: dict[str, float] = {"cifar": 0.2, "imagenet": 1.0}
