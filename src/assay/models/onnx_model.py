"""ONNX models through onnxruntime on CPU, with penultimate features exposed as an extra graph output.

Features: by default the input of the last ``Gemm``/``MatMul`` node of the main graph (ONNX keeps
``graph.node`` in topological order), i.e. the embedding the classifier head reads; or any named value
(``feature_output``). The extra output is added to an in-memory copy of the model, never to the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import ModelError, UnsafeModelError, UserError
from assay.evidence.schema import ModelInfo
from assay.models._common import (
    check_static_shape,
    dry_run,
    first_line,
    resolve_class_names,
    resolve_num_classes,
    run_in_fixed_batches,
    sample_batch,
    sha256_file,
    short_list,
)
from assay.models.base import Model, OnnxExport, OutputKind, ThreadSetting
from assay.models.flops import ONNX_PARAMETER_CONVENTION, FlopCount, ParameterCount
from assay.models.safety import external_data_problem, shorten

__all__ = ["OnnxModel", "load_onnx", "onnx_files"]

_FEATURE_OPS = ("Gemm", "MatMul")
# protobuf refuses to serialize messages of 2 GiB or more; bigger models go through a temporary file.
_PROTO_LIMIT = 2**31 - 1


class OnnxModel(Model):
    """An ONNX classifier run by onnxruntime's CPU provider."""

    def __init__(self, session: Any, info: ModelInfo, *, input_name: str, output_name: str,
                 feature_name: str | None, input_np_dtype: np.dtype | None, fixed_batch: int | None,
                 input_rank: int | None = None, keepalive: Any = None,
                 last_layer: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.session = session
        self.info = info
        self._input_name = input_name
        self._output_name = output_name
        self._feature_name = feature_name
        self._input_np_dtype = input_np_dtype
        self._fixed_batch = fixed_batch
        self._input_rank = input_rank
        self._keepalive = keepalive  # temporary directory of a >2 GiB model, removed with the model
        self._last_layer = last_layer
        self._last_row: np.ndarray | None = None  # a valid input for release_memory's shrinking run

    def last_layer(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Weight and bias of the final Gemm (or MatMul + Add) when it maps the features to the logits."""
        return None if self._last_layer is None or self.info.outputs != "logits" else self._last_layer

    def release_memory(self) -> None:
        """Shrink onnxruntime's CPU arena: it keeps the largest batch's buffers (~60 MiB for a small CNN at
        batch 256) for the rest of the process. A shrink applies at the end of a run, so one single-row run
        with the shrink option does it; shrinking on every batch instead measured 1.7x slower inference."""
        if self._last_row is None:
            return
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.session.run([self._output_name], {self._input_name: self._last_row}, options)

    def _set_threads(self, threads: int | None) -> ThreadSetting:
        """An onnxruntime session fixes its threads when it is created: a different count reloads the model
        from its spec (same file, same checks) into a new session with that many threads."""
        current = int(self.session.get_session_options().intra_op_num_threads)
        notes: list[str] = []
        if threads is not None and threads != current:
            spec = self.spec()
            if spec is not None:
                runner = spec.model_copy(update={"threads": threads}).load()
                notes.append(f"the ONNX session had intra_op_num_threads={current}; timed a session reloaded from "
                             f"the file with {threads}")
                return ThreadSetting(runner, threads, "onnxruntime session intra_op_num_threads (reloaded)", notes)
            notes.append(f"threads={threads} not applied: the ONNX session has intra_op_num_threads={current} and "
                         "there is no file to reload it from")
        if current > 0:
            return ThreadSetting(self, current, "onnxruntime session intra_op_num_threads", notes)
        return ThreadSetting(self, os.cpu_count(), "onnxruntime default (intra_op_num_threads=0: one per core)", notes)

    def flop_count(self, sample: np.ndarray | None = None) -> FlopCount:
        """A graph count of the model file (:func:`assay.models.flops.onnx_flops`); ``sample`` fixes free
        non-batch dimensions."""
        if not Path(self.info.path).is_file():
            return super().flop_count(sample)
        from assay.models.flops import onnx_flops

        return onnx_flops(self.info.path, None if sample is None else np.asarray(sample).shape[1:])

    def parameter_count(self) -> ParameterCount:
        if not Path(self.info.path).is_file():
            return super().parameter_count()
        from assay.models.flops import onnx_parameter_count

        return ParameterCount(onnx_parameter_count(self.info.path), ONNX_PARAMETER_CONVENTION)

    def to_onnx(self, path: str | os.PathLike[str], example: np.ndarray) -> OnnxExport:
        """A copy of the model file, external data folded in (locations were checked when it was loaded)."""
        import onnx

        onnx.save(onnx.load(self.info.path), str(path))
        return OnnxExport("the given ONNX model, copied", copied=True)

    def _run(self, x: np.ndarray, want_features: bool) -> list[np.ndarray]:
        names = [self._output_name]
        if want_features and self._feature_name is not None:
            names.append(self._feature_name)
        if self._input_np_dtype is not None and x.dtype != self._input_np_dtype:
            x = x.astype(self._input_np_dtype)
        elif self._input_np_dtype is None:
            x = x.astype(object)
            if x.ndim == 1 and self._input_rank == 2:
                x = x.reshape(-1, 1)  # text data sets are (N,); string-input graphs usually take (N, 1)
        self._last_row = x[:1].copy() if self._fixed_batch in (None, 1) else x.copy()
        return self.session.run(names, {self._input_name: x})

    def _forward(self, x: np.ndarray, want_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        # A graph exported with a fixed batch size runs padded chunks of exactly that size.
        results = run_in_fixed_batches(lambda chunk: self._run(chunk, want_features), np.asarray(x),
                                       self._fixed_batch)
        feats = results[1] if len(results) > 1 else None
        return results[0], feats


def _invalid(path: str, detail: str) -> UserError:
    return ModelError(
        f"not a valid ONNX model ({detail})",
        where=path,
        fix="check that the file is complete and was written by an ONNX exporter "
        "(e.g. assay.models.export_onnx or torch.onnx.export)",
    )


def _dims(type_proto: Any) -> list[int | None] | None:
    """Static dims (None for free/symbolic ones), or None when the rank is unknown."""
    if not type_proto.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in type_proto.tensor_type.shape.dim]


def _external_files(model: Any, base: Path, where: str) -> list[Path]:
    """Files holding external tensor data (read before they are loaded, so the hash covers the weights
    too); UnsafeModelError for a location outside the model's folder (``../x``, ``/etc/x``, a link out)."""
    from onnx.external_data_helper import _get_all_tensors

    locations: list[str] = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            for entry in tensor.external_data:
                if entry.key != "location":
                    continue
                if problem := external_data_problem(entry.value, base):
                    raise UnsafeModelError(
                        f"tensor {shorten(tensor.name, 60)} keeps its data at {shorten(entry.value)}, which "
                        f"{problem}", where=where,
                        fix="keep external data files next to the model and name them by relative paths "
                        "(onnx.save(model, path, save_as_external_data=True, location='model.onnx.data'))")
                if entry.value not in locations:
                    locations.append(entry.value)
    return [base / loc for loc in locations]


def onnx_files(path: str | os.PathLike[str]) -> list[Path]:
    """The model file and its external data files (locations checked as on load: UnsafeModelError for one
    outside the model's folder)."""
    import onnx

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, ...
        raise _invalid(os.fspath(path), first_line(exc)) from exc
    return [Path(path), *_external_files(model, Path(path).parent, where=os.fspath(path))]


def _value_names(graph: Any) -> list[str]:
    """Every value name of the main graph, in topological order (inputs first)."""
    names = [i.name for i in graph.input]
    for node in graph.node:
        names.extend(o for o in node.output if o)
    return names


def _default_feature(graph: Any) -> tuple[str, str] | None:
    """(value name, description) of the input of the last Gemm/MatMul node, or None."""
    initializers = {t.name for t in graph.initializer}
    for node in reversed(graph.node):
        if node.op_type in _FEATURE_OPS and node.domain in ("", "ai.onnx"):
            data = [i for i in node.input[:2] if i and i not in initializers]
            if data:
                label = f"node '{node.name}'" if node.name else "node"
                return data[0], f"input of {node.op_type} {label} (onnx value '{data[0]}')"
    return None


def _attribute(node: Any, name: str, default: Any) -> Any:
    import onnx

    found = [a for a in node.attribute if a.name == name]
    return onnx.helper.get_attribute_value(found[0]) if found else default


def _head_weights(graph: Any, feature: str, logits: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W (C, D), b (C,))`` when constant weights map ``feature`` straight to ``logits``: one ``Gemm``
    (``transA=0``, any ``transB``/``alpha``/``beta``) or ``MatMul`` followed by ``Add`` of a constant."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attribute(node, "value", None)
            if value is not None:
                consts[node.output[0]] = numpy_helper.to_array(value)
    by_output = {o: node for node in graph.node for o in node.output}
    head = by_output.get(logits)
    if head is None:
        return None
    if head.op_type == "Gemm" and head.input[0] == feature and head.input[1] in consts \
            and not _attribute(head, "transA", 0):
        w = consts[head.input[1]].astype(np.float64)
        w = (w if _attribute(head, "transB", 0) else w.T) * float(_attribute(head, "alpha", 1.0))
        bias = consts.get(head.input[2]) if len(head.input) > 2 and head.input[2] else np.zeros(1)
        if bias is None:
            return None
        b = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1) * float(_attribute(head, "beta", 1.0)),
                            (w.shape[0],))
        return w, np.array(b)
    if head.op_type == "Add":
        matmul = next((by_output[i] for i in head.input if i in by_output and by_output[i].op_type == "MatMul"), None)
        other = [i for i in head.input if matmul is None or i not in matmul.output]
        if matmul is None or len(other) != 1 or other[0] not in consts or matmul.input[0] != feature \
                or matmul.input[1] not in consts:
            return None
        w = consts[matmul.input[1]].astype(np.float64).T
        if w.ndim != 2:
            return None
        return w, np.array(np.broadcast_to(consts[other[0]].astype(np.float64).reshape(-1), (w.shape[0],)))
    return None


