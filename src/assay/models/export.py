"""Write a torch classifier as a single-file ONNX model with a dynamic batch dimension.

Uses the ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, the default since
torch 2.9, which needs onnxscript), falling back to the legacy TorchScript exporter for models
``torch.export`` cannot capture. Class names go into the model's ``metadata_props`` as a JSON list,
where :func:`assay.models.load_model` finds them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["export_onnx"]


def export_onnx(
    module: torch.nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    opset: int | None = None,
    input_name: str = "input",
    output_name: str = "logits",
) -> Path:
    """Export ``module`` (in eval mode) to ``path``; dimension 0 of input and output is free.

    ``example_input`` is one batch of real-shaped inputs. A batch of 1 is repeated to 2 first, because
    ``torch.export`` specializes size-1 dimensions to a constant.
    """
    import onnx
    import torch

    path = Path(path)
    module = module.eval()
    example = example_input.detach().cpu()
    if example.shape[0] == 1:
        example = example.repeat(2, *([1] * (example.ndim - 1)))
    # The exporter logs a warning per torchvision operator it cannot register; irrelevant here.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    previous_level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), dynamo=True, verbose=False, optimize=True, external_data=False,
                input_names=[input_name], output_names=[output_name], opset_version=opset,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    except Exception:  # models torch.export cannot capture (data-dependent control flow, ...)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, input_names=[input_name],
                output_names=[output_name], opset_version=opset or 17,
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            )
    finally:
        registration_log.setLevel(previous_level)
    model = onnx.load(str(path))
    # The exporter records source stack traces (absolute file paths) per node: drop them, so the same
    # module exports to the same bytes (and the same sha256 / cache key) wherever Assay is installed.
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    if class_names is not None:
        kept = [p for p in model.metadata_props if p.key != "class_names"]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key="class_names", value=json.dumps([str(c) for c in class_names]))
    onnx.save(model, str(path))
    return path
