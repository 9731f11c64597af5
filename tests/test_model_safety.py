"""A crafted model file must never run code (or touch files) when Assay loads or runs it.

Each attack test first shows the payload *does* run through the library's own loader (so the test
exercises a real path, and notices if torch stops evaluating that field), then that Assay refuses the
file with UnsafeModelError and the payload's canary file is never created. Payloads are harmless: they
touch or modify a file under ``tmp_path``.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import json
import sys
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sympy
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from torch import Tensor, nn

from assay.cli import main
from assay.errors import ModelError, UnsafeModelError
from assay.models import load_model
from assay.models._common import run_in_fixed_batches
from assay.models.safety import (
    AUDITED_EXPORT_SCHEMA,
    MAX_INTEGER,
    SYMPY_FUNCTIONS,
    check_export_document,
    check_script_node_kinds,
    expression_problem,
    external_data_problem,
    guard_problem,
    operator_problem,
    torchscript_source_problem,
    treespec_problem,
)
from assay.models.torch_models import _script_node_kinds

SRC = Path(__file__).resolve().parents[1] / "src" / "assay"


def _touch(path: Path) -> str:
    return f"__import__('pathlib').Path({str(path)!r}).touch()"


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """An eager net, its dynamic-batch export, a batch-2 export, and data for the CLI."""
    d = tmp_path_factory.mktemp("safety")
    net = make_net()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    dynamic = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(dynamic, d / "dynamic.pt2")
    torch.export.save(torch.export.export(net, (x[:2],)), d / "static.pt2")
    rng = np.random.default_rng(0)
    data = rng.random((13, 1, 4, 4), dtype=np.float32)
    np.savez(d / "data.npz", x=data, y=rng.integers(0, 3, 13))
    return {"dir": d, "net": net, "dynamic": d / "dynamic.pt2", "static": d / "static.pt2", "x": data,
            "npz": d / "data.npz"}


def _eager(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def rewrite_json(src: Path, dst: Path, mutate) -> Path:
    """Copy a torch.export archive, applying ``mutate`` to its parsed ``models/model.json``."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename.endswith("models/model.json"):
                document = json.loads(data)
                mutate(document)
                data = json.dumps(document).encode()
            out.writestr(item, data)
    return dst


