"""Torch models: TorchScript archives, ``torch.export`` programs, and Python factories with weights.

All run on CPU in eval mode under ``torch.inference_mode()``. Penultimate features are read without
changing the model's outputs, by the means each format allows:

- eager modules (factory): a forward hook on the layer;
- TorchScript (hooks are not supported on ScriptModules): an inlined copy of ``forward``'s graph that
  also returns the value, compiled into a separate function sharing the module's parameters;
- ``torch.export`` (the unlifted module has no ``nn.Linear`` submodules left): a node inserted in the
  FX graph that records the value; layers are found through each node's ``nn_module_stack``.

By default the feature is the *input* of the last linear layer (the classifier head reads it); with
``feature_layer`` it is the *output* of the named module.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import itertools
import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

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
from assay.models.base import Model, OutputKind, ThreadSetting
from assay.models.pickle_scan import check_pickles
from assay.models.safety import (
    check_example_inputs,
    check_export_archive,
    check_script_node_kinds,
    check_torchscript_archive,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "TorchModel",
    "load_factory",
    "load_torch_export",
    "load_torchscript",
    "module_sha256",
    "parse_factory_spec",
    "wrap_module",
]

FACTORY_SPEC = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")

PICKLE_REFUSAL_FIX = (
    "save a state dict as .safetensors (safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')) "
    "and pass 'module:factory --weights weights.safetensors', or export the model with "
    "torch.jit.script / torch.export"
)



def _tapped(call: Callable[[Any], Any], slot: Any) -> Callable[[Any], tuple[Any, torch.Tensor | None]]:
    """Wrap ``call`` so it returns (outputs, the value the slot recorded during that call)."""

    def tap(inputs: Any) -> tuple[Any, torch.Tensor | None]:
        slot.active, slot.value = True, None
        try:
            out = call(inputs)
        finally:
            slot.active = False
        value, slot.value = slot.value, None
        return out, value

    return tap

def _pickle_refusal(path: str) -> UserError:
    return UnsafeModelError(
        "this file is a pickled Python object (e.g. torch.save(model)); Assay never unpickles untrusted files",
        where=path,
        fix=PICKLE_REFUSAL_FIX,
    )


class _Slot:
    """Where a hook or graph node drops the feature tensor while a features pass is running."""

    def __init__(self) -> None:
        self.active = False
        self.value: torch.Tensor | None = None

    def store(self, value: Any) -> None:
        if self.active:
            tensor = _first_tensor(value)
            self.value = tensor.detach().clone() if tensor is not None else None


def _first_tensor(value: Any) -> torch.Tensor | None:
    """A tensor, the first tensor of a tuple/list, a dict's 'logits' (else first) entry, or ``.logits``."""
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if (found := _first_tensor(item)) is not None:
                return found
        return None
    if isinstance(value, Mapping):
        if "logits" in value:
            return _first_tensor(value["logits"])
        return _first_tensor(next(iter(value.values()), None))
    if hasattr(value, "logits"):
        return _first_tensor(value.logits)
    return None


Tap = Callable[[Any], tuple[Any, "torch.Tensor | None"]]
TorchFormat = Literal["torchscript", "torch-export", "factory"]


