"""Refuse model files that would run code (or touch files) when Assay loads or runs them.

Every string a model file carries that a loader turns into code was traced through the libraries
Assay pins (torch 2.13 with export schema 8.20, onnx 1.23, onnxruntime 1.32). Each path, and how it
is closed:

torch.export archives (``.pt2``, or a ``.pt`` that holds one) — :func:`check_export_archive`, run on
the zip before ``torch.export.load`` opens it. Every ``*.json`` member is parsed with :mod:`json`
(decoded as UTF-8, as torch does) and walked; nothing is evaluated.

1. ``expr_str`` of every ``SymExpr`` (tensor sizes, strides and storage offsets, ``sym_int_values``,
   ``sym_bool_values``, ``sym_float_values``, payload tensor metadata, nested subgraphs) goes to
   ``sympy.sympify``, i.e. Python ``eval``: an ``__import__(...)`` call there ran at load (seen).
   Each must parse (``ast``, never run) as a sympy expression: symbols named like torch's (``s0``,
   ``u3``, ``zf1``), numbers, ``+ - * / // % **``, comparisons, ``& | ~``, and calls of the sympy
   constructors ``srepr`` writes plus the functions of ``torch.utils._sympy.functions``
   (:func:`expression_problem`). ``hint`` values are numbers, checked as numbers by torch.
2. ``range_constraints`` keys are compared as text (not parsed), checked with the same grammar; their
   bounds must be integers or null.
3. ``guards_code`` strings are pasted into Python source and ``exec``'d by ``ExportedProgram.module()``
   (a call there ran at forward time, seen). Each must be a guard over ``L['input'].size()[i]``
   and friends (:func:`guard_problem`), and Assay unlifts with ``module(check_guards=False)``, so no
   guard code is generated at all.
4. Node ``target`` and ``as_operator`` strings are resolved by ``getattr`` on ``torch``, ``operator``
   and ``math`` and called when the model runs. Allowed: ``torch.ops.aten|prims|quantized_decomposed``
   overloads except the ones that touch files (``aten::from_file(shared=True)`` maps a file that an
   in-place add then overwrote, seen; ``aten::save``), a fixed list of higher-order operators, the
   symbolic-int helpers torch's verifier allows (``_operator.add``, ``torch.sym_max``, ...), never
   ``_call_custom_autograd_function_in_pre_dispatch`` (imports a module named by the file) nor
   ``#extension`` handlers (:func:`operator_problem`).
5. Names FX pastes into generated Python source (node, argument and keyword names, graph-input names,
   ``forward_arg_names``) must be identifiers; parameter/buffer/constant names and module paths are
   dotted paths whose segments hold no quote, backslash or control character (FX writes a segment that
   is not an identifier as ``getattr(self, "segment")`` unescaped: a quote there ran code, seen).
6. ``in_spec`` / ``out_spec`` (pytree specs, JSON inside JSON): only plain container types; never
   ``collections.defaultdict`` (imports the module it names) nor an ``"__enum__"`` context (imports
   the module it names, seen); ``in_spec`` dict keys are identifiers, as they become argument names
   (:func:`treespec_problem`).
7. String constant inputs are quoted into guard code: no quotes, backslashes or control characters.
8. Custom (torchbind) objects are refused: their payloads go through a C++ unpickler that calls the
   class's ``__setstate__``. Opaque (``pickle.loads``) objects are refused here too; pickled weights,
   constants and example inputs are forced through ``torch.load(weights_only=True)`` by
   ``_NoUnpickling`` in ``torch_models.py``.
9. AOTInductor members (``data/aotinductor/``: a shared library that loading would ``dlopen``) are
   refused, as are duplicate member names (torch and :mod:`zipfile` could read different copies).
10. After loading, every dictionary key in the example inputs must be an identifier
    (:func:`example_input_problem`): their key paths are written into guard code.

Node ``metadata`` (stack traces, module stacks, ``torch_fn``, ``custom``, ``from_node``) is text torch
stores and never runs; ``source_fn_stack`` entries are resolved by ``getattr`` and stored, never called;
``treespec_namedtuple_fields``, ``torch_version``, ``verifiers`` (looked up by name) and ``Device.type``
(parsed by ``torch.device``) are data too.

TorchScript archives (``.pt``, ``.pth``, ``.ts``) — :func:`check_torchscript_archive`, before
``torch.jit.load``. ``code/`` holds TorchScript, compiled by torch's C++ frontend (not Python), and
``data.pkl``/``constants.pkl`` are read by TorchScript's C++ unpickler, which builds only tensors,
containers and classes compiled from the archive's own code. That code can still call any registered
operator, at load (a class's ``__setstate__``) and at forward: ``torch.save`` in ``__setstate__`` wrote
a file during ``torch.jit.load`` (seen). So every ``.py`` member is parsed (``ast``) and refused when it
names an operator that touches files or the network (``save``, ``from_file``, RPC, ...), an operator
namespace outside the compute ones (``ops.c10d``, ...) or a custom-class namespace outside the packed
parameter ones (``torch.classes.c10d.ProcessGroup``, ...) (:func:`torchscript_source_problem`); and,
after loading, the inlined graph of every method is checked again by node kind
(:func:`script_node_kind_problem`). Files that are not zip archives (flatbuffer, legacy pickles) never
reach ``torch.jit.load``.

ONNX (``.onnx``) — :func:`external_data_problem` and ``onnx_model.load_onnx``. A tensor's external data
``location`` must be a relative path to a file inside the model's folder (no ``..``, no absolute path,
no link leading out), checked before any external data is read; onnx 1.23 and onnxruntime 1.32 also
refuse these, this check does not depend on them. Custom operator domains need a library registered
with ``SessionOptions.register_custom_ops_library``, which Assay never calls, so such models fail to
load with a ModelError; model-local ONNX functions are graphs, not code. The ``ort_config`` metadata
(session options onnxruntime reads from the model when ``ORT_LOAD_CONFIG_FROM_MODEL=1``, profiling
output files included) is dropped before the session is built.

safetensors weights — only tensors are read (``safetensors.torch.load_file``); the header's
``__metadata__`` (a str -> str map) is never read by Assay.

Factories (``package.module:callable``) run code by design: the user names the code to import.

``tests/test_model_safety.py`` shows, for each attack, that torch or onnxruntime does run the payload,
then that Assay refuses the file and the payload never runs.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from assay.errors import ModelError, UnsafeModelError

__all__ = [
    "AUDITED_EXPORT_SCHEMA",
    "EXPORT_FIX",
    "MAX_EXPRESSION_CHARS",
    "MAX_INTEGER",
    "SYMPY_FUNCTIONS",
    "check_example_inputs",
    "check_export_archive",
    "check_export_document",
    "check_script_node_kinds",
    "check_torchscript_archive",
    "example_input_problem",
    "expression_problem",
    "external_data_problem",
    "guard_problem",
    "operator_problem",
    "script_node_kind_problem",
    "shorten",
    "torchscript_source_problem",
    "treespec_problem",
]

AUDITED_EXPORT_SCHEMA = (8, 20)  # torch._export.serde.schema.SCHEMA_VERSION read for this audit (torch 2.13)
MAX_EXPRESSION_CHARS = 20_000
MAX_INTEGER = 2**128  # sizes, strides and hints are int64; headroom for their products
MAX_LITERAL_EXPONENT = 64
MAX_NAME_CHARS = 256

EXPORT_FIX = ("re-export the model from its code with torch.export.save(torch.export.export(model, (example,)), "
              "'model.pt2'); Assay loads only archives whose strings are plain shape expressions, names and "
              "operators")
SCRIPT_FIX = ("script the model without file or network operations (torch.save, torch.from_file, RPC, "
              "distributed) and save it with torch.jit.save, or export it with torch.export")

# --------------------------------------------------------------------------- sympy expressions

# Functions torch.export's deserializer hands to sympify (torch/utils/_sympy/functions.py __all__, and
# the opaque/bitwise functions it builds there), plus the sympy constructors sympy.srepr writes.
SYMPY_FUNCTIONS = frozenset({
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural",
    "Identity", "Max", "Min",
    *(f"OpaqueUnaryFn_{name}" for name in (
        "sqrt", "cos", "cosh", "acos", "sin", "sinh", "asin", "tan", "tanh", "atan", "exp", "log", "log2",
        "asinh", "acosh", "atanh")),
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor",
})
_SYMPY_CONSTRUCTORS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Abs", "floor", "ceiling", "sign",
    "Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Xor", "ITE", "Piecewise", "ExprCondPair",
    "Infinity", "NegativeInfinity", "IntInfinity", "NegativeIntInfinity", "BooleanTrue", "BooleanFalse",
    "NaN", "ComplexInfinity", "Half", "One", "Zero", "NegativeOne",
})
_SYMPY_CALLABLE = SYMPY_FUNCTIONS | _SYMPY_CONSTRUCTORS
_SYMPY_CONSTANTS = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo", "pi", "E"})
_SYMBOL_ASSUMPTIONS = frozenset({
    "positive", "negative", "nonnegative", "nonpositive", "integer", "noninteger", "real", "finite",
    "infinite", "zero", "nonzero", "even", "odd", "prime", "composite", "rational", "irrational",
    "commutative", "complex", "imaginary", "hermitian", "antihermitian", "algebraic", "transcendental",
    "extended_real", "extended_positive", "extended_negative", "extended_nonnegative",
    "extended_nonpositive", "extended_nonzero", "polar",
})
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow"})
# torch names shape symbols <prefix><index>: s0 (sizes), u3 (unbacked), zf1, zuf0, ps2, r0_1, ...
_SYMBOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}[0-9]")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|nan)")

_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr)
_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_GRAMMAR_NODES = (ast.Expression, ast.Load, ast.And, ast.Or, ast.USub, ast.UAdd, ast.Not, ast.Invert,
                  *_ARITHMETIC, *_COMPARISONS)


def shorten(text: object, limit: int = 80) -> str:
    """``repr`` of a value, cut to ``limit`` characters: enough to recognise, never a wall of text."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _parse_expression(text: object) -> tuple[ast.Expression | None, str | None]:
    """(tree, None) for a short printable ASCII Python expression, else (None, why not)."""
    if not isinstance(text, str):
        return None, f"is a {type(text).__name__}, not text"
    if len(text) > MAX_EXPRESSION_CHARS:
        return None, f"is longer than {MAX_EXPRESSION_CHARS} characters"
    if not text.isascii() or not text.isprintable():
        return None, "holds non-ASCII or control characters"
    try:
        return ast.parse(text, mode="eval"), None
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None, "is not a well-formed expression"


