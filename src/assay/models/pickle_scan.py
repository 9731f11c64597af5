"""Static scan of every pickle inside a model file, never executing (nor importing) anything it names.

A pickle is a program for a small stack machine; ``GLOBAL``/``STACK_GLOBAL``/``INST`` import any callable
by name and ``REDUCE``/``NEWOBJ``/``OBJ``/``BUILD`` call it, so a ``torch.save`` file can run
``os.system`` when ``torch.load(weights_only=False)`` (or plain :mod:`pickle`) reads it. This module walks
the opcodes with :func:`pickletools.genops` (protocols 0-5) and replays the stack symbolically (strings,
globals, call results, the memo), which is what resolves ``STACK_GLOBAL`` whose module and name were pushed
as strings earlier or fetched from the memo (``BINGET``). Every imported or called global outside
:data:`ALLOWED_GLOBALS` is a :class:`PickleFinding`: ``dangerous`` when it runs commands, code, imports,
attribute lookups, files or the network (:data:`DANGEROUS_MODULES`, :data:`DANGEROUS_NAMES`), ``unknown``
otherwise (the file needs that code to load, and nothing vouches for it).

The allow-list is what ``torch.save`` writes for tensors, parameters and state dicts:
torch 2.13's ``torch._weights_only_unpickler._get_allowed_globals()`` (the rebuild functions, storage and
tensor classes, dtypes, ``torch.Size``, ``torch.device``, ``collections.OrderedDict``, ...), written out
here so that a scan imports nothing (``tests/test_scan.py`` checks the two lists agree). Two more sets
hold only inside TorchScript archives (a ``code/`` folder or ``constants.pkl`` next to the pickle), whose
pickles TorchScript's C++ unpickler reads: ``__torch__.*`` (classes compiled from the archive's own code,
which :func:`assay.models.safety.check_torchscript_archive` audits) and ``torch.jit._pickle.*`` (list
builders).

Where pickles are found (:func:`scan_file`): a plain pickle file, including the legacy ``torch.save``
format (several pickles in a row, then raw storages); zip archives (``torch.save``'s ``*/data.pkl``,
TorchScript's ``data.pkl``/``constants.pkl``/``*.debug_pkl``, ``.pt2`` archives, whose sample inputs are
a ``torch.save`` zip inside the zip), members named like pickles, members that open with a pickle header
and parse as one, and zips inside zips. Tensor storages are raw bytes: only their first bytes are read.

Bounds (decompression bombs, huge members): a member larger than :data:`MAX_MEMBER_BYTES` uncompressed,
more than :data:`MAX_TOTAL_BYTES` read in all, more than :data:`MAX_MEMBERS` members, or zips nested
deeper than :data:`MAX_DEPTH` are findings (``unknown``: not scanned, so not shown safe), never crashes.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

__all__ = [
    "ALLOWED_GLOBALS",
    "DANGEROUS_MODULES",
    "DANGEROUS_NAMES",
    "IMPORT_OPCODES",
    "MAX_DEPTH",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_TOTAL_BYTES",
    "MemberScan",
    "PickleFinding",
    "PickleScan",
    "check_pickles",
    "classify_global",
    "scan_file",
    "scan_pickle_bytes",
]

FindingSeverity = Literal["dangerous", "unknown"]

MAX_MEMBER_BYTES = 512 * 2**20  # one pickle or nested zip, uncompressed
MAX_TOTAL_BYTES = 2 * 2**30  # everything read while scanning one file
MAX_MEMBERS = 100_000
MAX_DEPTH = 3  # zips inside zips (a .pt2's sample inputs are depth 1)
_HEAD_BYTES = 16  # what is read of a member that is not named like a pickle



def _words(text: str) -> list[str]:
    return text.split()


# torch 2.13 torch._weights_only_unpickler._get_allowed_globals(), every key (tests/test_scan.py compares).
_TORCH_DTYPES = _words(
    "bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 float16 float32 "
    "float4_e2m1fn_x2 float64 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu int1 int16 "
    "int2 int3 int32 int4 int5 int6 int64 int7 int8 qint32 qint8 quint2x4 quint4x2 quint8 uint1 uint16 uint2 uint3 "
    "uint32 uint4 uint5 uint6 uint64 uint7 uint8 per_channel_affine per_channel_affine_float_qparams "
    "per_channel_symmetric per_tensor_affine per_tensor_symmetric")
_STORAGES = _words("BFloat16 Bool Byte Char ComplexDouble ComplexFloat Double Float Half Int Long QInt32 QInt8 "
                   "QUInt2x4 QUInt4x2 QUInt8 Short")
_CUDA_STORAGES = _words("BFloat16 Bool Byte Char ComplexDouble ComplexFloat Double Float Half Int Long Short")
_TENSORS = _words("BFloat16 Bool Byte Char Double Float Half Int Long Short")
_SPARSE_TENSORS = _words("BFloat16 Byte Char Double Float Half Int Long Short")
_REBUILDS = _words("_rebuild_device_tensor_from_cpu_tensor _rebuild_device_tensor_from_numpy "
             "_rebuild_meta_tensor_no_storage _rebuild_nested_tensor _rebuild_parameter "
             "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor _rebuild_tensor "
             "_rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_wrapper_subclass")

ALLOWED_GLOBALS: frozenset[str] = frozenset({
    "collections.OrderedDict", "collections.Counter", "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device", "_codecs.encode",
    "builtins.bytearray", "builtins.set", "builtins.complex", "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage", "torch._tensor._rebuild_from_type_v2",
    *(f"torch.{name}" for name in _TORCH_DTYPES),
    *(f"torch.{name}Storage" for name in _STORAGES),
    *(f"torch.cuda.{name}Storage" for name in _CUDA_STORAGES),
    *(f"torch.{name}Tensor" for name in _TENSORS),
    *(f"torch.cuda.{name}Tensor" for name in _TENSORS),
    *(f"torch.sparse.{name}Tensor" for name in _SPARSE_TENSORS),
    *(f"torch.cuda.sparse.{name}Tensor" for name in _SPARSE_TENSORS),
    *(f"torch._utils.{name}" for name in _REBUILDS),
})
# TorchScript's C++ unpickler resolves these itself (torch/csrc/jit/serialization/unpickler.cpp).
SCRIPT_PICKLE_FUNCTIONS = frozenset(f"torch.jit._pickle.{name}" for name in (
    "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_complexlist",
    "build_tensor_from_id", "restore_type_tag"))

# Modules whose every callable runs commands or code, imports, touches files, processes or the network.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "socket", "_socket", "shutil", "runpy",
    "importlib", "imp", "zipimport", "pkgutil", "pty", "pdb", "bdb", "code", "codeop", "ctypes", "_ctypes",
    "marshal", "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "multiprocessing",
    "_posixsubprocess", "signal", "webbrowser", "urllib", "urllib2", "urllib3", "http", "httplib", "requests",
    "httpx", "aiohttp", "ftplib", "smtplib", "telnetlib", "asyncio", "platform", "commands", "pip",
    "setuptools", "distutils", "ensurepip", "venv", "types", "_thread", "thread", "threading", "tempfile",
    "pathlib", "io", "_io", "site", "gc", "inspect", "sqlite3", "ssl", "paramiko", "timeit", "trace",
    "cProfile", "profile", "doctest", "unittest", "idlelib", "lib2to3", "xmlrpc", "socketserver", "mailbox",
    "tarfile", "zipfile", "glob", "fileinput", "linecache", "tkinter", "operator", "sysconfig", "torch.hub",
    "torch.serialization", "torch.jit", "torch.package",
    "torch.utils.cpp_extension", "torch.distributed", "torch.multiprocessing", "numpy.testing",
    "numpy.distutils", "numpy.f2py", "numpy.lib.npyio", "numpy.ctypeslib",
})
# Callables that run code or look names up, in whatever module they are reached through.
DANGEROUS_NAMES = frozenset({
    "eval", "exec", "execfile", "compile", "open", "getattr", "setattr", "delattr", "__import__", "globals",
    "locals", "vars", "input", "breakpoint", "apply", "file", "reload", "system", "popen", "spawn",
    "load", "loads", "save", "from_file", "fromfile", "memmap", "runstring", "attrgetter", "methodcaller",
    "__getattribute__", "__getattr__", "__globals__", "__builtins__", "__dict__", "__class__", "__subclasses__",
    "__reduce__", "__reduce_ex__", "__code__", "__call__", "__init__", "__new__", "__setstate__",
})
_OPERATOR_SAFE = frozenset({"operator.getitem", "operator.itemgetter", "_operator.getitem"})
_BUILTIN_MODULES = frozenset({"builtins", "__builtin__", "__builtins__"})

IMPORT_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})
_CALLS = frozenset({"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST", "BUILD"})
_TEXT_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
                       "BINUNICODE8"})
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".debug_pkl", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".dill")


@dataclass(frozen=True)
class PickleFinding:
    """One imported or called global outside the allow-list (or a part of the file that was not scanned).

    ``member``: where the pickle is (``!`` separates nesting levels: ``a/data/x.pt!x/data.pkl``; "" for a
    plain pickle file); ``offset``: byte offset of the opcode in that member; ``opcode``: the pickle opcode
    (``GLOBAL``, ``STACK_GLOBAL``, ``REDUCE``, ...) or ``LIMIT``/``MALFORMED`` for what could not be read.
    """

    severity: FindingSeverity
    global_name: str
    member: str
    offset: int
    opcode: str
    reason: str

    def where(self) -> str:
        place = f"{self.member} " if self.member else ""
        return f"{place}byte {self.offset} ({self.opcode})"


@dataclass
class MemberScan:
    """One archive member (or the plain file): what it is and the globals its pickles import."""

    name: str
    kind: Literal["pickle", "zip", "data", "skipped"]
    size: int
    globals: list[str] = field(default_factory=list)
    pickles: int = 0


@dataclass
class PickleScan:
    """Everything :func:`scan_file` found in one file."""

    kind: Literal["pickle", "zip", "other"]
    members: list[MemberScan] = field(default_factory=list)
    findings: list[PickleFinding] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def pickle_count(self) -> int:
        return sum(m.pickles for m in self.members)

    @property
    def dangerous(self) -> list[PickleFinding]:
        return [f for f in self.findings if f.severity == "dangerous"]


def _normalize(module: str, name: str) -> tuple[str, str]:
    """Python 2 names as protocol-2 pickles spell them (``__builtin__``) -> Python 3, as pickle maps them."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def classify_global(module: str, name: str, *, script: bool = False) -> tuple[FindingSeverity, str] | None:
    """None for an allow-listed global; else (severity, why). ``script``: inside a TorchScript archive."""
    module, name = _normalize(module, name)
    full = f"{module}.{name}"
    if full in ALLOWED_GLOBALS or (script and (full in SCRIPT_PICKLE_FUNCTIONS or module == "__torch__"
                                               or module.startswith("__torch__."))):
        return None
    if full in _OPERATOR_SAFE:
        return "unknown", "not in the allow-list of what torch.save writes"
    parts = [*module.split("."), *name.split(".")]
    if module in _BUILTIN_MODULES and name in DANGEROUS_NAMES:
        return "dangerous", f"{name} runs code or looks up names"
    for i in range(len(parts)):
        if ".".join(parts[: i + 1]) in DANGEROUS_MODULES:
            return "dangerous", f"{'.'.join(parts[: i + 1])} runs commands, imports code or touches files/network"
    if dunder := next((p for p in name.split(".") if p.startswith("__") and p.endswith("__")), None):
        return "dangerous", f"reaches {dunder}, a route to arbitrary code"
    if "." in name:
        hidden = next((p for p in name.split(".") if p in DANGEROUS_MODULES or p in DANGEROUS_NAMES), None)
        if hidden:
            return "dangerous", f"reaches {hidden} through attributes of {module}"
        return "unknown", "a dotted name walks attributes of the module (pickle protocol 4)"
    if name in DANGEROUS_NAMES:
        return "dangerous", f"{name} runs code, loads files or looks up names"
    return "unknown", "not in the allow-list of what torch.save writes"


