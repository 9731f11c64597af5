"""``ModelSpec``: a serialisable description of a model that loads the same model again, in any process.

A spec holds what :func:`~assay.models.loader.load_model` was given -- the format (a key of
:data:`~assay.models.formats.FORMATS`), the model file or factory, the weights, the load options -- and
the sha256 of what was loaded. ``spec.load()`` goes through the normal loader (the same safety checks,
no unpickling) and refuses a model whose sha256 has changed since. Every model :func:`load_model`
returns carries its spec (``model.spec()``, with absolute paths and the resolved number of classes);
models built in memory (a ``Model`` subclass constructed by hand) have none and cannot cross processes.

A spec is plain data: ``spec.model_dump_json()`` and ``ModelSpec.model_validate_json(text)`` move it
between processes; nothing in it is evaluated. Files are named by absolute paths; a factory's module is
imported as by the first load (from the working directory or ``PYTHONPATH``), so the other process needs
the same working directory or import path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import numpy as np

    from assay.models.base import Model
    from assay.models.formats import ModelFiles

__all__ = ["ModelSpec"]


class ModelSpec(BaseModel):
    """Format, model file (or ``package.module:callable``), weights, load options and sha256 of a model."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    format: str = Field(description="Key of the model format registry (assay.models.formats.FORMATS).")
    path: str = Field(description="The model file, or the factory 'package.module:callable'.")
    weights: str | None = Field(default=None, description="The weights file of a factory.")
    outputs: Literal["logits", "probabilities"] = "logits"
    feature_layer: str | None = None
    feature_output: str | None = None
    threads: int | None = Field(default=None, ge=1)
    untrained: bool = False
    class_names: list[str] | None = None
    num_classes: int | None = None
    sha256: str | None = Field(default=None, description="sha256 of the loaded model (None: not pinned); "
                                                         "load() refuses a model that no longer matches.")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from assay.models.formats import FORMATS

        if value not in FORMATS:
            raise ValueError(f"unknown model format {value!r}; known: {', '.join(sorted(FORMATS))}")
        return value

    def load(self, *, sample: np.ndarray | None = None, verify: bool = True) -> Model:
        """Load the model through the normal loader (:func:`assay.models.loader.load_spec`).

        ``verify``: refuse (:class:`~assay.errors.ModelError`) a model whose sha256 differs from ``sha256``
        (skipped for an untrained factory, whose initial weights are random)."""
        from assay.models.loader import load_spec

        return load_spec(self, sample=sample, verify=verify)

    def files(self) -> ModelFiles:
        """The files that make up the model (for its size): ONNX plus external data, the archive, or a
        factory's weights."""
        from assay.models.formats import get_format

        return get_format(self.format).files(self)