def _literal_int(node: ast.AST) -> int | None:
    """The integer a literal spells (``3``, ``-3``, ``Integer(3)``, ``-Integer(-3)``), else None."""
    sign = 1
    while True:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -sign if isinstance(node.op, ast.USub) else sign
            node = node.operand
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" \
                and len(node.args) == 1:
            node = node.args[0]
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            return sign * node.value
        else:
            return None


def _exponent_problem(exponent: ast.AST) -> str | None:
    value = _literal_int(exponent)
    if value is not None and abs(value) > MAX_LITERAL_EXPONENT:
        return f"raises to the power {value} (more than {MAX_LITERAL_EXPONENT})"
    return None


def _number_problem(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= MAX_INTEGER else f"holds the integer {shorten(value, 30)} (beyond 2**128)"
    if isinstance(value, float):
        return None
    return f"holds a {type(value).__name__} literal"


def _sympy_call_problem(node: ast.Call, text_args: set[int]) -> str | None:
    """A call is allowed when it names a sympy/torch function and passes only what srepr writes."""
    if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLABLE:
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        return f"calls {shorten(name, 40)}, which is not a sympy or torch shape function"
    name = node.func.id
    for kw in node.keywords:
        if kw.arg is None:
            return f"passes **keywords to {name}"
        if name == "Symbol" and kw.arg in _SYMBOL_ASSUMPTIONS:
            if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool)):
                return f"passes a non-boolean assumption {kw.arg} to Symbol"
        elif name == "Float" and kw.arg in ("precision", "dps"):
            if not (isinstance(kw.value, ast.Constant) and type(kw.value.value) is int
                    and 1 <= kw.value.value <= 1000):
                return f"passes {kw.arg} outside 1..1000 to Float"
        else:
            return f"passes keyword {shorten(kw.arg, 30)} to {name}"
    if name == "Symbol":
        if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) \
                or not isinstance(node.args[0].value, str) or not _SYMBOL_NAME.fullmatch(node.args[0].value):
            return "creates a Symbol whose name is not a torch shape symbol (like s0 or u3)"
        text_args.add(id(node.args[0]))
    elif name == "Float" and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        if not _FLOAT_TEXT.fullmatch(node.args[0].value):
            return "creates a Float from text that is not a number"
        text_args.add(id(node.args[0]))
    if name in _POWERS and len(node.args) == 2:
        return _exponent_problem(node.args[1])
    return None


