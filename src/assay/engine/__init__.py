"""Engine: plans views, batches forward passes, caches outputs, runs on a backend."""

from assay.engine.backends import Backend, LocalBackend, get_backend
from assay.engine.cache import OutputCache, ViewOutput, default_cache_dir
from assay.engine.run import Outputs, run_views
from assay.engine.views import CleanView, View, ViewSpec

__all__ = [
    "Backend",
    "CleanView",
    "LocalBackend",
    "OutputCache",
    "Outputs",
    "View",
    "ViewOutput",
    "ViewSpec",
    "default_cache_dir",
    "get_backend",
    "run_views",
]