@dataclass(frozen=True)
class _Global:
    name: str
    problem: tuple[FindingSeverity, str] | None


@dataclass(frozen=True)
class _Result:
    """What calling ``callee`` returned (still dangerous when the callee was)."""

    callee: object


class _Mark:
    pass


_MARK = _Mark()
_UNRESOLVED = _Global("<a name computed at load time>", ("dangerous", "module and name are not given as text, so "
                                                                      "the callable cannot be known before loading"))


def _effect(op: pickletools.OpcodeInfo) -> tuple[bool, int, int]:
    """(pops to a mark, items popped below it, items pushed): the stack effect pickletools' table gives an opcode."""
    uses_mark = pickletools.markobject in op.stack_before
    below = [s for s in op.stack_before if s not in (pickletools.markobject, pickletools.stackslice)]
    return uses_mark, len(below), len(op.stack_after)


_EFFECTS = {op.name: _effect(op) for op in pickletools.opcodes}


def _origin(value: object) -> _Global | None:
    while isinstance(value, _Result):
        value = value.callee
    return value if isinstance(value, _Global) else None


def _scan_one(ops: Iterator[tuple[pickletools.OpcodeInfo, object, int | None]], *, member: str, script: bool,
              findings: list[PickleFinding], seen: set[str]) -> None:
    """Replay one pickle's opcodes on a symbolic stack, appending findings (deduplicated by global and opcode)."""
    stack: list[object] = []
    marks: list[list[object]] = []
    memo: dict[int, object] = {}
    reported: set[tuple[str, str]] = set()

    def report(target: object, opcode: str, pos: int) -> None:
        found = _origin(target)
        if found is None:
            if opcode == "BUILD":
                return  # state set on a plain container or a persistent-id object: nothing is called
            found = _Global("<a value that is not a named global>", ("unknown", "calls an object built by the "
                                                                                "pickle itself"))
        if found.problem is None:
            if isinstance(target, _Result) and opcode != "BUILD":
                found = _Global(f"<what {found.name} returned>", ("unknown", "calls the value another call returned"))
            else:
                return
        assert found.problem is not None
        if (found.name, opcode) in reported:
            return
        reported.add((found.name, opcode))
        findings.append(PickleFinding(found.problem[0], found.name, member, pos, opcode, found.problem[1]))

    def pop_mark() -> list[object]:
        nonlocal stack
        items = stack
        stack = marks.pop() if marks else []
        return items

    for op, arg, pos in ops:
        at = pos or 0
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            value = _Global(".".join(_normalize(module, attr)), classify_global(module, attr, script=script))
            seen.add(value.name)
            report(value, name, at)
            if name == "INST":
                pop_mark()
                value = _Result(value)  # type: ignore[assignment]
            stack.append(value)
        elif name == "STACK_GLOBAL":
            attr_v = stack.pop() if stack else None
            module_v = stack.pop() if stack else None
            if isinstance(module_v, str) and isinstance(attr_v, str):
                value = _Global(".".join(_normalize(module_v, attr_v)), classify_global(module_v, attr_v,
                                                                                          script=script))
            else:
                value = _UNRESOLVED
            seen.add(value.name)
            report(value, name, at)
            stack.append(value)
        elif name in ("EXT1", "EXT2", "EXT4"):
            value = _Global(f"<extension code {arg}>", ("unknown", "names a global through copyreg's extension "
                                                                  "registry, which the loading process fills"))
            seen.add(value.name)
            report(value, name, at)
            stack.append(value)
        elif name in _TEXT_OPS:
            stack.append(arg if isinstance(arg, str) else str(arg))
        elif name in ("REDUCE", "NEWOBJ"):
            args = stack.pop() if stack else None
            del args
            callee = stack.pop() if stack else None
            report(callee, name, at)
            stack.append(_Result(callee))
        elif name == "NEWOBJ_EX":
            del stack[-2:]
            callee = stack.pop() if stack else None
            report(callee, name, at)
            stack.append(_Result(callee))
        elif name == "OBJ":
            items = pop_mark()
            callee = items[0] if items else None
            report(callee, name, at)
            stack.append(_Result(callee))
        elif name == "BUILD":
            if stack:
                stack.pop()
            report(stack[-1] if stack else None, name, at)
        elif name == "DUP":
            stack.append(stack[-1] if stack else None)
        elif name == "MARK":
            marks.append(stack)
            stack = []
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1] if stack else None  # type: ignore[call-overload]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(int(arg)))  # type: ignore[call-overload]
        elif name == "STOP":
            return
        else:  # generic stack effect from pickletools' opcode table
            uses_mark, n_before, n_after = _EFFECTS[name]
            if uses_mark:
                pop_mark()
            if n_before:
                del stack[max(0, len(stack) - n_before):]
            stack.extend([None] * n_after)


