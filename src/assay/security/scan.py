"""``scan_model``: say whether a model file would run code if loaded, without loading it.

What is checked, by file kind (nothing in the file is imported, unpickled or executed):

- every pickle in the file (``torch.save`` zips and legacy files, TorchScript's ``data.pkl``, a ``.pt2``'s
  pickled sample inputs, zips inside zips): the globals it imports or calls, against the allow-list of
  what ``torch.save`` writes (:mod:`assay.models.pickle_scan`);
- ``torch.export`` archives: the JSON fields torch turns into code (:func:`assay.models.safety.check_export_archive`);
- TorchScript archives: the operators its code names (:func:`assay.models.safety.check_torchscript_archive`);
- ONNX: external-data locations (absolute, ``..`` or a link out of the model's folder:
  :func:`assay.models.safety.external_data_problem`; the data is not read) and custom operator domains
  (outside ``""``, ``ai.onnx``, ``ai.onnx.ml``, ``com.microsoft``; a domain of the model's own functions
  is not custom: those are graphs);
- ``.safetensors``: the header is JSON and holds only tensor entries and a text ``__metadata__`` map;
- ``expect_sha256``: the file's bytes are the pinned ones (a mismatch is an :class:`UnsafeModelError`).

Verdict: ``unsafe`` when any finding is dangerous (it would run commands or code, or read files outside
the model), ``unknown`` when something could not be shown safe (a global outside the allow-list that is
not known to be dangerous, a custom operator domain, a part not scanned because of a size bound, a file
kind Assay cannot read), ``safe`` otherwise. Findings follow the convention of picklescan/modelscan
(dangerous vs unknown globals); ``tests/test_scan.py`` compares the verdicts with picklescan and fickling.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from assay.errors import ModelError, OptionError, UnsafeModelError, UserError
from assay.evidence.schema import Finding, Metric, Section
from assay.models._common import sha256_file
from assay.models.pickle_scan import (
    IMPORT_OPCODES,
    MAX_DEPTH,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_TOTAL_BYTES,
    PickleScan,
    scan_file,
)
from assay.models.safety import check_export_archive, check_torchscript_archive, external_data_problem, shorten

__all__ = ["ONNX_STANDARD_DOMAINS", "ScanFinding", "ScanReport", "check_scan_output", "scan_markdown", "scan_model",
           "write_scan"]

ScanVerdict = Literal["safe", "unsafe", "unknown"]
ONNX_STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
MAX_SAFETENSORS_HEADER = 100 * 2**20
SECTION_NAME = "model_scan"
_SECTION_VERDICT = {"safe": "pass", "unsafe": "fail", "unknown": "warn"}
_EVIDENCE_SEVERITY = {"dangerous": "critical", "unknown": "warning", "info": "info"}
_FIX = ("do not load this file outside a sandbox; ask its publisher for a safetensors, ONNX or torch.export "
        "version, or re-save the weights yourself from trusted code "
        "(safetensors.torch.save_file(model.state_dict(), 'weights.safetensors'))")


@dataclass(frozen=True)
class ScanFinding:
    """One thing the scan found. ``severity``: dangerous (would run code or read files), unknown (cannot be shown
    safe), info. ``check``: which check found it; ``member``/``offset``/``opcode``/``global_name`` for pickles."""

    severity: Literal["dangerous", "unknown", "info"]
    check: str
    message: str
    member: str | None = None
    offset: int | None = None
    opcode: str | None = None
    global_name: str | None = None

    def where(self) -> str:
        parts = [p for p in (self.member, None if self.offset is None else f"byte {self.offset}", self.opcode) if p]
        return ", ".join(parts)


@dataclass
class ScanReport:
    """What :func:`scan_model` found in one file (``members``: every archive member with what it is)."""

    path: str
    sha256: str
    size: int
    file_kind: str
    verdict: ScanVerdict
    findings: list[ScanFinding] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)
    pickles: int = 0
    expected_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_section(self) -> Section:
        """The report as an evidence :class:`~assay.evidence.schema.Section` (``model_scan``): verdict pass (safe),
        fail (unsafe) or warn (unknown); counts as metrics; findings and members as tables."""
        method = "static scan: pickle opcodes walked with pickletools, archives read as zip, nothing executed"
        counts = {sev: sum(f.severity == sev for f in self.findings) for sev in ("dangerous", "unknown")}
        metrics = {
            "dangerous_findings": Metric(value=counts["dangerous"], n=len(self.members) or 1, method=method),
            "unknown_findings": Metric(value=counts["unknown"], n=len(self.members) or 1, method=method),
            "pickles_scanned": Metric(value=self.pickles, n=len(self.members) or 1, method=method),
        }
        findings = [Finding(severity=_EVIDENCE_SEVERITY[f.severity],  # type: ignore[arg-type]
                            message=f"{f.message}" + (f" ({f.where()})" if f.where() else ""),
                            evidence=f"tables.findings[{i}]", sets_verdict=f.severity != "info")
                    for i, f in enumerate(self.findings)]
        return Section(
            name=SECTION_NAME, title="Model file scan", verdict=_SECTION_VERDICT[self.verdict],  # type: ignore[arg-type]
            summary=_summary(self), metrics=metrics, findings=findings,
            tables={"findings": [asdict(f) for f in self.findings], "members": self.members},
            config={"path": self.path, "sha256": self.sha256, "expected_sha256": self.expected_sha256,
                    "size": self.size, "file_kind": self.file_kind, "scan_verdict": self.verdict,
                    "limits": {"member_bytes": MAX_MEMBER_BYTES, "total_bytes": MAX_TOTAL_BYTES,
                               "members": MAX_MEMBERS, "zip_depth": MAX_DEPTH},
                    "allow_list": "torch 2.13 torch._weights_only_unpickler._get_allowed_globals()"},
            lead_tables=["findings"])


def _summary(report: ScanReport) -> str:
    counts = {sev: sum(f.severity == sev for f in report.findings) for sev in ("dangerous", "unknown")}
    return (f"{report.file_kind} file, verdict {report.verdict}: {counts['dangerous']} dangerous and "
            f"{counts['unknown']} unknown finding(s) in {report.pickles} pickle(s) and {len(report.members)} "
            "member(s)")


def _check_expected(expect_sha256: str | None) -> str | None:
    if expect_sha256 is None:
        return None
    text = expect_sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise OptionError(f"--expect-sha256 must be 64 hexadecimal digits, got {shorten(expect_sha256, 80)}",
                          where="--expect-sha256", fix="pass the file's sha256 as `sha256sum FILE` prints it")
    return text


def _file_kind(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "zip"
        if any(n.endswith("/archive_format") or ("/models/" in n and n.endswith(".json")) for n in names):
            return "torch-export"
        if any("/code/" in f"/{n}" for n in names) or any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-save"
        return "zip"
    return "pickle-or-other"


def _pickle_findings(scan: PickleScan) -> list[ScanFinding]:
    return [ScanFinding(
        severity=f.severity, check="pickle",
        message=(f"imports {f.global_name}: {f.reason}" if f.opcode in IMPORT_OPCODES
                 else f"calls {f.global_name}: {f.reason}" if f.opcode not in ("LIMIT", "MALFORMED")
                 else f.reason),
        member=f.member or None, offset=f.offset, opcode=f.opcode,
        global_name=None if f.global_name.startswith("<") and f.opcode in ("LIMIT", "MALFORMED") else f.global_name)
        for f in scan.findings]


def _archive_check(check: Any, path: Path, name: str) -> list[ScanFinding]:
    """Run a :mod:`assay.models.safety` archive check; its refusal becomes a finding."""
    try:
        check(str(path))
    except UnsafeModelError as exc:
        return [ScanFinding("dangerous", name, exc.what)]
    except ModelError as exc:
        return [ScanFinding("unknown", name, f"the archive could not be checked: {exc.what}")]
    return []


def _onnx_graphs(model: Any) -> list[Any]:
    """The main graph, every subgraph (If/Loop/Scan bodies) and every model-local function, as node lists' owners."""
    owners: list[Any] = []
    stack = [model.graph, *model.functions]
    while stack:
        owner = stack.pop()
        owners.append(owner)
        for node in owner.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return owners


