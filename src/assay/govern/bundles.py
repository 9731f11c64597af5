"""The evaluation bundles a card is built from, each with the sha256 of every file a number is taken from.

A card states nothing that is not in a bundle, and says which file (by sha256) each number came from, so an
auditor can check it against the bytes. Bundles are read as untrusted input
(:func:`assay.evidence.bundle.read_evidence`); the hashes are of the bytes on disk, and a file that no longer
matches the manifest Assay wrote with it is reported (it was changed afterwards).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from assay._hashing import file_sha256
from assay.errors import DataError
from assay.evidence.bundle import read_evidence, read_json_object
from assay.evidence.output import read_manifest
from assay.evidence.schema import Evidence, Finding, Section

__all__ = ["AUDIT_FILES", "AUDIT_SECTIONS", "BUNDLE_FILES", "SCAN_FILES", "LoadedAudit", "LoadedBundle",
           "LoadedScan", "load_audit", "load_bundles", "load_scan"]

#: Files of an evaluation bundle the card cites, when present.
BUNDLE_FILES = ("evidence.json", "predictions.npz", "reference.npz", "report.html", "report.md",
                "assay-manifest.json")


#: Sections of an audit bundle (``assay audit``): what each says about the data.
AUDIT_SECTIONS: dict[str, str] = {
    "duplicates": "exact and near duplicates within and across splits",
    "leakage": "test items with a training duplicate, and the accuracy they inflate",
    "labels": "label issues found with out-of-sample predicted probabilities",
    "integrity": "unreadable files, inconsistent shapes, constant columns, class balance, shift, PII",
}
#: Files of an audit bundle the card and the datasheet cite, when present.
AUDIT_FILES = ("evidence.json", "flagged.csv", "report.html", "report.md", "DATASHEET.md", "assay-manifest.json")
#: Files of a model-file scan (``assay scan MODEL --out DIR``) the card cites, when present.
SCAN_FILES = ("scan.json", "scan.md", "assay-manifest.json")


@dataclass(frozen=True)
class LoadedBundle:
    """One evaluation bundle: its label in the card (``B1`` or a registry ref), folder, evidence, and the
    sha256 of each of its :data:`BUNDLE_FILES` that exists."""

    index: int
    label: str
    folder: Path
    evidence: Evidence
    files: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def evidence_sha256(self) -> str:
        return self.files["evidence.json"]

    @property
    def source_id(self) -> str:
        """The short id the card's source notes use for this bundle's evidence.json (``E1``)."""
        return f"E{self.index}"

    def file_id(self, name: str) -> str:
        """The card's source id of one of the bundle's files: E1 (evidence.json), P1, R1, H1 (report.html), ..."""
        prefix = {"evidence.json": "E", "predictions.npz": "P", "reference.npz": "R", "report.html": "H",
                  "report.md": "M", "assay-manifest.json": "A"}[name]
        return f"{prefix}{self.index}"


def _folder(path: Path) -> Path:
    if path.is_file() and path.name == "evidence.json":
        return path.parent
    if not path.exists():
        raise DataError(f"no evaluation bundle at {path}", where=str(path),
                        fix="give the folder `assay evaluate` wrote (it holds evidence.json), or NAME@VERSION / "
                            "NAME@ALIAS of a registered model")
    if not path.is_dir():
        raise DataError(f"{path} is neither a bundle folder nor an evidence.json", where=str(path),
                        fix="give the folder `assay evaluate` wrote (it holds evidence.json)")
    return path


def _integrity(folder: Path, files: dict[str, str], label: str) -> list[Finding]:
    """Findings about files that differ from the manifest Assay wrote with them (edited afterwards)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return [Finding(severity="info", evidence=f"{label}:assay-manifest.json", message=(
            f"bundle {label} has no Assay manifest: the card cannot tell whether its files were changed after "
            "Assay wrote them"))]
    out = []
    for name, digest in files.items():
        listed = manifest["files"].get(name)
        if name != "assay-manifest.json" and isinstance(listed, dict) and listed.get("sha256") not in (None, digest):
            out.append(Finding(severity="warning", evidence=f"{label}:{name}", message=(
                f"{name} of bundle {label} no longer matches the sha256 in its manifest: it was changed after "
                "Assay wrote it; the card cites the file as it is now")))
    return out


def load_bundles(paths: list[str | os.PathLike[str]], labels: list[str] | None = None) -> list[LoadedBundle]:
    """Read each bundle (evidence validated as untrusted input) and hash its files. ``labels`` name the bundles
    in the card (e.g. registry refs ``digits@3``); default ``B1``, ``B2``, ... ."""
    if not paths:
        raise DataError("no evaluation bundle given", where="bundles",
                        fix="give at least one folder written by `assay evaluate` (or NAME@ALIAS of a registered "
                            "model)")
    if labels is not None and len(labels) != len(paths):
        raise ValueError("labels must name every bundle")
    loaded = []
    seen: set[str] = set()
    for i, raw in enumerate(paths, start=1):
        folder = _folder(Path(raw))
        evidence = read_evidence(folder)
        files = {name: file_sha256(folder / name) for name in BUNDLE_FILES if (folder / name).is_file()}
        label = labels[i - 1] if labels is not None else f"B{i}"
        if label in seen:
            label = f"{label} ({i})"
        seen.add(label)
        loaded.append(LoadedBundle(index=i, label=label, folder=folder.resolve(), evidence=evidence, files=files,
                                   findings=_integrity(folder, files, label)))
    return loaded


