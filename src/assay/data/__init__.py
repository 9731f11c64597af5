"""Data loading: NPZ, image folders, CSV/Parquet and built-in sets into one ``Dataset``.

:func:`load_data` dispatches on the spec; the format loaders are exported for direct use.
"""

from assay.data.builtin import BUILTIN_DATASETS, load_digits
from assay.data.dataset import Dataset, Modality
from assay.data.images import IMAGE_EXTENSIONS, load_image_folder
from assay.data.loader import SUPPORTED_EXTENSIONS, load_data
from assay.data.npz import load_npy, load_npz
from assay.data.tabular import load_table

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "Dataset",
    "Modality",
    "load_data",
    "load_digits",
    "load_image_folder",
    "load_npy",
    "load_npz",
    "load_table",
]