def _onnx_findings(path: Path) -> list[ScanFinding]:
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: not a model onnx can read
        return [ScanFinding("unknown", "format", f"not a readable ONNX model: {shorten(str(exc), 160)}")]
    findings: list[ScanFinding] = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location" and (problem := external_data_problem(entry.value, path.parent)):
                findings.append(ScanFinding(
                    "dangerous", "onnx-external-data",
                    f"tensor {shorten(tensor.name, 60)} keeps its data at {shorten(entry.value)}, which {problem}; "
                    "loading it would read a file outside the model's folder"))
    local = {f.domain for f in model.functions}
    domains: dict[str, set[str]] = {}
    for owner in _onnx_graphs(model):
        for node in owner.node:
            if node.domain not in ONNX_STANDARD_DOMAINS and node.domain not in local:
                domains.setdefault(node.domain, set()).add(node.op_type)
    for domain, ops in sorted(domains.items()):
        findings.append(ScanFinding(
            "unknown", "onnx-domain",
            f"uses custom operator domain {shorten(domain, 60)} ({', '.join(sorted(ops)[:5])}): such operators "
            "run native code from a library the runtime must register (Assay never registers one)"))
    return findings


def _safetensors_findings(path: Path) -> list[ScanFinding]:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        length = int.from_bytes(raw, "little") if len(raw) == 8 else -1
        if not 0 < length <= MAX_SAFETENSORS_HEADER:
            return [ScanFinding("unknown", "format", "not a safetensors file (its header length is out of range)")]
        try:
            header = json.loads(fh.read(length).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return [ScanFinding("unknown", "format", "not a safetensors file (its header is not JSON)")]
    if not isinstance(header, dict):
        return [ScanFinding("unknown", "format", "not a safetensors file (its header is not a JSON object)")]
    for key, value in header.items():
        if key == "__metadata__":
            if not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
                return [ScanFinding("unknown", "format", "the safetensors metadata is not a text -> text map")]
        elif not (isinstance(value, dict) and {"dtype", "shape", "data_offsets"} <= set(value)):
            return [ScanFinding("unknown", "format", f"safetensors entry {shorten(key, 60)} is not a tensor")]
    return []


def scan_model(path: str | os.PathLike[str], *, expect_sha256: str | None = None) -> ScanReport:
    """Scan the model file ``path`` (see the module docstring) and return a :class:`ScanReport`.

    Raises :class:`~assay.errors.UserError` for a missing file or a folder, :class:`OptionError` for a
    malformed ``expect_sha256`` and :class:`UnsafeModelError` naming both hashes when the file's sha256 is
    not ``expect_sha256``. Unsafe content is not an error: it is the report's verdict."""
    expected = _check_expected(expect_sha256)
    file = Path(path)
    if not file.exists():
        raise UserError("model file not found", where=str(path), fix="check the path of the model file to scan")
    if not file.is_file():
        raise UserError("the model path is not a regular file", where=str(path),
                        fix="give one model file (.pt, .pth, .pt2, .onnx, .safetensors, a pickle or a zip archive)")
    try:
        sha256 = sha256_file(file)
        with open(file, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise UserError(f"cannot read the model file: {exc.strerror or exc}", where=str(path),
                        fix="check the file's permissions") from exc
    if expected is not None and sha256 != expected:
        raise UnsafeModelError(f"the file's sha256 is {sha256}, not the expected {expected}", where=str(path),
                               fix="get the file again from its publisher (it is not the file the sha256 pins), "
                               "or pin the sha256 of the file you mean")
    kind = _file_kind(file, head)
    findings: list[ScanFinding] = []
    members: list[dict[str, Any]] = []
    pickles = 0
    if kind in ("onnx", "safetensors"):
        findings = _onnx_findings(file) if kind == "onnx" else _safetensors_findings(file)
        members = [{"name": file.name, "kind": kind, "size": file.stat().st_size, "globals": []}]
    else:
        scan = scan_file(file)
        findings = _pickle_findings(scan)
        members = [{"name": m.name, "kind": m.kind, "size": m.size, "globals": m.globals} for m in scan.members]
        pickles = scan.pickle_count
        if kind == "torch-export":
            findings += _archive_check(check_export_archive, file, "torch-export")
        elif kind == "torchscript":
            findings += _archive_check(check_torchscript_archive, file, "torchscript")
        elif kind == "pickle-or-other":
            kind = "pickle" if scan.kind == "pickle" else "other"
        if kind == "other":
            findings.append(ScanFinding("unknown", "format", "neither a zip archive, a pickle, ONNX nor safetensors: "
                                        "Assay cannot tell what loading this file would do"))
        elif kind == "zip" and not pickles and not findings:
            findings.append(ScanFinding("info", "format", "a zip archive without pickles or torch archive layout"))
    verdict: ScanVerdict = ("unsafe" if any(f.severity == "dangerous" for f in findings)
                            else "unknown" if any(f.severity == "unknown" for f in findings) else "safe")
    return ScanReport(path=str(path), sha256=sha256, size=file.stat().st_size, file_kind=kind, verdict=verdict,
                      findings=findings, members=members, pickles=pickles, expected_sha256=expected)


def scan_markdown(report: ScanReport) -> str:
    """The report as Markdown (``scan.md``): verdict, file, then one row per finding."""
    lines = [f"# Model file scan: {report.verdict.upper()}", "",
             f"- File: `{report.path}` ({report.file_kind}, {report.size} bytes)",
             f"- sha256: `{report.sha256}`" + (" (matches --expect-sha256)" if report.expected_sha256 else ""),
             f"- {_summary(report)}", ""]
    if report.findings:
        lines += ["| severity | check | finding | where |", "|---|---|---|---|"]
        for f in report.findings:
            cells = [f.severity, f.check, f.message, f.where() or "-"]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    else:
        lines.append("No findings: every pickle imports only what torch.save writes for tensors and state dicts.")
    with_globals = [m for m in report.members if m.get("globals")]
    if with_globals:
        lines += ["", "## Globals per pickle", ""]
        lines += [f"- `{m['name']}`: {', '.join(f'`{g}`' for g in m['globals'])}" for m in with_globals]
    return "\n".join(lines) + "\n"




def check_scan_output(out: str | os.PathLike[str], model: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Check ``out`` before scanning (:func:`assay.evidence.output.check_output`; the model file is an input)."""
    from assay.evidence.output import check_output

    return check_output(out, "scan", inputs=[Path(model).resolve()], force=force)


def write_scan(report: ScanReport, out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write ``scan.json`` (the report as an evidence Section) and ``scan.md`` into the folder ``out``, through
    :func:`assay.evidence.output.atomic_directory` (the scanned file is an input: never the output)."""
    from assay.evidence.output import atomic_directory

    with atomic_directory(out, "scan", inputs=[Path(report.path).resolve()], force=force) as tmp:
        (tmp / "scan.json").write_text(report.to_section().model_dump_json(indent=2), encoding="utf-8")
        (tmp / "scan.md").write_text(scan_markdown(report), encoding="utf-8")
    return Path(out)