@dataclass(frozen=True)
class LoadedAudit(LoadedBundle):
    """An audit bundle (``assay audit``): like an evaluation bundle, with its own source ids (``AU`` for its
    evidence.json, ``AU-H`` for its report, ...) and the :data:`AUDIT_SECTIONS` it lacks (a partial audit)."""

    missing: tuple[str, ...] = ()

    @property
    def source_id(self) -> str:
        return "AU"

    def file_id(self, name: str) -> str:
        prefix = {"evidence.json": "", "flagged.csv": "-F", "report.html": "-H", "report.md": "-M",
                  "DATASHEET.md": "-D", "assay-manifest.json": "-A"}[name]
        return f"AU{prefix}"


def load_audit(path: str | os.PathLike[str]) -> LoadedAudit:
    """Read an audit bundle (its evidence.json validated as untrusted input) and hash its files. A bundle with
    none of the :data:`AUDIT_SECTIONS` is not an audit (DataError); one with some of them is a partial audit,
    whose missing sections are listed in ``missing`` and its findings."""
    given = Path(path)
    folder = given.parent if given.is_file() and given.name == "evidence.json" else given
    fix = "give the folder `assay audit --train TRAIN [--test TEST] --out DIR` wrote (it holds evidence.json)"
    if not folder.is_dir():
        raise DataError(f"no audit bundle at {given}", where=str(given), fix=fix)
    evidence = read_evidence(folder)
    present = [name for name in AUDIT_SECTIONS if name in evidence.sections]
    if not present:
        found = ", ".join(evidence.sections) or "none"
        raise DataError(f"{folder} is not an audit bundle: it has none of the sections {', '.join(AUDIT_SECTIONS)} "
                        f"(its sections: {found})", where=str(folder / "evidence.json"), fix=fix)
    files = {name: file_sha256(folder / name) for name in AUDIT_FILES if (folder / name).is_file()}
    missing = tuple(name for name in AUDIT_SECTIONS if name not in evidence.sections)
    findings = _integrity(folder, files, "audit")
    if missing:
        findings.append(Finding(severity="warning", evidence="audit", message=(
            f"the audit bundle has no {', '.join(missing)} section{'s' if len(missing) > 1 else ''} (a partial "
            f"audit): what {'they measure is' if len(missing) > 1 else 'it measures is'} not known")))
    return LoadedAudit(index=0, label="audit", folder=folder.resolve(), evidence=evidence, files=files,
                       findings=findings, missing=missing)


@dataclass(frozen=True)
class LoadedScan:
    """A model-file scan folder (``assay scan MODEL --out DIR``): its ``model_scan`` section (scan.json), the sha256
    of its files, and findings about it (changed files; a scan of another file than the evaluated model)."""

    folder: Path
    section: Section
    files: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    source_id = "SC"

    def file_id(self, name: str) -> str:
        return {"scan.json": "SC", "scan.md": "SC-M", "assay-manifest.json": "SC-A"}[name]

    @property
    def model_sha256(self) -> str | None:
        """sha256 of the file that was scanned."""
        value = self.section.config.get("sha256")
        return value if isinstance(value, str) else None


def load_scan(path: str | os.PathLike[str], bundles: list[LoadedBundle] | None = None) -> LoadedScan:
    """Read a scan folder (scan.json validated as untrusted input) and hash its files. When ``bundles`` are
    given, a scan of a file none of them evaluated (another sha256) is a warning finding: the card would otherwise
    vouch for a file it did not scan."""
    given = Path(path)
    folder = given.parent if given.is_file() and given.name == "scan.json" else given
    fix = "give the folder `assay scan MODEL --out DIR` wrote (it holds scan.json)"
    if not folder.is_dir() or not (folder / "scan.json").exists():
        raise DataError(f"no model-file scan at {given}", where=str(given), fix=fix)
    raw = read_json_object(folder / "scan.json", name="scan.json", fix=fix)
    try:
        section = Section.model_validate(raw)
    except ValueError as exc:
        raise DataError(f"scan.json is not a model_scan section ({str(exc).splitlines()[0][:200]})",
                        where=str(folder / "scan.json"), fix=fix) from None
    if section.name != "model_scan":
        raise DataError(f"scan.json holds a {section.name!r} section, not model_scan", where=str(folder / "scan.json"),
                        fix=fix)
    files = {name: file_sha256(folder / name) for name in SCAN_FILES if (folder / name).is_file()}
    findings = _integrity(folder, files, "scan")
    scanned = section.config.get("sha256")
    evaluated = {b.evidence.model.sha256 for b in bundles or []} - {None, ""}
    if evaluated and scanned not in evaluated:
        findings.append(Finding(severity="warning", evidence="scan", message=(
            f"the scan is of a file with sha256 {str(scanned)[:12]}..., not the evaluated model "
            f"({', '.join(sorted(h[:12] + '...' for h in evaluated))}): it says nothing about the model this card "
            "describes")))
    return LoadedScan(folder=folder.resolve(), section=section, files=files, findings=findings)