def load_onnx(
    path: str,
    *,
    outputs: OutputKind = "logits",
    feature_output: str | None = None,
    threads: int | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    sample: np.ndarray | None = None,
) -> OnnxModel:
    """Load an ``.onnx`` file into an :class:`OnnxModel` (CPUExecutionProvider, explicit thread counts).

    External data locations are checked before any is read; the ``ort_config`` metadata (session
    options onnxruntime can read from a model) is dropped; no custom-operator library is ever loaded.
    """
    import onnx
    import onnxruntime as ort
    from onnx.external_data_helper import load_external_data_for_model

    base = Path(path).parent
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, ...
        raise _invalid(path, first_line(exc)) from exc
    external = _external_files(model, base, where=str(path))
    if external:
        try:
            load_external_data_for_model(model, str(base))
        except Exception as exc:  # missing or short external data file, onnx's own path checks
            raise _invalid(path, f"external data: {first_line(exc)}") from exc
    graph = model.graph
    if model.ir_version <= 0 or not graph.output or not graph.input:
        raise _invalid(path, "no graph inputs/outputs")
    props = {p.key: p.value for p in model.metadata_props}
    for i in reversed(range(len(model.metadata_props))):
        if model.metadata_props[i].key == "ort_config":
            del model.metadata_props[i]

    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(
            f"the ONNX model has {len(inputs)} inputs ({short_list([i.name for i in inputs])}); "
            "Assay runs single-input classifiers",
            where=path,
            fix="export the model with one input tensor (fold masks/extra inputs into the graph)",
        )
    input_vi = inputs[0]
    elem_type = input_vi.type.tensor_type.elem_type
    if elem_type == onnx.TensorProto.STRING:
        input_np_dtype, input_dtype = None, "string"
    else:
        input_np_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        input_dtype = str(input_np_dtype)
    input_shape = _dims(input_vi.type) or [None]
    output_vi = graph.output[0]
    output_dims = _dims(output_vi.type)

    feature_name: str | None = None
    feature_source: str | None = None
    if feature_output is not None:
        known = _value_names(graph) + [vi.name for vi in graph.value_info]
        if feature_output not in known:
            candidates = [n for n in _value_names(graph) if n not in initializers]
            raise UserError(
                f"the ONNX model has no value named {feature_output!r}",
                where=path,
                fix=f"pick one of its values, e.g. the last ones: {short_list(candidates[::-1], 10)}",
            )
        feature_name, feature_source = feature_output, f"onnx value '{feature_output}'"
    elif (default := _default_feature(graph)) is not None:
        feature_name, feature_source = default
    head = _head_weights(graph, feature_name, graph.output[0].name) if feature_name is not None else None
    if feature_name is not None and feature_name not in {o.name for o in graph.output}:
        graph.output.append(onnx.ValueInfoProto(name=feature_name))

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    keepalive = None
    try:
        if model.ByteSize() < _PROTO_LIMIT:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        else:
            keepalive = tempfile.TemporaryDirectory(prefix="assay-onnx-")
            tmp = Path(keepalive.name) / "model.onnx"
            onnx.save(model, tmp, save_as_external_data=True, location="model.onnx.data")
            session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(
            f"onnxruntime cannot load the model: {first_line(exc)}",
            where=path,
            fix="check the exporter's opset and operators against onnxruntime's CPU provider",
        ) from exc

    fixed_batch = input_shape[0] if input_shape else None
    info = ModelInfo(
        path=str(path), format="onnx", sha256=sha256_file(path, external), input_shape=input_shape,
        input_dtype=input_dtype, num_classes=2, class_names=["0", "1"], outputs=outputs,
        feature_source=feature_source,
    )
    result = OnnxModel(session, info, input_name=input_vi.name, output_name=output_vi.name,
                       feature_name=feature_name, input_np_dtype=input_np_dtype, fixed_batch=fixed_batch,
                       input_rank=len(input_shape), keepalive=keepalive, last_layer=head)

    found: int | None = None
    if output_dims is not None and len(output_dims) == 2 and output_dims[1] is not None:
        found = output_dims[1]
    elif sample is not None:
        check_static_shape(input_shape, input_dtype, sample, where=str(path))
        raw, _ = dry_run(lambda batch: result._forward(batch, False), sample_batch(sample), where=str(path))
        if raw.ndim == 2:
            found = raw.shape[1]
        else:
            raise UserError(
                f"the model returned outputs of shape {tuple(raw.shape)}, expected (N, classes)",
                where=str(path),
                fix="make the model's first output one row of class scores per input",
            )
    n_classes = resolve_num_classes(found=found, given=num_classes, where=str(path),
                                    how="its output has no static class dimension")
    stored = None
    if "class_names" in props:
        try:
            stored = json.loads(props["class_names"])
            if not isinstance(stored, list):
                raise ValueError("not a list")
        except ValueError as exc:
            raise UserError(
                "the model's metadata 'class_names' is not a JSON list of names",
                where=path,
                fix="store class names as json.dumps([...]) or pass class_names explicitly",
            ) from exc
    names = resolve_class_names(class_names, stored, n_classes, where=str(path))
    declared = resolve_class_names(None, stored, n_classes, where=str(path)) if stored is not None else None
    result.info = info.model_copy(update={"num_classes": n_classes, "class_names": names,
                                          "declared_class_names": declared})
    return result