def expression_problem(text: object) -> str | None:
    """Why ``text`` is not a shape expression torch.export writes, or None when it is one.

    Accepts both ``sympy.srepr`` forms (``Mul(Integer(2), Symbol('s0', positive=True, integer=True))``,
    what torch 2.13 writes) and plain infix forms (``2*s0 + 1``, range-constraint keys). The text is
    parsed by :func:`ast.parse` and its tree walked against an allow-list of node types, names and
    calls; it is never evaluated.
    """
    try:
        return _expression_problem(text)
    except RecursionError:
        return "is nested too deeply"


def _expression_problem(text: object) -> str | None:
    tree, problem = _parse_expression(text)
    if tree is None:
        return problem
    text_args: set[int] = set()  # str literals allowed as the first argument of Symbol/Float
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}  # judged with their call
    for node in ast.walk(tree):  # breadth first: a call is checked before its arguments
        if isinstance(node, (_GRAMMAR_NODES, ast.keyword)) or id(node) in callees:
            continue
        if isinstance(node, ast.Call):
            problem = _sympy_call_problem(node, text_args)
        elif isinstance(node, ast.Name):
            ok = node.id in _SYMPY_CONSTANTS or _SYMBOL_NAME.fullmatch(node.id)
            problem = None if ok else f"names {shorten(node.id, 40)}, which is not a shape symbol or sympy constant"
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                problem = None if id(node) in text_args else "holds a text literal outside Symbol(...)/Float(...)"
            else:
                problem = _number_problem(node.value)
        elif isinstance(node, ast.BinOp):
            problem = _exponent_problem(node.right) if isinstance(node.op, ast.Pow) else None
        elif isinstance(node, (ast.UnaryOp, ast.Compare, ast.BoolOp)):
            problem = None
        else:
            problem = f"uses Python syntax {type(node).__name__}, which no shape expression needs"
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------- guard code