def scan_pickle_bytes(data: bytes | IO[bytes], *, member: str = "", script: bool = False,
                      several: bool = False) -> tuple[list[PickleFinding], list[str], int]:
    """Scan one pickle (``several``: consecutive pickles, as the legacy ``torch.save`` format writes them, until
    the bytes stop being a pickle). Returns (findings, every global imported, pickles read). A first pickle that
    does not parse is a ``MALFORMED`` finding; later ones end the scan (legacy files continue with raw data), but
    what they import before the break is kept: ``pickle.load`` runs a protocol-0 pickle appended after the legit
    ones up to its first bad opcode, so every following pickle is parsed whatever protocol it opens with."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    findings: list[PickleFinding] = []
    seen: set[str] = set()
    count = 0
    while True:
        start = stream.tell()
        if not stream.read(1):
            break
        stream.seek(start)
        try:  # what a loader would execute before reaching a broken opcode is kept, broken or not
            _scan_one(pickletools.genops(stream), member=member, script=script, findings=findings, seen=seen)
        except (ValueError, EOFError, IndexError, KeyError, TypeError, OverflowError, MemoryError,
                UnicodeDecodeError) as exc:
            if count == 0:
                findings.append(PickleFinding("unknown", "<malformed pickle>", member, stream.tell(), "MALFORMED",
                                              f"the pickle could not be parsed ({type(exc).__name__}: "
                                              f"{str(exc)[:120]}); pickle might still read part of it"))
            break
        count += 1
        if not several:
            break
    return findings, sorted(seen), count


def _imports(findings: list[PickleFinding]) -> bool:
    return any(f.opcode not in ("MALFORMED", "LIMIT") for f in findings)


def _looks_like_pickle(head: bytes) -> bool:
    """A protocol 2-5 pickle opens with PROTO n."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _is_zip(head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


