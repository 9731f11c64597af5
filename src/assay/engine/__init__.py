"""Engine: plans views, batches forward passes, caches outputs, runs on a backend."""

from assay.engine.backends import Backend, LocalBackend, get_backend
from assay.engine.cache import CacheWarning, OutputCache, ViewOutput, check_cache_dir, default_cache_dir
from assay.engine.run import Outputs, run_views
from assay.engine.views import CleanView, View, ViewSpec

__all__ = [
    "Backend",
    "CacheWarning",
    "CleanView",
    "LocalBackend",
    "OutputCache",
    "Outputs",
    "View",
    "ViewOutput",
    "ViewSpec",
    "check_cache_dir",
    "default_cache_dir",
    "get_backend",
    "run_views",
]