def _torch_runs(path: Path) -> None:
    """What torch itself does with the file: load, unlift (guards included) and run it; errors ignored."""
    with contextlib.suppress(Exception):
        torch.export.load(str(path)).module()(torch.rand(3, 1, 4, 4))


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def _assert_refused_by_cli(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("Error:"), err
    assert "Fix:" in err and "Traceback" not in err
    flat = " ".join(err.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, flat)


# ------------------------------------------------------------------------------- torch.export: attacks


def _inject_size_expression(payload: str):
    def mutate(doc):
        size = doc["graph_module"]["graph"]["tensor_values"]["input"]["sizes"][0]
        size["as_expr"]["expr_str"] = payload
    return mutate


def test_sympy_expression_payload_runs_in_torch_but_not_in_assay(nets, tmp_path, capsys):
    canary = tmp_path / "pwned"
    evil = rewrite_json(nets["dynamic"], tmp_path / "evil.pt2", _inject_size_expression(_touch(canary)))
    _torch_runs(evil)
    assert canary.exists(), "torch.export.load no longer evaluates expr_str: revisit the audit"
    canary.unlink()

    with pytest.raises(UnsafeModelError, match=r"tensor_values\.input\.sizes\[0\]\.as_expr\.expr_str") as err:
        load_model(str(evil), num_classes=3)
    assert "__import__" in str(err.value) and len(str(err.value)) < 1000
    code, stderr = _cli(["evaluate", str(evil), "--data", str(nets["npz"]), "--out", str(tmp_path / "out"),
                         "--no-cache", "-q"], capsys)
    _assert_refused_by_cli(code, stderr, "expr_str", "not a sympy or torch shape function")
    assert not canary.exists()
    assert not (tmp_path / "out").exists()


def test_guard_code_payload_runs_in_torch_but_not_in_assay(nets, tmp_path):
    canary = tmp_path / "pwned"
    evil = rewrite_json(nets["dynamic"], tmp_path / "evil.pt2",
                        lambda doc: doc.__setitem__("guards_code", [_touch(canary) + " or True"]))
    _torch_runs(evil)
    assert canary.exists(), "ExportedProgram.module() no longer executes guards_code: revisit the audit"
    canary.unlink()

    with pytest.raises(UnsafeModelError, match=r"guards_code \[0\].*no shape guard needs"):
        load_model(str(evil), num_classes=3)
    assert not canary.exists()


def test_file_mapping_operator_writes_files_in_torch_but_not_in_assay(nets, tmp_path):
    """aten::from_file(shared=True) maps a file; an in-place add then writes through to it."""
    victim = tmp_path / "victim.bin"
    meta = {"dtype": 7, "sizes": [{"as_int": 4}], "requires_grad": False, "device": {"type": "cpu", "index": None},
            "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}

    def mutate(doc):
        graph = doc["graph_module"]["graph"]
        graph["nodes"][0:0] = [
            {"target": "torch.ops.aten.from_file.default", "name": "mapped", "metadata": {},
             "inputs": [{"name": "filename", "arg": {"as_string": str(victim)}, "kind": 1},
                        {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                        {"name": "size", "arg": {"as_int": 4}, "kind": 1},
                        {"name": "dtype", "arg": {"as_scalar_type": 7}, "kind": 2}],
             "outputs": [{"as_tensor": {"name": "mapped"}}]},
            {"target": "torch.ops.aten.add_.Scalar", "name": "written", "metadata": {},
             "inputs": [{"name": "self", "arg": {"as_tensor": {"name": "mapped"}}, "kind": 1},
                        {"name": "other", "arg": {"as_float": 1.0}, "kind": 1}],
             "outputs": [{"as_tensor": {"name": "written"}}]}]
        graph["tensor_values"]["mapped"] = meta
        graph["tensor_values"]["written"] = dict(meta)

    evil = rewrite_json(nets["dynamic"], tmp_path / "evil.pt2", mutate)
    np.zeros(4, np.float32).tofile(victim)
    _torch_runs(evil)
    assert np.fromfile(victim, np.float32).tolist() == [1.0] * 4, "torch no longer runs aten::from_file"
    np.zeros(4, np.float32).tofile(victim)

    with pytest.raises(UnsafeModelError, match=r"nodes\[0\]\.target.*aten::from_file"):
        load_model(str(evil), num_classes=3)
    assert np.fromfile(victim, np.float32).tolist() == [0.0] * 4


def _enum_in_spec(module_name: str):
    def mutate(doc):
        signature = doc["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["children_spec"][1]["context"] = json.dumps([{"__enum__": True, "fqn": f"{module_name}:X",
                                                               "name": "a"}])
        signature["in_spec"] = json.dumps(spec)
    return mutate


def test_pytree_enum_context_imports_a_module_in_torch_but_not_in_assay(nets, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names = [f"assay_canary_{uuid.uuid4().hex}" for _ in range(2)]
    for name in names:  # importing the module touches its canary
        (tmp_path / f"{name}.py").write_text(f"{_touch(tmp_path / name)}\n")
    proof = rewrite_json(nets["dynamic"], tmp_path / "proof.pt2", _enum_in_spec(names[0]))
    _torch_runs(proof)
    assert (tmp_path / names[0]).exists(), "torch no longer imports '__enum__' modules: revisit the audit"

    evil = rewrite_json(nets["dynamic"], tmp_path / "evil.pt2", _enum_in_spec(names[1]))
    with pytest.raises(UnsafeModelError, match=r"in_spec.*'__enum__'"):
        load_model(str(evil), num_classes=3)
    assert not (tmp_path / names[1]).exists()
    assert names[1] not in sys.modules
    for name in names:
        sys.modules.pop(name, None)


def test_parameter_name_payload_runs_in_fx_codegen_but_not_in_assay(nets, tmp_path):
    """FX writes a non-identifier attribute name as getattr(self, "name") without escaping it."""
    canary = tmp_path / "pwned"
    if "." in str(canary) or '"' in str(canary):
        pytest.skip("the payload cannot hold dots (FX splits the name at dots)")
    payload = f'training"), getattr(getattr(__import__("pathlib"), "Path")("{canary}"), "touch")(), ("'
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(nets["dynamic"]) as archive, zipfile.ZipFile(evil, "w") as out:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename.endswith(("models/model.json", "model_weights_config.json")):
                data = data.replace(b'"3.weight"', json.dumps(payload + ".weight").encode())
            out.writestr(item, data)
    _torch_runs(evil)
    assert canary.exists(), "FX no longer pastes attribute names into code unescaped: revisit the audit"
    canary.unlink()

    with pytest.raises(UnsafeModelError, match=r"parameter_name = .*not a dotted module path"):
        load_model(str(evil), num_classes=3)
    assert not canary.exists()


def test_module_dict_keys_that_are_not_identifiers_still_load(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.ModuleDict({"layer-1": nn.Linear(16, 3)}))
    net.forward = lambda x: net[1]["layer-1"](net[0](x))  # type: ignore[method-assign]
    x = torch.rand(4, 1, 4, 4)
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "dict.pt2")
    model = load_model(str(tmp_path / "dict.pt2"), num_classes=3)
    np.testing.assert_allclose(model.logits(x.numpy()), net(x).detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("field, mutate, expected", [
    ("forward_arg_names", lambda d, p: d["graph_module"]["module_call_graph"][0]["signature"].__setitem__(
        "forward_arg_names", [f"input={p}"]), "not an identifier"),
    ("node name", lambda d, p: d["graph_module"]["graph"]["nodes"][2].__setitem__("name", f"relu;{p}"),
     "not an identifier"),
    ("parameter name", lambda d, p: d["graph_module"]["signature"]["input_specs"][1]["parameter"].__setitem__(
        "parameter_name", f"fc;{p}"), "not a dotted module path"),
    ("node target", lambda d, p: d["graph_module"]["graph"]["nodes"][2].__setitem__("target", "torch.os.system"),
     "not an aten/prims operator"),
    ("range constraint", lambda d, p: d["range_constraints"].__setitem__(p, {"min_val": 1, "max_val": 2}),
     "range_constraints key"),
    ("sym_int value", lambda d, p: d["graph_module"]["graph"]["sym_int_values"].__setitem__(
        "s", {"as_expr": {"expr_str": f"Max(Symbol('s0'), {p})", "hint": None}}), "expr_str"),
])
def test_other_code_bearing_fields_are_refused(nets, tmp_path, field, mutate, expected):
    canary = tmp_path / "pwned"
    evil = rewrite_json(nets["dynamic"], tmp_path / "evil.pt2", lambda d: mutate(d, _touch(canary)))
    with pytest.raises(UnsafeModelError, match=expected):
        load_model(str(evil), num_classes=3)
    assert not canary.exists()


def test_custom_and_opaque_objects_are_refused_before_loading():
    config = {"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                 "tensor_meta": None}}}
    with pytest.raises(UnsafeModelError, match="opaque object payload"):
        check_export_document(config, member="data/constants/model_constants_config.json", where="m.pt2")
    node_arg = {"graph_module": {"graph": {"nodes": [{"target": "torch.ops.aten.relu.default", "inputs": [
        {"name": "self", "arg": {"as_custom_obj": {"name": "obj", "class_fqn": "__torch__.torch.classes.x.Y"}}}]}]}}}
    with pytest.raises(UnsafeModelError, match="custom \\(torchbind\\) object"):
        check_export_document(node_arg, member="models/model.json", where="m.pt2")


def test_json_nested_beyond_the_parser_is_a_model_error(nets, tmp_path):
    deep = tmp_path / "deep.pt2"
    with zipfile.ZipFile(nets["dynamic"]) as archive, zipfile.ZipFile(deep, "w") as out:
        for item in archive.infolist():
            deep_json = b"[" * 100_000 + b"]" * 100_000
            out.writestr(item, deep_json if item.filename.endswith("models/model.json") else archive.read(item))
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(str(deep), num_classes=3)


def test_duplicate_archive_members_are_refused(nets, tmp_path):
    dup = tmp_path / "dup.pt2"
    with zipfile.ZipFile(nets["dynamic"]) as archive, zipfile.ZipFile(dup, "w") as out:
        for item in archive.infolist():
            out.writestr(item, archive.read(item.filename))
        name = next(n for n in archive.namelist() if n.endswith("models/model.json"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
            out.writestr(name, b"{}")
    with pytest.raises(UnsafeModelError, match="two members named"):
        load_model(str(dup), num_classes=3)


def test_export_archive_saved_as_pt_goes_through_the_same_checks(nets, tmp_path):
    canary = tmp_path / "pwned"
    evil = rewrite_json(nets["dynamic"], tmp_path / "evil.pt", _inject_size_expression(_touch(canary)))
    with pytest.raises(UnsafeModelError, match="expr_str"):
        load_model(str(evil), num_classes=3)
    assert not canary.exists()


# ------------------------------------------------------------------------------- torch.export: legitimate use


@pytest.mark.parametrize("n", [1, 2, 5, 13])
def test_dynamic_batch_export_still_loads_and_matches_the_eager_module(nets, n):
    model = load_model(str(nets["dynamic"]), sample=nets["x"][:3])
    x = nets["x"][:n]
    np.testing.assert_allclose(model.logits(x), _eager(nets["net"], x), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        hidden = nets["net"][:3](torch.from_numpy(x)).numpy()  # the input of the last Linear
    np.testing.assert_allclose(model.features(x), hidden, rtol=1e-5, atol=1e-6)


def test_expressions_and_guards_torch_writes_are_accepted(tmp_path):
    """A derived dimension (2*b) makes torch write srepr expressions, infix range keys and a guard."""
    class Halves(nn.Module):
        def forward(self, x):
            n = x.shape[0]
            return x.reshape(n * 2, -1)[: n // 2 + 1].sum(1, keepdim=True).expand(-1, 3) + n

    b = torch.export.Dim("b", min=2, max=64)
    program = torch.export.export(Halves(), (torch.rand(6, 4),), dynamic_shapes=({0: 2 * b},))
    torch.export.save(program, tmp_path / "halves.pt2")
    with zipfile.ZipFile(tmp_path / "halves.pt2") as archive:
        doc = json.loads(archive.read(next(n for n in archive.namelist() if n.endswith("models/model.json"))))
    assert doc["guards_code"] and any("*" in k for k in doc["range_constraints"])  # the fields are exercised
    model = load_model(str(tmp_path / "halves.pt2"), num_classes=3)
    x = np.random.default_rng(1).random((8, 4), dtype=np.float32)
    np.testing.assert_allclose(model.logits(x), Halves()(torch.from_numpy(x)).numpy(), rtol=1e-6)


# ------------------------------------------------------------------------------- static batch (issue item 12)


def test_static_batch_export_evaluates_any_batch_size_from_the_cli(nets, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _cli(["evaluate", str(nets["static"]), "--data", str(nets["npz"]), "--out", str(out),
                      "--no-cache", "-q"], capsys)
    assert code == 0, err
    with np.load(out / "predictions.npz") as saved:
        np.testing.assert_allclose(saved["logits"], _eager(nets["net"], nets["x"]), rtol=1e-5, atol=1e-6)


def test_static_batch_torch_module_gives_the_eager_gradients(nets):
    model = load_model(str(nets["static"]), sample=nets["x"][:3])
    assert model.info.input_shape[0] == 2
    x = torch.from_numpy(nets["x"][:5]).requires_grad_(True)
    module = model.torch_module()
    assert not module.training
    (grad,) = torch.autograd.grad(module(x).logsumexp(1).sum(), x)
    x_ref = torch.from_numpy(nets["x"][:5]).requires_grad_(True)
    (ref,) = torch.autograd.grad(nets["net"](x_ref).logsumexp(1).sum(), x_ref)
    np.testing.assert_allclose(grad.numpy(), ref.numpy(), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        hidden = nets["net"][:3](torch.from_numpy(nets["x"][:5])).numpy()  # the input of the last Linear
    np.testing.assert_allclose(model.features(nets["x"][:5]), hidden, rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), batch=st.integers(1, 9))
def test_fixed_batches_see_exactly_the_batch_size_and_return_every_row(n, batch):
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    sizes: list[int] = []

    def run(chunk):
        sizes.append(len(chunk))
        return chunk * 2, None, chunk.sum(1)

    doubled, missing, sums = run_in_fixed_batches(run, x, batch)
    np.testing.assert_array_equal(doubled, x * 2)
    np.testing.assert_array_equal(sums, x.sum(1))
    assert missing is None
    assert all(s == batch for s in sizes) or n == 0


# ------------------------------------------------------------------------------- grammars (unit level)

_SYMBOLS = [sympy.Symbol(f"s{i}", positive=True, integer=True) for i in range(4)] + [sympy.Symbol("u0", integer=True)]


def _sympy_exprs():
    from torch.utils._sympy.functions import CeilDiv, FloorDiv, Max, Min, ModularIndexing, PythonMod

    leaves = st.sampled_from(_SYMBOLS) | st.integers(-50, 50).map(sympy.Integer)

    def extend(children):
        pair = st.tuples(children, children)
        return st.one_of(
            pair.map(lambda ab: ab[0] + ab[1]), pair.map(lambda ab: ab[0] * ab[1]),
            children.map(lambda a: a ** 2), pair.map(lambda ab: FloorDiv(ab[0], ab[1] ** 2 + 1)),
            pair.map(lambda ab: Max(*ab)), pair.map(lambda ab: Min(*ab)),
            pair.map(lambda ab: CeilDiv(ab[0], ab[1] ** 2 + 1)), pair.map(lambda ab: PythonMod(ab[0], 7)),
            children.map(lambda a: ModularIndexing(a, 2, 8)))
    return st.recursive(leaves, extend, max_leaves=8)


@settings(max_examples=80, deadline=None)
@given(expr=_sympy_exprs(), relation=st.sampled_from([None, sympy.Eq, sympy.Lt, sympy.Ge, sympy.Ne]))
def test_expression_grammar_accepts_what_sympy_writes_for_torch_shapes(expr, relation):
    if relation is not None:
        expr = relation(expr, _SYMBOLS[0])
        if expr in (sympy.true, sympy.false):
            return
    assume(all(abs(int(n)) <= MAX_INTEGER for n in expr.atoms(sympy.Integer)))  # the grammar's number bound
    text = sympy.srepr(expr)
    assert expression_problem(text) is None, text
    assert expression_problem(str(expr)) is None, str(expr)


@pytest.mark.parametrize("text", [
    "__import__('os').system('id')",
    "Symbol('s0').__class__",
    "Integer(1).__reduce__()",
    "(lambda: 1)()",
    "[c for c in ()]",
    "Symbol('__import__')",
    "Symbol('s0', **{'positive': True})",
    "Symbol('s0', evaluate=print)",
    "Float('1e5; import os')",
    "exec('1')",
    "Max(s0, open)",
    "s0.func",
    "s0[0]",
    "s0 if s0 else 1",
    "f'{s0}'",
    "(s0 := 1)",
    "Pow(Integer(9), Integer(999999999))",
    "9 ** 999999999",
    "Integer(" + "9" * 60 + ")",
    "s0 + 'text'",
    "s0\n+1",
    "Symbol('s0') + " * 3000 + "1",
    "2 ** " + "-" * 2000 + "99",
    "(" + "-" * 2000 + "s0)(1)",
    "Mul(Integer(2), Symbol('s0', positive=True, integer=True)).subs(1, 2)",
    "",
    17,
])
def test_expression_grammar_refuses_code(text):
    assert expression_problem(text) is not None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"[A-Za-z_()'.0-9, =*+]{0,40}", fullmatch=True))
def test_expression_grammar_never_raises(text):
    assert expression_problem(text) is None or isinstance(expression_problem(text), str)
    assert guard_problem(text) is None or isinstance(guard_problem(text), str)


def test_the_function_list_covers_torch_and_the_schema_is_the_audited_one():
    import torch.utils._sympy.functions as shape_functions
    from torch._export.serde.schema import SCHEMA_VERSION

    assert set(shape_functions.__all__) <= SYMPY_FUNCTIONS
    # A new export schema may add fields torch turns into code: re-audit, then update AUDITED_EXPORT_SCHEMA.
    assert tuple(SCHEMA_VERSION) == AUDITED_EXPORT_SCHEMA


@pytest.mark.parametrize("text", ["2 ** " + "-" * 2000 + "99", "(" + "-" * 2000 + "s0)(1)"])
def test_deeply_nested_text_is_refused_not_crashed_on(text):
    assert expression_problem(text) is not None and guard_problem(text) is not None


@pytest.mark.parametrize("text, ok", [
    ("1 + (L['x'].size()[0] // 2) <= 2*L['x'].size()[0]", True),
    ("L['x'].size()[0] >= 2", True),
    ("math.floor(L['x'].size()[1] / 2) == 4 and not L['x'].stride()[0] < 1", True),
    ("max(L['x'].size()[0], 1) < 64", True),
    ("torch.sym_float(L['x'].size()[0]) > 0.5", True),
    ("__import__('os').system('id')", False),
    ("L['x'].__class__", False),
    ("L['x'].size.__globals__", False),
    ("L['x\"+1+\"'].size()[0] > 0", False),
    ("torch.load('f')", False),
    ("getattr(L, 'x')", False),
    ("L['x'].size()[0] > len.__self__.eval('1')", False),
    ("math.floor.__module__", False),
])
def test_guard_grammar(text, ok):
    assert (guard_problem(text) is None) is ok, guard_problem(text)


@pytest.mark.parametrize("target, ok", [
    ("torch.ops.aten.linear.default", True),
    ("torch.ops.aten.sym_size.int", True),
    ("_operator.getitem", True),
    ("torch.ops.higher_order.cond", True),
    ("torch.sym_max", True),
    ("torch.os.system", False),
    ("torch.ops.aten.save.default", False),
    ("torch.ops.aten.from_file.default", False),
    ("torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch", False),
    ("#custom:op", False),
    ("torch.ops.c10d.allreduce_.default", False),
    ("torch.ops.higher_order.call_torchbind", False),
    ("builtins.exec", False),
])
def test_operator_allow_list(target, ok):
    assert (operator_problem(target) is None) is ok, operator_problem(target)


def _spec(kind, context, children=()):
    return {"type": kind, "context": context, "children_spec": list(children)}


LEAF = _spec(None, None)


@pytest.mark.parametrize("spec, identifier_keys, ok", [
    ([1, _spec("builtins.tuple", "null", [_spec("builtins.tuple", "null", [LEAF]), _spec("builtins.dict", "[]")])],
     True, True),
    ([1, _spec("builtins.dict", json.dumps(["logits", "class-probs"]), [LEAF, LEAF])], False, True),
    ([1, _spec("builtins.dict", json.dumps(["x); import os; (y"]), [LEAF])], True, False),
    ([1, _spec("collections.defaultdict", json.dumps({"default_factory_module": "os"}), [])], False, False),
    ([1, _spec("builtins.dict", json.dumps([{"__enum__": True, "fqn": "os:X", "name": "a"}]), [LEAF])], False, False),
    ([2, LEAF], False, False),
])
def test_pytree_spec_rules(spec, identifier_keys, ok):
    assert (treespec_problem(json.dumps(spec), identifier_keys=identifier_keys) is None) is ok


# ------------------------------------------------------------------------------- TorchScript


class SavesOnLoad(nn.Module):
    """``__setstate__`` runs inside torch.jit.load; this one writes a file with torch.save."""

    def __init__(self, canary: str) -> None:
        super().__init__()
        self.weight = torch.ones(16, 3)
        self.canary = canary

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[Tensor, str, bool]:
        return (self.weight, self.canary, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[Tensor, str, bool]) -> None:
        torch.save(state[0], state[1])
        self.weight = state[0]
        self.canary = state[1]
        self.training = state[2]


def test_torchscript_that_writes_files_on_load_is_refused_before_loading(nets, tmp_path, capsys):
    canary = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(SavesOnLoad(str(canary))), path)
        loaded = torch.jit.load(str(path))
    assert canary.exists(), "torch.jit.load no longer runs __setstate__: revisit the audit"
    canary.unlink()
    with pytest.raises(UnsafeModelError, match="calls aten::save"):  # the graphs torch built say the same
        check_script_node_kinds(_script_node_kinds(loaded), where=str(path))

    with pytest.raises(UnsafeModelError, match=r"code/__torch__/.*\.py calls save"):
        load_model(str(path), num_classes=3)
    code, err = _cli(["evaluate", str(path), "--data", str(nets["npz"]), "--out", str(tmp_path / "out"),
                      "--no-cache", "-q"], capsys)
    _assert_refused_by_cli(code, err, "calls save")
    assert not canary.exists()


@pytest.mark.parametrize("source, ok", [
    ("def forward(self, x):\n  return torch.matmul(x, self.w)\n", True),
    ("def forward(self, x):\n  return ops.quantized.linear(x, self.p, 1.0, 0)\n", True),
    ("class A(Module):\n  p : __torch__.torch.classes.quantized.LinearPackedParamsBase\n", True),
    ("def f(x):\n  torch.save(x, 'f')\n", False),
    ("def f(x):\n  return torch.from_file('/etc/passwd', False, 4)\n", False),
    ("def f(x):\n  return getattr(torch, 'save')(x, 'f')\n", False),
    ("def f(x, n: str):\n  return getattr(torch, n)\n", False),
    ("def f(x):\n  return ops.c10d.allreduce_(x)\n", False),
    ("def f(x):\n  o = torch.ops\n  return o.c10d.allreduce_(x)\n", False),
    ("class A(Module):\n  g : __torch__.torch.classes.dist_rpc.WorkerInfo\n", False),
    ("import torch.ops as o\n", False),
    ("def f(x):\n  return ops.mylib.shell(x)\n", False),
    ("def f(x) -> :\n", False),
])
def test_torchscript_source_rules(source, ok):
    assert (torchscript_source_problem(source) is None) is ok, torchscript_source_problem(source)


def test_torchscript_archives_that_are_not_zip_files_never_reach_torch_jit_load(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PTMF" + bytes(60))  # not a zip (a flatbuffer would start like this)

    def must_not_run(*_a, **_k):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", must_not_run)
    with pytest.raises(ModelError, match="not a TorchScript model"):
        load_model(str(path), num_classes=3)


# ------------------------------------------------------------------------------- ONNX


def _write_external_onnx(folder: Path, location: str, weights: np.ndarray | None = None) -> Path:
    """A MatMul model whose weight W (4, 3) lives in external data at ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    w = nh.from_array(np.ones((4, 3), np.float32), "W")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = oh.make_graph([oh.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [w])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    if weights is not None:
        (folder / location).write_bytes(weights.astype(np.float32).tobytes())
    return path


@pytest.mark.parametrize("location, reason", [
    ("../secret.bin", "climbs out"),
    ("ABSOLUTE", "absolute path"),
    ("link.bin", "through a link"),
])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path, location, reason):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "link.bin").symlink_to(secret)
    path = _write_external_onnx(folder, str(secret) if location == "ABSOLUTE" else location)
    with pytest.raises(UnsafeModelError, match=f"tensor 'W' keeps its data at .*{reason}"):
        load_model(str(path))
    # onnxruntime, given the path, refuses these too (an independent check of the rule)
    with pytest.raises(Exception, match="External data path"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_external_data_inside_the_folder_loads_and_is_hashed(tmp_path):
    w1 = np.arange(12, dtype=np.float32).reshape(4, 3)
    first = load_model(str(_write_external_onnx(tmp_path / "a", "weights.bin", w1)))
    second = load_model(str(_write_external_onnx(tmp_path / "b", "weights.bin", w1 + 1)))
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    np.testing.assert_allclose(first.logits(x), x @ w1, rtol=1e-6)
    assert first.info.sha256 != second.info.sha256  # the same .onnx bytes, different external weights
    assert external_data_problem("sub/weights.bin", tmp_path) is None


def test_onnx_custom_operator_domains_fail_without_loading_a_library(tmp_path):
    graph = oh.make_graph([oh.make_node("Shell", ["x"], ["y"], domain="evil.ops", command="touch pwned")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("evil.ops", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="onnxruntime cannot load") as err:
        load_model(str(path), num_classes=4)
    assert not isinstance(err.value, UnsafeModelError)


def test_no_module_loads_native_libraries():
    """Nothing in Assay registers custom-op libraries or loads shared libraries a file could name."""
    forbidden = {"register_custom_ops_library", "load_library", "CDLL", "cdll", "LoadLibrary", "dlopen"}
    for file in SRC.rglob("*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert not names & (forbidden | {"ctypes"}), file


def test_onnx_ort_config_in_the_model_is_not_applied(tmp_path, monkeypatch):
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    oh.set_model_props(model, {"ort_config": json.dumps({"session_options": {"enable_profiling": 1}})})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    monkeypatch.setenv("ORT_LOAD_CONFIG_FROM_MODEL", "1")
    monkeypatch.chdir(tmp_path)
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert raw.get_session_options().enable_profiling  # onnxruntime applies it by itself
    raw.end_profiling()
    for profile in tmp_path.glob("onnxruntime_profile*.json"):
        profile.unlink()
    del raw

    loaded = load_model(str(path), num_classes=3)
    loaded.logits(np.array([[1.0, -2.0, 3.0]], np.float32))
    assert not loaded.session.get_session_options().enable_profiling
    del loaded
    gc.collect()
    assert not list(tmp_path.glob("onnxruntime_profile*.json"))


# ------------------------------------------------------------------------------- safetensors


def test_safetensors_metadata_is_never_read_as_code(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    canary = tmp_path / "pwned"
    (tmp_path / "tiny_safety_net.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))\n")
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    save_file(net.state_dict(), tmp_path / "w.safetensors",
              metadata={"class_names": _touch(canary), "format": _touch(canary)})
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("tiny_safety_net:make", weights=str(tmp_path / "w.safetensors"), num_classes=3)
    model.logits(np.zeros((2, 1, 4, 4), np.float32))
    assert not canary.exists()
    sys.modules.pop("tiny_safety_net", None)