_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_BUILTINS = frozenset({"max", "min", "abs", "round", "int", "float", "bool", "len",
                             "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"})
_GUARD_MATH = frozenset({"floor", "ceil", "trunc", "sqrt", "cos", "cosh", "acos", "sin", "sinh", "asin", "tan",
                         "tanh", "atan", "exp", "log", "log2", "inf", "nan", "pi", "e", "isnan"})
_GUARD_TORCH = frozenset({"sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sum",
                          "sym_sqrt", "_sym_sqrt"})


def _is_input_access(node: ast.AST) -> bool:
    """``L``, ``L['x']``, ``L['x'][0]``, ``L['x'].size()[1]``: an input or a size read from one."""
    while True:
        if isinstance(node, ast.Name):
            return node.id == "L"
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in _GUARD_METHODS and not node.args and not node.keywords:
            node = node.func.value
        else:
            return False


def _guard_call_problem(node: ast.Call) -> str | None:
    if node.keywords:
        return "passes keyword arguments"
    func = node.func
    if isinstance(func, ast.Name) and func.id in _GUARD_BUILTINS:
        return None
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
            and func.attr in {"math": _GUARD_MATH, "torch": _GUARD_TORCH}.get(func.value.id, ()):
        return None
    if isinstance(func, ast.Attribute) and func.attr in _GUARD_METHODS and not node.args \
            and _is_input_access(func.value):
        return None
    return f"calls {shorten(ast.unparse(func), 40)}, which no shape guard needs"


def guard_problem(text: object) -> str | None:
    """Why ``text`` is not a shape guard torch.export writes (``L['x'].size()[0] <= 64``), or None.

    Guards are conditions on input sizes: ``L[...]`` subscripts with identifier or integer keys,
    ``.size()``/``.stride()``/``.storage_offset()`` reads, numbers, arithmetic, comparisons, ``and``/
    ``or``/``not``, conditional expressions, and the ``math``/``torch.sym_*``/builtin functions torch's
    Python printer emits. Parsed with :func:`ast.parse`, never evaluated.
    """
    try:
        return _guard_problem(text)
    except RecursionError:
        return "is nested too deeply"


def _guard_problem(text: object) -> str | None:
    tree, problem = _parse_expression(text)
    if tree is None:
        return problem
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}  # judged with their call
    for node in ast.walk(tree):
        if isinstance(node, (_GRAMMAR_NODES, ast.BitXor, ast.LShift, ast.RShift)) \
                or (id(node) in callees and isinstance(node, ast.Name)):
            continue
        if isinstance(node, ast.Call):
            problem = _guard_call_problem(node)
        elif isinstance(node, ast.Attribute):
            if id(node) in callees:
                problem = None  # judged with its call; its object is walked on its own
            elif isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in _GUARD_MATH:
                problem = None
            else:
                problem = f"reads attribute {shorten(node.attr, 40)}"
        elif isinstance(node, ast.Name):
            ok = node.id in ("L", "math", "torch") or node.id in _GUARD_BUILTINS or _SYMBOL_NAME.fullmatch(node.id)
            problem = None if ok else f"names {shorten(node.id, 40)}"
        elif isinstance(node, ast.Subscript):
            key = node.slice
            ok_key = isinstance(key, ast.Constant) and (
                type(key.value) is int or (isinstance(key.value, str) and _is_identifier(key.value)))
            problem = None if ok_key and _is_input_access(node) else \
                "indexes something other than an input by name or position"
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                problem = None if _is_identifier(node.value) else "holds a text literal that is not an identifier"
            else:
                problem = _number_problem(node.value)
        elif isinstance(node, ast.BinOp):
            problem = _exponent_problem(node.right) if isinstance(node.op, ast.Pow) else None
        elif isinstance(node, (ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp)):
            problem = None
        else:
            problem = f"uses Python syntax {type(node).__name__}, which no shape guard needs"
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------- operators (graph node targets)

