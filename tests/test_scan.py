"""``assay scan`` and the loaders' pre-load pickle scan (assay.models.pickle_scan, assay.security.scan).

Malicious pickles are built here (``__reduce__`` returning ``os.system``/``eval``, hand-written opcodes for
``getattr`` chains, ``STACK_GLOBAL`` via the memo, protocol 0), put where torch puts pickles (a ``torch.save``
zip, a zip inside a zip) and scanned; a marker file shows nothing ran. Which global each payload really
reaches is checked against an independent oracle: :mod:`pickle` itself, with a ``find_class`` that records
the request and returns an inert stub. Clean files torch writes (state dicts, checkpoints, TorchScript,
torch.export) scan safe, and the verdicts are compared with picklescan and fickling.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.cli import main
from assay.errors import OptionError, UnsafeModelError, UserError
from assay.evidence.schema import Section
from assay.models import pickle_scan
from assay.models.pickle_scan import ALLOWED_GLOBALS, classify_global, scan_file, scan_pickle_bytes
from assay.security import scan_model, write_scan


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(2 * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _System:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


def _text(s: str) -> bytes:
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _stack_global_via_memo(command: str) -> bytes:
    """Protocol 4: 'os' and 'system' memoized, popped, fetched back with BINGET, then STACK_GLOBAL + REDUCE."""
    return (b"\x80\x04" + _text("os") + b"\x94" + b"0" + _text("system") + b"\x94" + b"0" + b"h\x00h\x01\x93"
            + _text(command) + b"\x85R.")


def _getattr_chain(command: str) -> bytes:
    """Protocol 0: getattr(__import__('os'), 'system')(command)."""
    return (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'" + command.encode()
            + b"'\ntR.")


class _Stub:
    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()

    def __getattr__(self, name: str) -> _Stub:
        return _Stub()


def _globals_pickle_resolves(data: bytes) -> set[str]:
    """Oracle: the globals Python's own unpickler asks for, each answered with an inert stub (nothing runs); Python 2
    names mapped as pickle's own find_class maps them (``__builtin__.eval`` -> ``builtins.eval``)."""
    import _compat_pickle

    asked: set[str] = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            asked.add(f"{module}.{name}")
            return _Stub()

    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        try:
            Recording(stream).load()
        except Exception:  # a truncated payload still asked for what it asked for
            break
    return asked


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scan")
    marker = d / "MARKER"
    net = _Net().eval()
    out: dict[str, Path] = {"marker": marker}
    torch.save(net.state_dict(), out.setdefault("state_dict", d / "state_dict.pt"))
    torch.save(net.state_dict(), out.setdefault("legacy", d / "legacy.pt"), _use_new_zipfile_serialization=False)
    optimizer = torch.optim.SGD(net.parameters(), 0.1).state_dict()
    torch.save({"epoch": 3, "state_dict": net.state_dict(), "optimizer": optimizer,
                "half": torch.ones(2, dtype=torch.bfloat16)}, out.setdefault("checkpoint", d / "ckpt.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated from torch 2.10
        torch.jit.save(torch.jit.script(net), out.setdefault("script", d / "script.pt"))
        torch.jit.save(torch.jit.trace(net, torch.zeros(2, 1, 8, 8)), out.setdefault("traced", d / "traced.pt"))
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),)), out.setdefault("export", d / "m.pt2"))
    for protocol in (0, 2, 4):
        (d / f"system_p{protocol}.pkl").write_bytes(pickle.dumps(_System(marker), protocol=protocol))
        out[f"system_p{protocol}"] = d / f"system_p{protocol}.pkl"
    out["eval"] = d / "eval.pkl"
    out["eval"].write_bytes(pickle.dumps(_Eval(marker), protocol=2))
    out["memo"] = d / "memo.pkl"
    out["memo"].write_bytes(_stack_global_via_memo(f"touch {marker}"))
    out["getattr"] = d / "getattr.pkl"
    out["getattr"].write_bytes(_getattr_chain(f"touch {marker}"))
    torch.save({"w": torch.zeros(3), "x": _System(marker)}, out.setdefault("evil_zip", d / "evil.pt"))
    out["nested"] = d / "nested.zip"
    with zipfile.ZipFile(out["nested"], "w") as archive:
        archive.write(out["evil_zip"], "outer/data/inner.pt")
        archive.writestr("outer/readme.txt", "hello")
    torch.save(net, out.setdefault("full_module", d / "full_module.pt"))
    return out