class TorchModel(Model):
    """A torch classifier: ``module`` computes scores; ``tap`` computes scores and features in one pass.

    ``fixed_batch``: the batch size a ``torch.export`` graph was exported with (None when free); other
    batch sizes run as padded chunks of exactly that size, here and in :meth:`torch_module`.
    ``eager``: ``module`` is the eager module a factory built (its layers can be pruned).
    """

    def __init__(self, module: torch.nn.Module, info: ModelInfo, tap: Tap | None = None,
                 fixed_batch: int | None = None, eager: bool = False) -> None:
        self.module = module
        self.info = info
        self._tap = tap
        self._fixed_batch = fixed_batch
        self._eager = eager
        self._chunked: torch.nn.Module | None = None

    def eager_module(self) -> torch.nn.Module | None:
        return self.module if self._eager else None

    def _set_threads(self, threads: int | None) -> ThreadSetting:
        """``torch.set_num_threads`` for the process; ``restore()`` puts the previous count back."""
        import torch

        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        how = "set by torch.set_num_threads" if threads is not None else "the process's torch.get_num_threads()"
        return ThreadSetting(self, used, how, restore=lambda: torch.set_num_threads(previous))

    def torch_module(self) -> torch.nn.Module:
        """The module, accepting any batch size (a fixed-batch graph is wrapped to run padded chunks)."""
        if self._fixed_batch is None:
            return self.module
        if self._chunked is None:
            self._chunked = _fixed_batch_module(self.module, self._fixed_batch)
        return self._chunked

    def last_layer(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The last ``nn.Linear``'s weight and bias, when the default features are its input."""
        import torch

        if not (self.info.feature_source or "").startswith("input of Linear") or self.info.outputs != "logits":
            return None
        linears = [m for m in self.module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            return None
        last = linears[-1]
        bias = last.bias.detach().cpu().numpy() if last.bias is not None else np.zeros(last.out_features, np.float32)
        return last.weight.detach().cpu().numpy(), bias

    def _forward(self, x: np.ndarray, want_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        raw, feats = run_in_fixed_batches(lambda chunk: self._forward_batch(chunk, want_features), np.asarray(x),
                                          self._fixed_batch)
        return raw, feats

    def _forward_batch(self, x: np.ndarray, want_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        inputs = to_torch_inputs(x)
        with torch.inference_mode():
            if want_features and self._tap is not None:
                out, feats = self._tap(inputs)
                if feats is None:
                    raise UserError(
                        f"the feature layer ({self.info.feature_source}) did not run in the forward pass",
                        where=self.info.path,
                        fix="choose a layer that runs for every input (--feature-layer)",
                    )
            else:
                out, feats = self.module(inputs), None
        scores = _first_tensor(out)
        if scores is None:
            raise UserError(
                f"the model returned {type(out).__name__}, not a tensor of class scores",
                where=self.info.path,
                fix="return a (N, classes) tensor, a tuple starting with one, or an object with .logits",
            )
        raw = scores.detach().to(torch.float32).numpy()
        feat_np = feats.detach().to(torch.float32).reshape(len(feats), -1).numpy() if feats is not None else None
        return raw, feat_np


def _fixed_batch_module(inner: torch.nn.Module, batch: int) -> torch.nn.Module:
    """``inner`` (exported with batch size ``batch``) as a module accepting any batch size: padded chunks
    of that size, joined with ``torch.cat`` (differentiable; padding rows are dropped before use)."""
    import torch

    class FixedBatch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.training = False  # the unlifted graph refuses .eval(); it keeps its export-time mode

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            def run(chunk: torch.Tensor) -> tuple[torch.Tensor]:
                scores = _first_tensor(self.inner(chunk))
                if scores is None:
                    raise TypeError("the model returned no tensor of class scores")
                return (scores,)

            return run_in_fixed_batches(run, x, batch, concatenate=torch.cat)[0]

    return FixedBatch()


def to_torch_inputs(x: np.ndarray) -> Any:
    """float arrays -> float32 tensor, integer arrays -> tensor as is, string arrays -> list[str]."""
    import torch

    x = np.asarray(x)
    if x.dtype == object or x.dtype.kind in "US":
        return [str(v) for v in x]
    if x.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.from_numpy(np.ascontiguousarray(x))


# --------------------------------------------------------------------------- eager modules (hooks)


def _hook_tap(module: torch.nn.Module, feature_layer: str | None, where: str) -> tuple[Tap | None, str | None]:
    """A forward hook on the last ``nn.Linear`` (its input) or on ``feature_layer`` (its output)."""
    import torch

    modules = dict(module.named_modules())
    slot = _Slot()
    if feature_layer is not None:
        if feature_layer not in modules or feature_layer == "":
            raise UserError(
                f"the model has no module named {feature_layer!r}",
                where=where,
                fix=f"pick one of: {short_list([n for n in modules if n], 20)}",
            )
        layer = modules[feature_layer]
        layer.register_forward_hook(lambda _m, _args, output: slot.store(output))
        source = f"output of {type(layer).__name__} '{feature_layer}'"
    else:
        linears = [name for name, m in modules.items() if isinstance(m, torch.nn.Linear)]
        if not linears:
            return None, None
        name = linears[-1]
        modules[name].register_forward_hook(lambda _m, args, _output: slot.store(args[0] if args else None))
        source = f"input of Linear '{name}'"

    return _tapped(module, slot), source


# --------------------------------------------------------------------------- TorchScript (graph rewrite)

_HIERARCHY_PART = re.compile(r"([^.()]+)\(([^()]*)\)")


def _script_node_path(node: Any) -> str:
    """Module path of an inlined TorchScript node: ``head(Sequential).0(Linear)`` -> ``head.0``."""
    try:
        hierarchy = node.getModuleHierarchy()
    except Exception:
        return ""
    return ".".join(name for name, _kind in _HIERARCHY_PART.findall(hierarchy))


def _is_tensor_value(value: Any) -> bool:
    return value.type().kind() == "TensorType"


def _script_tap(module: Any, feature_layer: str | None, where: str) -> tuple[Tap | None, str | None]:
    """Compile a copy of ``forward`` that also returns the feature value; None when it cannot be found."""
    import torch

    modules = {name: getattr(m, "original_name", type(m).__name__) for name, m in module.named_modules()}
    if feature_layer is not None and (feature_layer not in modules or feature_layer == ""):
        raise UserError(
            f"the model has no module named {feature_layer!r}",
            where=where,
            fix=f"pick one of: {short_list([n for n in modules if n], 20)}",
        )
    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    nodes = list(graph.nodes())
    value = None
    if feature_layer is not None:
        inside = [n for n in nodes
                  if (p := _script_node_path(n)) == feature_layer or p.startswith(feature_layer + ".")]
        produced = [o for n in inside if n.kind() != "prim::GetAttr" for o in n.outputs() if _is_tensor_value(o)]
        if not produced:
            raise UserError(
                f"module {feature_layer!r} computes no tensor in the TorchScript graph (an Identity or an "
                "unused layer?)",
                where=where,
                fix="choose another --feature-layer",
            )
        value = produced[-1]
        source = f"output of {modules[feature_layer]} '{feature_layer}'"
    else:
        linears = [n for n in nodes if n.kind() == "aten::linear"]
        if not linears:
            return None, None
        named = [name for name, kind in modules.items() if kind == "Linear"]
        chosen = [n for n in linears if named and _script_node_path(n) == named[-1]]
        node = chosen[-1] if chosen else linears[-1]
        value = node.inputsAt(0)
        path = _script_node_path(node)
        source = f"input of Linear '{path}'" if path else "input of the last aten::linear"
    try:
        graph.registerOutput(value)
        graph.makeMultiOutputIntoTuple()
        graph.lint()
        function = torch._C._create_function_from_graph("assay_forward_with_features", graph)
    except Exception:  # private TorchScript API: if it refuses, the model simply has no features
        return None, None
    c_module = module._c

    def tap(inputs: Any) -> tuple[Any, torch.Tensor | None]:
        out, feats = function(c_module, inputs)
        return out, feats

    return tap, source


def load_torchscript(path: str, *, outputs: OutputKind = "logits", feature_layer: str | None = None,
                     class_names: list[str] | None = None, num_classes: int | None = None,
                     sample: np.ndarray | None = None) -> TorchModel:
    """Load a TorchScript archive (``torch.jit.save``).

    Its code is checked before ``torch.jit.load`` compiles it, and the loaded graphs again before they
    run (:func:`assay.models.safety.check_torchscript_archive`); files that are not zip archives are
    never handed to ``torch.jit.load``.
    """
    import zipfile

    import torch

    if not zipfile.is_zipfile(path):
        raise _explain_unloadable_pt(path, ModelError("not a zip archive (torch.jit.save writes one)"))
    check_pickles(path, fix=PICKLE_REFUSAL_FIX)  # data.pkl, constants.pkl: only tensors and the archive's classes
    check_torchscript_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated from torch 2.10
            module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise _explain_unloadable_pt(path, exc) from exc
    check_script_node_kinds(_script_node_kinds(module), where=path)
    module.eval()
    try:
        tap, source = _script_tap(module, feature_layer, where=path)
    except UserError:
        raise
    except Exception as exc:  # the graph rewrite uses private TorchScript APIs; never fail a load over it
        if feature_layer is not None:
            raise UserError(f"cannot read layer {feature_layer!r} of this TorchScript model: {first_line(exc)}",
                            where=path, fix="drop --feature-layer (logits still work)") from exc
        tap, source = None, None
    return _finish(module, tap, source, path=path, fmt="torchscript", sha256=sha256_file(path),
                   input_shape=None, input_dtype=None, outputs=outputs, class_names=class_names,
                   num_classes=num_classes, sample=sample)


def _script_node_kinds(module: Any) -> set[str]:
    """Kinds (``aten::linear``) of every node, nested blocks included, of every method of every
    submodule, with calls to other methods and functions inlined."""
    import torch

    kinds: set[str] = set()
    for sub in module.modules():
        for name in sub._c._method_names():
            graph = sub._c._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            blocks = [graph.block()]
            while blocks:
                for node in blocks.pop().nodes():
                    kinds.add(node.kind())
                    blocks.extend(node.blocks())
    return kinds


def _explain_unloadable_pt(path: str, exc: BaseException) -> UserError:
    """Why ``torch.jit.load`` failed: a pickled module, a bare state dict, an export archive, or junk."""
    import pickle

    import torch

    with open(path, "rb") as fh:
        head = fh.read(2)
    if not head.startswith((b"PK", b"\x80")):  # neither a zip archive nor a (legacy) pickle
        return ModelError(
            f"not a TorchScript model: {first_line(exc)}",
            where=path,
            fix="save the model with torch.jit.save(torch.jit.script(model), path) or torch.export.save "
            "(to a .pt2 file)",
        )
    try:
        check_pickles(path, fix=PICKLE_REFUSAL_FIX)
    except UnsafeModelError as unsafe:
        return unsafe
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as load_exc:
        if "weights only load failed" in str(load_exc).lower():
            return _pickle_refusal(path)
        return UserError(
            f"not a TorchScript model: {first_line(exc)}",
            where=path,
            fix="save the model with torch.jit.save(torch.jit.script(model), path) or torch.export.save",
        )
    except Exception:
        return UserError(
            f"not a TorchScript model: {first_line(exc)}",
            where=path,
            fix="save the model with torch.jit.save(torch.jit.script(model), path) or torch.export.save "
            "(to a .pt2 file)",
        )
    kind = "a state dict (weights without code)" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
    return UserError(
        f"this file holds {kind}, not a TorchScript model",
        where=path,
        fix="pass the code that builds the model as 'package.module:factory' with --weights pointing at this "
        "file, or export with torch.jit.script / torch.export",
    )


# --------------------------------------------------------------------------- torch.export (FX graph rewrite)


def _fx_module_path(node: Any) -> tuple[str, str]:
    """(fqn, class name) of the innermost module a node of an exported graph came from."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    fqn, kind = list(stack.values())[-1]
    kind_name = kind.rsplit(".", 1)[-1] if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    return fqn, kind_name


def _fx_modules(graph: Any) -> dict[str, str]:
    """fqn -> class name of every module the exported graph's nodes came from, in order of first use."""
    found: dict[str, str] = {}
    for node in graph.nodes:
        for fqn, kind in (node.meta.get("nn_module_stack") or {}).values():
            if fqn and fqn not in found:
                found[fqn] = kind.rsplit(".", 1)[-1] if isinstance(kind, str) else getattr(kind, "__name__", "")
    return found


def _export_tap(gm: Any, feature_layer: str | None, where: str) -> tuple[Tap | None, str | None]:
    """Insert a recording node into the unlifted graph; the module's outputs are unchanged."""
    import torch

    aten = torch.ops.aten
    graph = gm.graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    if feature_layer is not None:
        modules = _fx_modules(graph)
        if feature_layer not in modules:
            raise UserError(
                f"the exported model has no module named {feature_layer!r}",
                where=where,
                fix=f"pick one of: {short_list(list(modules), 20)}",
            )
        inside = [n for n in calls
                  if (p := _fx_module_path(n)[0]) == feature_layer or p.startswith(feature_layer + ".")]
        inside = [n for n in inside if isinstance(n.meta.get("val"), torch.Tensor)]
        if not inside:
            raise UserError(
                f"module {feature_layer!r} computes no tensor in the exported graph",
                where=where,
                fix="choose another --feature-layer",
            )
        target, anchor = inside[-1], inside[-1]
        source = f"output of {modules[feature_layer]} '{feature_layer}'"
        after = True
    else:
        # linear, or its decompositions: addmm(bias, input, weight.T), mm / matmul(input, weight.T)
        input_arg = {aten.linear.default: 0, aten.addmm.default: 1, aten.mm.default: 0, aten.matmul.default: 0}
        heads = [n for n in calls if n.target in input_arg]
        if not heads:
            return None, None
        anchor = heads[-1]
        target = anchor.args[input_arg[anchor.target]]
        fqn, kind = _fx_module_path(anchor)
        source = f"input of {kind or 'linear'} '{fqn}'" if fqn else f"input of the last {anchor.target}"
        after = False
    slot = _Slot()
    with (graph.inserting_after(anchor) if after else graph.inserting_before(anchor)):
        graph.call_function(slot.store, (target,))
    gm.recompile()

    return _tapped(gm, slot), source


class _NoUnpickling:
    """While loading a ``.pt2``, make every unpickling step safe or refused.

    ``torch.export.load`` unpickles with ``torch.load(weights_only=False)`` (pickled weights and constants,
    and as a *fallback* for example inputs), ``pickle.loads`` (opaque constants) and
    ``torch._C._pickle_load_obj`` (torchbind objects): a crafted archive runs code. Inside this context
    ``torch.load`` is forced to ``weights_only=True`` and the other two refuse (``check_export_archive``
    refuses such archives earlier; this is the second line). Not thread-safe: it patches module
    attributes for the duration of the load.
    """

    def __init__(self) -> None:
        self.refused = False
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> _NoUnpickling:
        import pickle
        import types

        import torch
        from torch.export.pt2_archive import _package

        real_load = torch.load

        def tensors_only_load(*args: Any, **kwargs: Any) -> Any:
            kwargs["weights_only"] = True
            try:
                return real_load(*args, **kwargs)
            except pickle.UnpicklingError:
                self.refused = True
                raise

        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            self.refused = True
            raise pickle.UnpicklingError("Assay refuses to unpickle an arbitrary Python object")

        stub = types.SimpleNamespace(**{k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
        stub.loads = refuse
        stub.load = refuse
        patches = ((torch, "load", tensors_only_load), (_package, "pickle", stub),
                   (torch._C, "_pickle_load_obj", refuse))  # torchbind objects: their __setstate__ runs
        for owner, name, value in patches:
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        self._saved.clear()


def load_torch_export(path: str, *, outputs: OutputKind = "logits", feature_layer: str | None = None,
                      class_names: list[str] | None = None, num_classes: int | None = None,
                      sample: np.ndarray | None = None) -> TorchModel:
    """Load a ``torch.export.save`` archive and run its unlifted module (``ExportedProgram.module()``).

    The archive's JSON is checked before torch reads it (:func:`assay.models.safety.check_export_archive`:
    shape expressions, guards, operators, names), loading unpickles nothing (``_NoUnpickling``), and the
    module is unlifted without generated guard code. A graph exported with a fixed batch size runs any
    batch size as padded chunks.
    """
    import torch

    check_export_archive(path)
    check_pickles(path, fix="re-export with tensor-only example inputs and weights: "
                  "torch.export.save(torch.export.export(model, (example_tensor,)), 'model.pt2')")
    guard = _NoUnpickling()
    try:
        with guard:
            program = torch.export.load(path)
    except Exception as exc:
        if guard.refused:
            raise UnsafeModelError(
                "this torch.export archive holds pickled Python objects (weights, constants or example inputs "
                "that are not plain tensors); Assay never unpickles untrusted files",
                where=path,
                fix="re-export with tensor-only example inputs and weights: "
                "torch.export.save(torch.export.export(model, (example_tensor,)), 'model.pt2')",
            ) from exc
        raise ModelError(
            f"not a torch.export archive: {first_line(exc)}",
            where=path,
            fix="save the model with torch.export.save(torch.export.export(model, (example,)), 'model.pt2')",
        ) from exc
    if program.example_inputs is not None:
        check_example_inputs((key_path for key_path, _ in torch.utils._pytree.tree_flatten_with_path(
            program.example_inputs)[0]), where=path)
    gm = program.module(check_guards=False)
    # The graph keeps the train/eval behaviour it was exported with; unlifted modules refuse .eval().
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    input_shape: list[int | None] | None = None
    input_dtype: str | None = None
    found_classes: int | None = None
    if len(placeholders) == 1 and isinstance(val := placeholders[0].meta.get("val"), torch.Tensor):
        input_shape = [d if isinstance(d, int) else None for d in val.shape]
        input_dtype = str(val.dtype).removeprefix("torch.")
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    out_vals = [a.meta.get("val") for a in torch.utils._pytree.tree_leaves(output_node.args)
                if hasattr(a, "meta")]
    if out_vals and isinstance(out_vals[0], torch.Tensor) and out_vals[0].ndim == 2:
        dim = out_vals[0].shape[1]
        found_classes = dim if isinstance(dim, int) else None
    tap, source = _export_tap(gm, feature_layer, where=path)
    fixed_batch = input_shape[0] if input_shape and isinstance(input_shape[0], int) else None
    return _finish(gm, tap, source, path=path, fmt="torch-export", sha256=sha256_file(path),
                   input_shape=input_shape, input_dtype=input_dtype, outputs=outputs, class_names=class_names,
                   num_classes=num_classes, sample=sample, found_classes=found_classes, fixed_batch=fixed_batch)


# --------------------------------------------------------------------------- factory + weights


def parse_factory_spec(spec: str) -> tuple[str, str]:
    """``'package.module:callable'`` -> (module, attribute path); UserError when malformed."""
    match = FACTORY_SPEC.match(spec.strip())
    if not match:
        raise UserError(
            f"{spec!r} is not a model file or a factory spec",
            where=spec,
            fix="give a model file (.onnx, .pt, .pt2) or 'package.module:callable' (e.g. 'mynets:make_resnet') "
            "with --weights",
        )
    return match["module"], match["attr"]


def _import_factory(spec: str) -> Callable[[], Any]:
    module_name, attr = parse_factory_spec(spec)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise UserError(
                f"cannot import module {module_name!r}",
                where=spec,
                fix=f"run from the directory that contains {module_name.split('.')[0]!r}, or add it to PYTHONPATH",
            ) from exc
        raise UserError(f"importing {module_name!r} failed: {exc}", where=spec,
                        fix=f"install {missing!r} or fix the import") from exc
    except Exception as exc:
        raise UserError(f"importing {module_name!r} failed: {type(exc).__name__}: {first_line(exc)}",
                        where=spec, fix="fix the error in the module") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module {module_name!r} has no attribute {attr!r}", where=spec,
                            fix="check the name after the colon")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{attr!r} in {module_name!r} is not callable", where=spec,
                        fix="point at a function or class that builds the model")
    return obj


def read_state_dict(weights: str) -> dict[str, torch.Tensor]:
    """Tensors from ``.safetensors`` or a torch state dict (``torch.load(weights_only=True)``)."""
    import pickle

    import torch

    if not os.path.isfile(weights):
        raise UserError("weights file not found", where=weights, fix="check the --weights path")
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(weights, device="cpu")
        except Exception as exc:
            raise UserError(f"not a valid safetensors file: {first_line(exc)}", where=weights,
                            fix="write it with safetensors.torch.save_file(model.state_dict(), path)") from exc
    check_pickles(weights, fix=PICKLE_REFUSAL_FIX)
    try:
        obj = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise _pickle_refusal(weights) from exc
        raise UserError(f"cannot read the weights file: {first_line(exc)}", where=weights,
                        fix="give a .safetensors file or a torch.save(model.state_dict()) file") from exc
    except Exception as exc:
        raise UserError(f"cannot read the weights file: {first_line(exc)}", where=weights,
                        fix="give a .safetensors file or a torch.save(model.state_dict()) file") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # training checkpoints (Lightning and friends) nest the weights
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("the weights file does not hold a state dict (a mapping of names to tensors)",
                        where=weights, fix="save model.state_dict(), preferably with safetensors")
    return dict(obj)


def _load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = module.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        shown = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise UserError(f"the weights do not fit the model ({len(wrong)} tensor(s) of another shape: {shown})",
                        where=where, fix="use the factory that matches these weights (same architecture and sizes)")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UserError(f"the weights do not fit the model: {first_line(exc, 500)}", where=where,
                        fix="use the factory that matches these weights (same architecture and sizes)") from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {short_list(missing, 5)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {short_list(unexpected, 5)}")
        fix = "use the factory that matches these weights"
        if unexpected and all(k.startswith("module.") for k in unexpected):
            fix += " (the keys start with 'module.': strip that DataParallel prefix before saving)"
        raise UserError("the weights do not match the model: " + "; ".join(parts), where=where, fix=fix)


def load_factory(spec: str, *, weights: str | None = None, outputs: OutputKind = "logits",
                 feature_layer: str | None = None, class_names: list[str] | None = None,
                 num_classes: int | None = None, sample: np.ndarray | None = None) -> TorchModel:
    """Build the model with ``package.module:callable`` (no arguments) and load ``weights`` into it.

    ``info.sha256`` is sha256(spec + NUL + weights file bytes); without weights, the built module's
    tensors (name + NUL + raw bytes, sorted by name) take the place of the file.
    """
    import torch

    factory = _import_factory(spec)
    state = read_state_dict(weights) if weights is not None else None
    try:
        module = factory()
    except Exception as exc:
        raise UserError(f"the factory {spec!r} failed: {type(exc).__name__}: {first_line(exc)}", where=spec,
                        fix="the factory must build the model when called with no arguments") from exc
    if not isinstance(module, torch.nn.Module):
        raise UserError(f"the factory {spec!r} returned {type(module).__name__}, not a torch.nn.Module",
                        where=spec, fix="return the nn.Module itself")
    module = module.to("cpu")
    h = hashlib.sha256(spec.encode("utf-8") + b"\0")
    if state is not None and weights is not None:
        _load_weights(module, state, where=weights)
        with open(weights, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    else:
        _hash_tensors(h, module.state_dict().items())
    module.eval()
    tap, source = _hook_tap(module, feature_layer, where=spec)
    return _finish(module, tap, source, path=spec, weights=weights, fmt="factory", sha256=h.hexdigest(),
                   input_shape=None, input_dtype=None, outputs=outputs, class_names=class_names,
                   num_classes=num_classes, sample=sample, eager=True)


# --------------------------------------------------------------------------- in-memory modules


def wrap_module(module: torch.nn.Module, *, sample: np.ndarray, name: str | None = None,
                outputs: OutputKind = "logits", feature_layer: str | None = None,
                class_names: list[str] | None = None, num_classes: int | None = None) -> TorchModel:
    """A ``torch.nn.Module`` in memory as a Model: a factory model without a file (``spec()`` is None, so it
    runs in this process only; gradients are there for white-box attacks and ODIN).

    Assay evaluates an eval-mode copy of the module on the CPU (parameters and buffers copied there
    directly, never twice on the module's device): the caller's module keeps its training mode, device, hooks
    and weights whatever the evaluation does. ``sample`` (a few input rows) gives the number of classes by a
    dry run; ``info.sha256`` is :func:`module_sha256` (the cache key: the same module hits the cache, a changed
    one is another model). ``name`` is the model's ``info.path`` (default ``<in-memory ClassName>``).
    """
    import torch

    path = name or f"<in-memory {getattr(module, 'original_name', type(module).__qualname__)}>"
    copied = _cpu_copy(module, where=path)
    with contextlib.suppress(NotImplementedError):  # an unlifted torch.export graph keeps its export-time mode
        copied.eval()
    scripted = isinstance(copied, torch.jit.ScriptModule)  # hooks do not run on ScriptModules: a graph tap
    try:
        tap, source = (_script_tap if scripted else _hook_tap)(copied, feature_layer, where=path)
    except UserError:
        raise
    except Exception as exc:  # the TorchScript rewrite uses private APIs: without it the model has no features
        if feature_layer is not None:
            raise UserError(f"cannot read layer {feature_layer!r} of this module: {first_line(exc)}", where=path,
                            fix="drop feature_layer (logits still work)") from exc
        tap, source = None, None
    return _finish(copied, tap, source, path=path, fmt="factory", sha256=module_sha256(copied), input_shape=None,
                   input_dtype=None, outputs=outputs, class_names=class_names, num_classes=num_classes,
                   sample=sample, eager=not scripted)


def _cpu_copy(module: torch.nn.Module, where: str) -> torch.nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are CPU copies made straight from the originals
    (``deepcopy``'s memo is seeded with them: a module on a GPU is not duplicated there first)."""
    import copy

    import torch

    memo: dict[int, Any] = {}
    devices = {t.device.type for t in itertools.chain(module.parameters(), module.buffers())}
    if "meta" in devices:
        raise ModelError("the module's tensors are on the 'meta' device: they hold no values to evaluate",
                         where=where, fix="materialize the weights first, e.g. module.to_empty(device='cpu') and "
                         "module.load_state_dict(state)")
    elsewhere = bool(devices - {"cpu"})
    try:
        if elsewhere:
            for tensor in itertools.chain(module.parameters(), module.buffers()):
                data = tensor.detach().to("cpu", copy=True)
                memo[id(tensor)] = (torch.nn.Parameter(data, requires_grad=tensor.requires_grad)
                                    if isinstance(tensor, torch.nn.Parameter) else data)
        copied = copy.deepcopy(module, memo)
        if elsewhere:  # what the memo did not reach (a ScriptModule copies in C++)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # ScriptModules warn about .grad of non-leaves
                copied = copied.to("cpu")
        return copied
    except Exception as exc:
        raise ModelError(f"the module cannot be copied for evaluation: {type(exc).__name__}: {first_line(exc)}",
                         where=where, fix="make it deep-copyable (no open files, locks or generators as attributes), "
                         "or save it and pass the file: torch.jit.save(torch.jit.script(model), 'model.pt'), or "
                         "a factory 'module:callable' with --weights") from exc


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 of an in-memory module: every submodule's name, class and ``extra_repr``, the bytecode of the
    methods of every class of its own (not torch's) in their MROs (TorchScript: the compiled code), and every
    parameter and buffer (name, dtype, shape, bytes). The same module gives the same digest in any process;
    other weights, buffers, layers or ``forward`` code give another. Not covered: code the module calls outside
    its classes (a module-level function) and plain tensor attributes that are not registered buffers."""
    import torch

    h = hashlib.sha256(b"assay in-memory torch module\0")
    classes: dict[type, None] = {}
    for name, sub in module.named_modules():
        kind = type(sub)
        h.update(f"{name}\0{kind.__module__}.{kind.__qualname__}\0{sub.extra_repr()}\0".encode())
        if isinstance(sub, torch.jit.ScriptModule):
            try:
                h.update(sub.code.encode())
            except Exception:  # a submodule without methods of its own has no code to show
                h.update(b"\0")
        classes.update(dict.fromkeys(c for c in kind.__mro__
                                     if not c.__module__.startswith(("torch.", "builtins")) and c is not object))
    for kind in classes:
        for attr, value in sorted(vars(kind).items()):
            code = getattr(getattr(value, "__func__", value), "__code__", None)
            if code is not None:
                h.update(f"{kind.__qualname__}.{attr}\0".encode())
                _hash_code(h, code)
    tensors = [*module.named_parameters(), *module.named_buffers()]
    h.update("".join(f"{n}:{t.dtype}:{tuple(t.shape)}\0" for n, t in sorted(tensors, key=lambda i: i[0])).encode())
    _hash_tensors(h, tensors)
    return h.hexdigest()


def _hash_code(h: Any, code: types.CodeType) -> None:
    """Bytecode, names and constants of ``code`` and the code objects nested in it, without the addresses and
    hash-seeded set orders that ``repr`` would bring in."""
    h.update(code.co_code)
    h.update("\0".join(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(h, const)
        elif isinstance(const, frozenset):
            h.update(repr(sorted(map(repr, const))).encode())
        else:
            h.update(repr(const).encode())


def _hash_tensors(h: Any, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Feed ``h`` each tensor's name, NUL and raw bytes, sorted by name (without copying the bytes of CPU
    tensors; numpy has no bfloat16, so bytes are read through a uint8 view)."""
    import torch

    for name, tensor in sorted(named, key=lambda item: item[0]):
        h.update(name.encode() + b"\0")
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        try:
            h.update(flat.view(torch.uint8).numpy())
        except (RuntimeError, TypeError):  # quantized or other exotic dtypes: their integer representation
            h.update(flat.int_repr().numpy().tobytes() if flat.is_quantized else repr(flat.tolist()).encode())


# --------------------------------------------------------------------------- shared tail


def _finish(module: Any, tap: Tap | None, source: str | None, *, path: str, fmt: TorchFormat, sha256: str,
            input_shape: list[int | None] | None, input_dtype: str | None, outputs: OutputKind,
            class_names: list[str] | None, num_classes: int | None, sample: np.ndarray | None,
            found_classes: int | None = None, fixed_batch: int | None = None, weights: str | None = None,
            eager: bool = False) -> TorchModel:
    """Fill in what the file does not say (shape, dtype, classes) from a dry run on ``sample``."""
    if sample is not None:
        sample = np.asarray(sample)
        text = sample.dtype == object or sample.dtype.kind in "US"
        if input_shape is None:
            input_shape = [None] if text else [None, *sample.shape[1:]]
        if input_dtype is None:
            input_dtype = "string" if text else ("float32" if sample.dtype.kind == "f" else str(sample.dtype))
        check_static_shape(input_shape, input_dtype, sample, where=path)
        info = ModelInfo(path=path, weights=weights, format=fmt, sha256=sha256, input_shape=input_shape,
                         input_dtype=input_dtype, num_classes=2, class_names=["0", "1"], outputs=outputs,
                         feature_source=source)
        probe = TorchModel(module, info, tap, fixed_batch)
        raw, _ = dry_run(lambda batch: probe._forward(batch, False), sample_batch(sample), where=path)
        if raw.ndim != 2:
            raise UserError(f"the model returned outputs of shape {tuple(raw.shape)}, expected (N, classes)",
                            where=path, fix="return one row of class scores per input")
        found_classes = raw.shape[1]
    n_classes = resolve_num_classes(found=found_classes, given=num_classes, where=path,
                                    how="torch models do not declare their output size")
    info = ModelInfo(
        path=path, weights=weights, format=fmt, sha256=sha256, input_shape=input_shape or [None],
        input_dtype=input_dtype or "float32", num_classes=n_classes,
        class_names=resolve_class_names(class_names, None, n_classes, where=path), outputs=outputs,
        feature_source=source,
    )
    return TorchModel(module, info, tap, fixed_batch, eager)