EXPORT_OP_NAMESPACES = frozenset({"aten", "prims", "quantized_decomposed"})
# Operators that read or write files, or talk to other processes, whatever their namespace.
DENIED_OPS = frozenset({
    "save", "from_file", "load_tensor", "_load_for_mobile", "rpc_async", "rpc_sync", "rpc_remote", "to_here",
})
HIGHER_ORDER_OPS = frozenset({
    "cond", "while_loop", "map_impl", "scan", "associative_scan", "wrap_with_set_grad_enabled",
    "wrap_with_autocast", "invoke_subgraph", "auto_functionalized", "auto_functionalized_v2", "out_dtype",
    "flex_attention", "hints_wrapper", "run_const_graph", "with_effects",
})
# torch's verifier list (torch/_export/verifier.py) as torch.export serializes it, minus
# _call_custom_autograd_function_in_pre_dispatch (it imports a module named in the file).
EXPORT_CALLABLES = frozenset({
    *(f"_operator.{name}" for name in (
        "getitem", "add", "mul", "sub", "truediv", "ge", "le", "gt", "lt", "eq", "ne", "floordiv", "mod",
        "and_", "or_", "not_", "pow", "neg", "pos", "abs", "lshift", "rshift")),
    "math.ceil", "math.floor", "math.trunc", "builtins.round",
    "torch.sym_int", "torch.sym_float", "torch.sym_ite", "torch.sym_max", "torch.sym_min", "torch.sym_not",
    "torch.sym_sqrt", "torch._sym_sqrt", "torch.sym_sum",
    "torch.autograd.grad_mode.set_grad_enabled", "torch._C._set_grad_enabled",
    "torch.amp.autocast_mode._enter_autocast", "torch.amp.autocast_mode._exit_autocast",
    "torch.fx.experimental.symbolic_shapes.cast_symbool_to_symint_guardless",
})
_OP_OVERLOAD = re.compile(r"torch\.ops\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_HIGHER_ORDER = re.compile(r"torch\.ops\.higher_order\.([A-Za-z_]\w*)")


def operator_problem(target: object) -> str | None:
    """Why a graph node's ``target`` is not an operator Assay lets a torch.export graph call, or None."""
    if not isinstance(target, str):
        return f"is a {type(target).__name__}, not an operator name"
    if target in EXPORT_CALLABLES:
        return None
    if match := _HIGHER_ORDER.fullmatch(target):
        ok = match[1] in HIGHER_ORDER_OPS
        return None if ok else f"is a higher-order operator outside {sorted(HIGHER_ORDER_OPS)}"
    if match := _OP_OVERLOAD.fullmatch(target):
        namespace, op = match[1], match[2]
        if namespace not in EXPORT_OP_NAMESPACES:
            return f"is in operator namespace {namespace!r}, not one of {sorted(EXPORT_OP_NAMESPACES)}"
        if op in DENIED_OPS:
            return f"is {namespace}::{op}, which reads or writes files or talks to other processes"
        return None
    return "is not an aten/prims operator overload nor a symbolic-size helper"


# --------------------------------------------------------------------------- names and pytree specs


def _is_identifier(text: object) -> bool:
    return isinstance(text, str) and len(text) <= MAX_NAME_CHARS and text.isidentifier() \
        and not keyword.iskeyword(text)


def _is_dotted_path(text: object, allow_empty: bool = False) -> bool:
    """``fc.weight``, ``layers.0.conv``, ``blocks.layer-1.bias``: module path segments joined by dots.

    FX writes a segment that is not an identifier (a ``ModuleDict`` key) as ``getattr(x, "segment")``
    without escaping it, so a segment may hold any printable character except quotes and backslashes.
    """
    if not isinstance(text, str) or len(text) > 4 * MAX_NAME_CHARS:
        return False
    if text == "":
        return allow_empty
    return all(part and part.isprintable() and not any(c in part for c in "\"'\\") for part in text.split("."))


TREESPEC_TYPES = frozenset({
    "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict", "collections.deque",
    "collections.namedtuple", "torch.Size", "torch.fx.immutable_collections.immutable_list",
    "torch.fx.immutable_collections.immutable_dict",
})
_KEYED_TYPES = frozenset({"builtins.dict", "collections.OrderedDict", "torch.fx.immutable_collections.immutable_dict"})


def _json_walk(value: Any) -> Iterator[Any]:
    """Every value inside a parsed JSON value, depth first, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def treespec_problem(text: object, *, identifier_keys: bool) -> str | None:
    """Why a serialized pytree spec (``in_spec``/``out_spec``) is unsafe, or None.

    torch reads it with ``treespec_loads``: types are looked up by name (``collections.defaultdict``
    imports the module its context names), and contexts are parsed with an object hook that imports the
    module an ``"__enum__"`` entry names. Only container types pass; with ``identifier_keys`` (input
    specs: dict keys become argument names in generated code) every key is an identifier or integer.
    """
    try:
        protocol, schema = json.loads(text) if isinstance(text, str) else (None, None)
    except (ValueError, TypeError, RecursionError):
        return "is not a JSON [protocol, spec] pair"
    if protocol != 1 or not isinstance(schema, dict):
        return "is not a protocol-1 pytree spec"
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("children_spec"), list):
            return "has a malformed node"
        kind, context = node.get("type"), node.get("context")
        stack.extend(node["children_spec"])
        if kind is None:
            if context is not None:
                return "has a leaf with a context"
            continue
        if kind not in TREESPEC_TYPES:
            return f"names container type {shorten(kind, 60)}, which is not a plain container"
        if kind == "collections.namedtuple":
            if not isinstance(context, str):
                return "has a namedtuple context that is not a name"
            continue
        try:
            parsed = json.loads(context) if isinstance(context, str) else None
        except (ValueError, RecursionError):
            return "has a context that is not JSON"
        for item in _json_walk(parsed):
            if isinstance(item, dict):
                return "has a context holding an object (torch imports the module an '__enum__' object names)"
        if kind in _KEYED_TYPES:
            keys = parsed if isinstance(parsed, list) else []
            for key in keys:
                if identifier_keys and not (type(key) is int or _is_identifier(key)):
                    return f"has input key {shorten(key, 40)}, which is not an identifier"
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    return f"has key {shorten(key, 40)}, which is neither text nor an integer"
    return None


# --------------------------------------------------------------------------- the export document walk

_IDENTIFIER_FIELDS = frozenset({"name", "as_name"})
_DOTTED_FIELDS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name",
                            "user_input_name"})
_NAME_KEYED_DICTS = frozenset({"tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values",
                               "as_string_to_argument"})
_OPAQUE_PREFIXES = ("custom_obj_", "opaque_obj_")


def _render_path(path: tuple[Any, ...]) -> str:
    """``graph_module.graph.nodes[2].target`` from the keys and indices leading to a value."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _is_identifier(part):
            text += f".{part}" if text else part
        else:
            text += f"[{shorten(part, 40)}]"
    return text or "(document)"


def _field_problem(key: str, value: Any, path: tuple[Any, ...]) -> str | None:
    """The rule for one named field of a torch.export JSON document."""
    if key == "expr_str":
        return expression_problem(value)
    if key in ("target", "as_operator"):
        return operator_problem(value)
    if key in _IDENTIFIER_FIELDS and isinstance(value, str):  # "" for positional operator arguments
        ok = value == "" or _is_identifier(value)
        return None if ok else "is not an identifier (it becomes a name in generated code)"
    if key in _DOTTED_FIELDS:
        return None if _is_dotted_path(value) else "is not a dotted module path"
    if key == "fqn":
        return None if _is_dotted_path(value, allow_empty=True) else "is not a dotted module path"
    if key == "forward_arg_names" and value is not None:
        ok = isinstance(value, list) and all(_is_identifier(v) for v in value)
        return None if ok else "holds a name that is not an identifier (it becomes an argument name)"
    if key in ("in_spec", "out_spec"):
        return treespec_problem(value, identifier_keys=key == "in_spec")
    if key == "guards_code":
        if not isinstance(value, list):
            return "is not a list"
        for i, guard in enumerate(value):
            if problem := guard_problem(guard):
                return f"[{i}] = {shorten(guard)} {problem}"
        return None
    if key == "range_constraints":
        if not isinstance(value, dict):
            return "is not a mapping"
        for name, bounds in value.items():
            if problem := expression_problem(name):
                return f"key {shorten(name)} {problem}"
            if not isinstance(bounds, dict) or any(
                    not (b is None or (type(b) is int and abs(b) <= MAX_INTEGER))
                    for b in (bounds.get("min_val"), bounds.get("max_val"))):
                return f"[{shorten(name, 40)}] has bounds that are not integers or null"
        return None
    if key in _NAME_KEYED_DICTS and isinstance(value, dict):
        bad = [k for k in value if not _is_identifier(k)]
        return f"has key {shorten(bad[0], 60)}, which is not an identifier" if bad else None
    if key in ("custom_obj", "as_custom_obj", "custom_obj_values") and value:
        return "holds a custom (torchbind) object, which loads through an unpickler that runs its __setstate__"
    if key == "path_name" and isinstance(value, str) and value.startswith(_OPAQUE_PREFIXES):
        return "names a custom or opaque object payload, which loads by unpickling"
    if key == "as_string" and "constant_input" in path:
        ok = isinstance(value, str) and value.isprintable() and not any(c in value for c in "'\"\\")
        return None if ok else "is a constant text input with quotes, backslashes or control characters"
    return None


def check_export_document(document: Any, *, member: str, where: str) -> None:
    """Raise :class:`UnsafeModelError` naming the first field of a parsed torch.export JSON member
    (an ``ExportedProgram`` or a payload config) that would be turned into code, else return None.

    Fields are recognised by name wherever they occur (subgraphs of higher-order operators nest whole
    graphs); node ``metadata`` maps are text and are not entered.
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
            continue
        if not isinstance(value, dict):
            continue
        for key, item in value.items():
            here = (*path, key)
            if isinstance(key, str) and (problem := _field_problem(key, item, path)):
                shown = "" if key in ("guards_code", "range_constraints") else f" = {shorten(item)}"
                raise UnsafeModelError(
                    f"{member}: {_render_path(here)}{shown} {problem}; torch would turn this field into code "
                    "while loading or running the model",
                    where=where, fix=EXPORT_FIX)
            if key != "metadata":
                stack.append((item, here))
    if (isinstance(document, dict) and isinstance(version := document.get("schema_version"), dict)
            and version.get("major") not in (AUDITED_EXPORT_SCHEMA[0], 0)):
            raise UnsafeModelError(
                f"{member}: export schema {version.get('major')}.{version.get('minor')} was not audited "
                f"(Assay checks schema {AUDITED_EXPORT_SCHEMA[0]}.x)", where=where, fix=EXPORT_FIX)


def _zip_members(path: str, kind: str, fix: str) -> tuple[zipfile.ZipFile, list[str]]:
    """Open a zip archive; refuse one that is not a zip or names a member twice."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"not a {kind} archive: {exc}", where=path, fix=fix) from exc
    names = archive.namelist()
    if len(set(names)) != len(names):
        archive.close()
        dup = next(n for n in names if names.count(n) > 1)
        raise UnsafeModelError(
            f"the archive holds two members named {shorten(dup)}; torch and Python's zip reader could "
            "read different ones", where=path, fix=fix)
    return archive, names


def check_export_archive(path: str) -> None:
    """Refuse a torch.export archive that would run code when loaded or run (see the module docstring).

    Reads the zip directory and every ``*.json`` member (plain :mod:`json`); raises
    :class:`UnsafeModelError` naming the member and field, or :class:`ModelError` for a file that is
    not a zip archive. Returns None for an archive Assay may hand to ``torch.export.load``.
    """
    export_fix = "save the model with torch.export.save(torch.export.export(model, (example,)), 'model.pt2')"
    archive, names = _zip_members(path, "torch.export", export_fix)
    with archive:
        if any(n.startswith("data/aotinductor/") or "/data/aotinductor/" in n for n in names):
            raise UnsafeModelError(
                "this .pt2 package holds AOTInductor-compiled code; Assay does not load native code from "
                "model files", where=path,
                fix="save the exported program itself: torch.export.save(torch.export.export(model, "
                "(example,)), path)")
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                document = json.loads(archive.read(name).decode("utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise ModelError(f"{name} in the archive is not valid JSON: {shorten(str(exc), 200)}", where=path,
                                 fix=export_fix) from exc
            check_export_document(document, member=name, where=path)


def example_input_problem(key_paths: Iterable[Iterable[object]]) -> str | None:
    """Why loaded example inputs are unsafe to unlift with, or None.

    ``key_paths`` are the pytree key paths of the example-input leaves, each entry a key object with
    ``.key`` (dict entries), ``.idx`` (sequence positions) or ``.name`` (attributes). torch writes them
    into guard code; every dict key and attribute name must be an identifier.
    """
    for key_path in key_paths:
        for entry in key_path:
            if hasattr(entry, "idx"):
                continue
            value = getattr(entry, "key", getattr(entry, "name", entry))
            if not (type(value) is int or _is_identifier(value)):
                return f"has an input key {shorten(value, 60)}, which is not an identifier"
    return None


def check_example_inputs(key_paths: Iterable[Iterable[object]], *, where: str) -> None:
    """Raise :class:`UnsafeModelError` when :func:`example_input_problem` finds a problem."""
    if problem := example_input_problem(key_paths):
        raise UnsafeModelError(f"the archive's example inputs {problem}; torch writes input keys into code",
                               where=where, fix=EXPORT_FIX)


# --------------------------------------------------------------------------- TorchScript

SCRIPT_OP_NAMESPACES = frozenset({
    "aten", "prim", "prims", "quantized", "_quantized", "quantized_decomposed", "mkldnn", "mkldnn_prepacked",
    "onednn", "sparse", "mkl", "xnnpack", "profiler",
})
SCRIPT_CLASS_NAMESPACES = frozenset({"quantized", "sparse", "mkldnn", "xnnpack", "onednn"})
# Namespaces of operators and classes that talk to other processes or the network, refused wherever the
# name appears (so that an alias such as ``o = torch.ops; o.c10d.x`` cannot slip past the chain rules).
DENIED_NAMESPACES = frozenset({
    "c10d", "_c10d_functional", "_c10d_functional_autograd", "symm_mem", "_dtensor", "debugprims",
    "dist_c10d", "dist_rpc", "dist_autograd", "_dist_autograd",
})
_NAME_LOOKUPS = frozenset({"getattr", "hasattr"})


def _attribute_chain(node: ast.AST) -> list[str]:
    """``torch.ops.aten`` -> ['torch', 'ops', 'aten']; [] when the chain does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return []


def _script_name_problem(owner: list[str], name: str) -> str | None:
    """The rule for ``owner.name`` in TorchScript code (``owner`` is the attribute chain before it)."""
    if name in DENIED_OPS:
        return f"calls {name}, which reads or writes files or talks to other processes"
    if name in DENIED_NAMESPACES:
        return f"uses {name}, a namespace of operators that talk to other processes"
    if owner in (["ops"], ["torch", "ops"]) and name not in SCRIPT_OP_NAMESPACES:
        return f"calls operators of namespace {name!r}, outside {sorted(SCRIPT_OP_NAMESPACES)}"
    if owner[-2:] == ["torch", "classes"] and name not in SCRIPT_CLASS_NAMESPACES:
        return f"uses custom classes of namespace {name!r}, outside {sorted(SCRIPT_CLASS_NAMESPACES)}"
    return None


def torchscript_source_problem(source: str) -> str | None:
    """Why a TorchScript code file of an archive must not be compiled, or None.

    TorchScript resolves operators by the names its source spells (``torch.save``, ``ops.c10d.x``,
    ``getattr(torch, "save")``), so every name, attribute, import and ``getattr``/``hasattr`` string
    is checked against the operators and namespaces that touch files, processes or the network.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "cannot be parsed, so its operators cannot be checked"
    for node in ast.walk(tree):
        problem = None
        if isinstance(node, ast.Name):
            problem = _script_name_problem([], node.id)
        elif isinstance(node, ast.Attribute):
            problem = _script_name_problem(_attribute_chain(node.value), node.attr)
        elif isinstance(node, ast.alias):
            parts = node.name.split(".")
            problem = f"imports {node.name} under another name" if node.asname else next(
                (p for i, part in enumerate(parts) if (p := _script_name_problem(parts[:i], part))), None)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _NAME_LOOKUPS:
            if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant) \
                    or not isinstance(node.args[1].value, str):
                problem = f"calls {node.func.id} with a name that is not a literal"
            else:
                problem = _script_name_problem(_attribute_chain(node.args[0]), node.args[1].value)
        if problem:
            return problem
    return None


def check_torchscript_archive(path: str) -> None:
    """Refuse a TorchScript archive whose code names operators that touch files, processes or the
    network (see the module docstring); :class:`ModelError` for a file that is not a zip archive."""
    fix = "save the model with torch.jit.save(torch.jit.script(model), path) (a zip archive)"
    archive, names = _zip_members(path, "TorchScript zip", fix)
    with archive:
        for name in names:
            if not name.endswith(".py"):
                continue
            try:
                source = archive.read(name).decode("utf-8")
            except UnicodeDecodeError:
                source = "\0"
            if problem := torchscript_source_problem(source):
                raise UnsafeModelError(f"TorchScript code {name} {problem}; it would run when the model is "
                                       "loaded or called", where=path, fix=SCRIPT_FIX)


def script_node_kind_problem(kind: str) -> str | None:
    """Why a TorchScript graph node kind (``aten::save``) must not run, or None."""
    namespace, _, op = kind.partition("::")
    if op in DENIED_OPS:
        return f"calls {kind}, which reads or writes files or talks to other processes"
    if namespace not in SCRIPT_OP_NAMESPACES:
        return f"calls {kind}, outside the operator namespaces {sorted(SCRIPT_OP_NAMESPACES)}"
    return None


def check_script_node_kinds(kinds: Iterable[str], *, where: str) -> None:
    """Raise :class:`UnsafeModelError` for the first node kind :func:`script_node_kind_problem` refuses."""
    for kind in sorted(set(kinds)):
        if problem := script_node_kind_problem(kind):
            raise UnsafeModelError(f"the loaded TorchScript graph {problem}", where=where, fix=SCRIPT_FIX)


# --------------------------------------------------------------------------- ONNX external data


def external_data_problem(location: object, model_dir: Path) -> str | None:
    """Why an ONNX tensor's external-data ``location`` must not be read, or None.

    It must be a relative path with no ``..`` part, naming a regular file that, links resolved, lies
    inside ``model_dir`` (the model file's folder), as the ONNX external-data convention says.
    """
    if not isinstance(location, str) or not location or "\0" in location:
        return "is empty or not a path"
    pure = PurePosixPath(location.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"[A-Za-z]:", location) or location.startswith(("/", "\\")):
        return "is an absolute path"
    if ".." in pure.parts:
        return "climbs out of the model's folder with '..'"
    base = model_dir.resolve()
    target = (base / pure).resolve()
    if not target.is_relative_to(base):
        return "leads out of the model's folder through a link"
    if target.exists() and not target.is_file():
        return "is not a regular file"
    return None