CLEAN = ["state_dict", "legacy", "checkpoint", "script", "traced", "export"]
MALICIOUS = ["system_p0", "system_p2", "system_p4", "eval", "memo", "getattr", "evil_zip", "nested"]


def test_the_allow_list_is_torch_weights_only_allow_list() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    assert set(_get_allowed_globals()) == set(ALLOWED_GLOBALS)


@pytest.mark.parametrize("name", CLEAN)
def test_files_torch_writes_scan_safe(files: dict[str, Path], name: str) -> None:
    report = scan_model(files[name])
    assert report.verdict == "safe", report.findings
    assert report.pickles >= 1


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_pickles_are_unsafe_and_never_run(files: dict[str, Path], name: str) -> None:
    report = scan_model(files[name])
    assert report.verdict == "unsafe"
    dangerous = {f.global_name for f in report.findings if f.severity == "dangerous"}
    assert dangerous & {"posix.system", "os.system", "nt.system", "builtins.eval", "builtins.getattr"}
    assert not files["marker"].exists()


@pytest.mark.parametrize("name", ["system_p0", "system_p2", "system_p4", "eval", "memo", "getattr"])
def test_flagged_globals_are_the_ones_pickle_itself_resolves(files: dict[str, Path], name: str) -> None:
    data = files[name].read_bytes()
    findings, seen, count = scan_pickle_bytes(data)
    assert count == 1
    flagged = {f.global_name for f in findings if f.opcode in ("GLOBAL", "STACK_GLOBAL", "INST")}
    assert flagged == _globals_pickle_resolves(data) == set(seen)
    assert not files["marker"].exists()


def test_findings_say_where(files: dict[str, Path]) -> None:
    report = scan_model(files["nested"])
    first = next(f for f in report.findings if f.opcode == "GLOBAL")
    assert first.member == "outer/data/inner.pt!evil/data.pkl"
    data = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(files["nested"]).read("outer/data/inner.pt"))).read(
        "evil/data.pkl")
    assert data[first.offset:first.offset + 1] == b"c"  # GLOBAL's opcode byte at the reported offset
    memo = scan_model(files["memo"]).findings[0]
    assert (memo.opcode, memo.offset) == ("STACK_GLOBAL", _stack_global_via_memo("x").index(b"\x93"))


def test_inst_and_extension_codes_are_flagged() -> None:
    inst = b"(S'touch x'\nios\nsystem\n."  # protocol 0 INST: import and call in one opcode
    assert _globals_pickle_resolves(inst) == {"os.system"}
    findings, _, _ = scan_pickle_bytes(inst)
    assert [(f.severity, f.global_name, f.opcode) for f in findings] == [("dangerous", "os.system", "INST")]
    findings, _, _ = scan_pickle_bytes(b"\x80\x02\x82\x07)R.")  # EXT1 7: a global from copyreg's registry
    assert {f.opcode for f in findings} == {"EXT1", "REDUCE"}
    assert all(f.severity == "unknown" for f in findings)


def test_a_protocol_0_pickle_after_the_legit_ones_is_flagged(tmp_path: Path) -> None:
    """The legacy torch.save format is several pickles in a row; ``torch.load(weights_only=False)`` reads them one by
    one, so an appended protocol-0 pickle would run. (A false negative found in review: only protocol 2-5 pickles
    were looked for after the first.)"""
    import pickle

    path = tmp_path / "appended.pt"
    path.write_bytes(pickle.dumps({"w": 1}, protocol=2) + b"cos\nsystem\n(S'echo never'\ntR.")
    scan = scan_file(path)
    assert any(f.severity == "dangerous" and f.global_name == "os.system" for f in scan.findings)
    assert scan.members[0].pickles == 2


def test_truncated_payload_is_still_flagged() -> None:
    findings, _, _ = scan_pickle_bytes(b"cos\nsystem\n(S'touch x'\ntR")  # no STOP: pickle runs it, then fails
    assert any(f.severity == "dangerous" and f.global_name == "os.system" for f in findings)
    assert any(f.opcode == "MALFORMED" for f in findings)