class _Budget:
    def __init__(self) -> None:
        self.bytes_read = 0
        self.members = 0


def _script_folders(names: list[str]) -> set[str]:
    """Folders (``"x/"``) holding a TorchScript archive's ``code/`` folder or ``constants.pkl``."""
    folders: set[str] = set()
    for n in names:
        if n.endswith("constants.pkl"):
            folders.add(n[: -len("constants.pkl")])
        elif (at := f"/{n}".find("/code/")) >= 0:
            folders.add(n[:at])
    return folders


def _scan_zip(archive: zipfile.ZipFile, *, label: str, depth: int, budget: _Budget, result: PickleScan) -> None:
    script_folders = _script_folders(archive.namelist())
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = info.filename
        shown = f"{label}!{name}" if label else name
        budget.members += 1
        if budget.members > MAX_MEMBERS:
            result.findings.append(PickleFinding("unknown", "<not scanned>", shown, 0, "LIMIT",
                                                 f"more than {MAX_MEMBERS} archive members"))
            return
        prefix = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        root = prefix.split("/")[0] + "/" if prefix else ""
        script = prefix in script_folders or root in script_folders
        named_pickle = name.lower().endswith(_PICKLE_SUFFIXES)
        try:
            with archive.open(info) as fh:
                head = fh.read(_HEAD_BYTES)
        except _MEMBER_READ_ERRORS as exc:
            _unreadable_member(result, shown, info.file_size, exc)
            continue
        budget.bytes_read += len(head)
        nested = _is_zip(head)
        if not (nested or named_pickle or _looks_like_pickle(head)):
            result.members.append(MemberScan(shown, "data", info.file_size))
            continue
        problem = None
        if info.file_size > MAX_MEMBER_BYTES:
            problem = f"it holds {info.file_size} bytes uncompressed (more than {MAX_MEMBER_BYTES})"
        elif budget.bytes_read + info.file_size > MAX_TOTAL_BYTES:
            problem = f"the scan would read more than {MAX_TOTAL_BYTES} bytes in all"
        elif nested and depth >= MAX_DEPTH:
            problem = f"zip archives are nested more than {MAX_DEPTH} deep"
        if problem:
            result.members.append(MemberScan(shown, "skipped", info.file_size))
            result.findings.append(PickleFinding("unknown", "<not scanned>", shown, 0, "LIMIT",
                                                 f"not scanned: {problem}"))
            continue
        try:
            data = archive.read(info)
        except _MEMBER_READ_ERRORS as exc:
            _unreadable_member(result, shown, info.file_size, exc)
            continue
        budget.bytes_read += len(data)
        if nested:
            try:
                inner = zipfile.ZipFile(io.BytesIO(data))
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                result.findings.append(PickleFinding("unknown", "<unreadable member>", shown, 0, "MALFORMED",
                                                     f"a zip archive that cannot be opened: {str(exc)[:120]}"))
                continue
            result.members.append(MemberScan(shown, "zip", info.file_size))
            with inner:
                _scan_zip(inner, label=shown, depth=depth + 1, budget=budget, result=result)
            continue
        findings, seen, count = scan_pickle_bytes(data, member=shown, script=script, several=True)
        if count == 0 and not named_pickle and not _imports(findings):  # raw bytes that open like a pickle
            result.members.append(MemberScan(shown, "data", info.file_size))
            continue
        result.members.append(MemberScan(shown, "pickle", info.file_size, seen, count))
        result.findings.extend(findings)


