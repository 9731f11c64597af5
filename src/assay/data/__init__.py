"""Data loading: NPZ, image folders, CSV/Parquet and built-in sets into one ``Dataset``."""

from assay.data.dataset import Dataset

__all__ = ["Dataset"]