@pytest.mark.parametrize(("module", "name", "severity"), [
    ("torch._utils", "_rebuild_tensor_v2", None),
    ("collections", "OrderedDict", None),
    ("__builtin__", "set", None),  # protocol-2 spelling of builtins.set
    ("__builtin__", "eval", "dangerous"),
    ("subprocess", "Popen", "dangerous"),
    ("torch._utils", "os.system", "dangerous"),  # a dotted name walks into os through an allowed module
    ("torch", "load", "dangerous"),
    ("numpy.core.multiarray", "_reconstruct", "unknown"),
    ("__main__", "Net", "unknown"),
    ("__torch__", "Net", "unknown"),  # only allowed inside a TorchScript archive
])
def test_classify_global(module: str, name: str, severity: str | None) -> None:
    found = classify_global(module, name)
    assert (found[0] if found else None) == severity
    if module == "__torch__":
        assert classify_global(module, name, script=True) is None


def test_a_pickled_module_is_unknown_not_safe(files: dict[str, Path]) -> None:
    report = scan_model(files["full_module"])
    assert report.verdict == "unknown"
    assert any(f.global_name == "torch.nn.modules.conv.Conv2d" for f in report.findings)


def test_bombs_and_deep_nesting_are_findings_not_crashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inner = b"\x80\x02}q\x00."
    for _ in range(pickle_scan.MAX_DEPTH + 2):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("x/data.pkl" if inner.startswith(b"\x80") else "x/inner.pt", inner)
        inner = buf.getvalue()
    deep = tmp_path / "deep.zip"
    deep.write_bytes(inner)
    report = scan_model(deep)
    assert report.verdict == "unknown" and any(f.opcode == "LIMIT" for f in report.findings)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("b/data.pkl", b"\x80\x02" + b"N0" * 200_000 + b"N.")
    monkeypatch.setattr(pickle_scan, "MAX_MEMBER_BYTES", 10_000)
    report = scan_model(bomb)
    assert report.verdict == "unknown"
    assert any(f.opcode == "LIMIT" and "uncompressed" in f.message for f in report.findings)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_scanning_arbitrary_bytes_never_raises(data: bytes) -> None:
    scan_pickle_bytes(b"\x80\x04" + data, several=True)
    scan_pickle_bytes(data)


# --------------------------------------------------------------------------- loaders


def test_loaders_refuse_malicious_pickles_before_torch_reads_them(files: dict[str, Path]) -> None:
    from assay.models import load_model

    for kwargs in ({"path_or_factory": str(files["evil_zip"])},
                   {"path_or_factory": "tests.test_scan:_Net", "weights": str(files["evil_zip"])}):
        with pytest.raises(UnsafeModelError) as err:
            load_model(**kwargs)
        message = str(err.value)
        assert "posix.system" in message or "os.system" in message
        assert "evil/data.pkl" in message and "never unpickles" in message and "Fix:" in message
    assert not files["marker"].exists()


def test_loaders_still_load_what_torch_writes(files: dict[str, Path]) -> None:
    from assay.models import load_model

    sample = torch.zeros(2, 1, 8, 8).numpy()
    for name in ("script", "traced", "export"):
        assert load_model(str(files[name]), sample=sample).info.num_classes == 3
    model = load_model("tests.test_scan:_Net", weights=str(files["state_dict"]), sample=sample)
    assert model.info.num_classes == 3


# --------------------------------------------------------------------------- ONNX, sha256, bundle


def _onnx_model(path: Path, *, domain: str = "", location: str | None = None) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "w")
    if location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        weight.external_data.add(key="location", value=location)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        nodes.append(helper.make_node("Evil", ["y"], ["z"], domain=domain))
        opsets.append(helper.make_opsetid(domain, 1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("z" if domain else "y", TensorProto.FLOAT, [1, 2])],
                              [weight])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_onnx_checks(tmp_path: Path) -> None:
    assert scan_model(_onnx_model(tmp_path / "ok.onnx")).verdict == "safe"
    custom = scan_model(_onnx_model(tmp_path / "custom.onnx", domain="evil.ops"))
    assert custom.verdict == "unknown" and "evil.ops" in custom.findings[0].message
    for location in ("/etc/passwd", "../outside.bin"):
        report = scan_model(_onnx_model(tmp_path / "ext.onnx", location=location))
        assert report.verdict == "unsafe" and report.findings[0].check == "onnx-external-data"