#: What reading one zip member can raise (corrupt data, unsupported compression, a member that lies about its size).
_MEMBER_READ_ERRORS = (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, EOFError, ValueError)


def _unreadable_member(result: PickleScan, shown: str, size: int, exc: BaseException) -> None:
    result.members.append(MemberScan(shown, "skipped", size))
    result.findings.append(PickleFinding("unknown", "<unreadable member>", shown, 0, "MALFORMED",
                                         f"the member cannot be read: {str(exc)[:120]}"))


def scan_file(path: str | Path) -> PickleScan:
    """Find and scan every pickle in ``path`` (a zip archive, or a plain or legacy-torch pickle file).

    Never imports or runs what the pickles name. Files that are neither zip archives nor pickles come back
    as kind ``other`` with no members. Raises OSError only when the file itself cannot be opened."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
        size = path.stat().st_size
        if _is_zip(head):
            result = PickleScan(kind="zip")
            budget = _Budget()
            try:
                archive = zipfile.ZipFile(fh)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                result.findings.append(PickleFinding("unknown", "<unreadable archive>", "", 0, "MALFORMED",
                                                     f"a zip archive that cannot be opened: {str(exc)[:120]}"))
                return result
            with archive:
                _scan_zip(archive, label="", depth=0, budget=budget, result=result)
            result.bytes_read = budget.bytes_read
            return result
        named = path.name.lower().endswith(_PICKLE_SUFFIXES)
        if not (named or _looks_like_pickle(head) or head[:1] in (b"(", b"c", b"]", b"}")):
            return PickleScan(kind="other")
        fh.seek(0)
        findings, seen, count = scan_pickle_bytes(fh, member="", several=True)
        if count == 0 and not named and not _looks_like_pickle(head) and not _imports(findings):
            return PickleScan(kind="other")
        return PickleScan(kind="pickle", members=[MemberScan(path.name, "pickle", size, seen, count)],
                          findings=findings, bytes_read=fh.tell())


def check_pickles(path: str | Path, *, fix: str) -> None:
    """Refuse, before any loader reads it, a file whose pickles import or call anything outside the allow-list.

    Raises :class:`~assay.errors.UnsafeModelError` naming the first such global (dangerous ones first), its
    archive member, byte offset and opcode. Parts not scanned because of a bound (``LIMIT``) or that do not
    parse (``MALFORMED``) are left to the loader, which reads pickles only with torch's restricted unpickler."""
    from assay.errors import UnsafeModelError

    scan = scan_file(path)
    found = [f for f in scan.findings if f.opcode not in ("LIMIT", "MALFORMED")]
    if not found:
        return
    first = min(found, key=lambda f: f.severity != "dangerous")
    verb = "imports" if first.opcode in IMPORT_OPCODES else "calls"
    more = f" (and {len(found) - 1} more finding(s); `assay scan` lists them)" if len(found) > 1 else ""
    raise UnsafeModelError(
        f"this file holds pickled Python objects that are not plain tensors: {first.where()} {verb} "
        f"{first.global_name} ({first.severity}: {first.reason}){more}; Assay never unpickles untrusted files",
        where=str(path), fix=fix)