def test_expected_sha256(files: dict[str, Path]) -> None:
    import hashlib

    path = files["state_dict"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert scan_model(path, expect_sha256=digest.upper()).sha256 == digest
    with pytest.raises(UnsafeModelError) as err:
        scan_model(path, expect_sha256="0" * 64)
    assert digest in str(err.value) and "0" * 64 in str(err.value)
    with pytest.raises(OptionError):
        scan_model(path, expect_sha256="abc")
    with pytest.raises(UserError):
        scan_model(path.parent / "missing.pt")


def test_the_bundle_is_an_evidence_section(files: dict[str, Path], tmp_path: Path) -> None:
    out = write_scan(scan_model(files["evil_zip"]), tmp_path / "bundle")
    section = Section.model_validate_json((out / "scan.json").read_text())
    assert section.verdict == "fail" and section.metrics["dangerous_findings"].value == 2
    assert "posix.system" in (out / "scan.md").read_text() or "os.system" in (out / "scan.md").read_text()


# --------------------------------------------------------------------------- other scanners


def test_verdicts_agree_with_picklescan_where_it_reads_the_file(files: dict[str, Path]) -> None:
    """picklescan: dangerous -> infected; every malicious file here but the nested zip is caught by both. The
    differences, and who is right:
    - nested zip (a torch.save zip inside a zip, the layout of a .pt2's sample inputs): picklescan does not open
      zips inside zips and says clean; torch.export.load does read such inner archives, so unsafe is right.
    - TorchScript: picklescan calls ``__torch__.*`` and ``torch.jit._pickle.*`` suspicious (not infected); they
      are read by TorchScript's C++ unpickler, which builds only classes compiled from the archive's own code
      (checked by check_torchscript_archive), so safe is right.
    - a pickled nn.Module: picklescan suspicious, Assay unknown: the same call (loading it imports torch.nn code)."""
    scanner = pytest.importorskip("picklescan.scanner")
    for name in CLEAN + MALICIOUS + ["full_module"]:
        theirs = scanner.scan_file_path(str(files[name]))
        ours = scan_model(files[name]).verdict
        if name == "nested":
            assert (ours, theirs.infected_files) == ("unsafe", 0)
        elif name in ("script", "traced"):
            assert (ours, theirs.infected_files, theirs.suspicious_count > 0) == ("safe", 0, True)
        elif name == "full_module":
            assert (ours, theirs.infected_files, theirs.suspicious_count > 0) == ("unknown", 0, True)
        else:
            assert (ours == "unsafe") == (theirs.infected_files > 0), name
    assert not files["marker"].exists()


def test_verdicts_agree_with_fickling_on_malicious_pickles(files: dict[str, Path], tmp_path: Path) -> None:
    """fickling reads plain pickles (not torch zips: it finds 'no pickle files' in them), so each file's pickle is
    given to it as a file. It agrees on every malicious one. On clean torch pickles it differs: its allow-list is
    the standard library, so ``torch._utils._rebuild_tensor_v2`` makes a state dict 'likely unsafe' (and a
    TorchScript data.pkl 'overtly malicious'); Assay's allow-list is torch's weights-only one, which is what
    torch.load(weights_only=True) itself accepts, so safe is right there."""
    fickling = pytest.importorskip("fickling")
    for name in MALICIOUS + ["state_dict", "script"]:
        path = files[name]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.endswith(("data.pkl", ".pt")))
                data = archive.read(member)
            if data.startswith(b"PK"):
                with zipfile.ZipFile(io.BytesIO(data)) as inner:
                    data = inner.read(next(n for n in inner.namelist() if n.endswith("data.pkl")))
            path = tmp_path / f"{name}.pkl"
            path.write_bytes(data)
        ours = scan_model(files[name]).verdict
        theirs_safe = fickling.is_likely_safe(str(path))
        if name in MALICIOUS:
            assert (ours, theirs_safe) == ("unsafe", False), name
        else:
            assert (ours, theirs_safe) == ("safe", False), name  # fickling's false positive, see the docstring
    assert not files["marker"].exists()


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(files["state_dict"])]) == 0
    assert "SAFE" in capsys.readouterr().out
    assert main(["scan", str(files["evil_zip"]), "--out", str(tmp_path / "o"), "-q"]) == 1
    assert (tmp_path / "o" / "scan.json").exists()
    assert main(["scan", str(files["full_module"]), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "unknown"
    for args in (["scan", str(tmp_path / "missing.pt")],
                 ["scan", str(files["state_dict"]), "--expect-sha256", "1" * 64],
                 ["scan", str(files["state_dict"]), "--expect-sha256", "xyz"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("Error:") and "Fix:" in err and "Traceback" not in err
    assert not files["marker"].exists()
