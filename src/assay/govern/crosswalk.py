"""The governance crosswalk: each piece of evidence mapped to NIST AI RMF subcategories and EU AI Act Annex IV
points, with the sha256 of the file behind it, and the gaps.

The mapping is data (``crosswalk.yaml`` in this package, with the official texts and their citations: NIST AI
100-1 "AI RMF 1.0", January 2023, Tables 1-4; Regulation (EU) 2024/1689, Annex IV); this module only loads and
validates it (:func:`load_crosswalk`) and applies it to the bundles of a card (:func:`build_crosswalk`). An entry
counts as evidenced when at least one of its evidence items is present; its coverage is "full" when one present
item is full, else "partial"; an entry with none is a gap, listed with what would close it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay.govern.bundles import LoadedAudit, LoadedBundle, LoadedScan
from assay.govern.datasheet import Datasheet
from assay.govern.facts import CardFacts

__all__ = ["CROSSWALK_FILE", "CROSSWALK_SCHEMA", "Crosswalk", "EvidenceItem", "build_crosswalk", "load_crosswalk",
           "metric_pattern"]

CROSSWALK_FILE = "crosswalk.yaml"
#: Version of crosswalk.json's layout.
CROSSWALK_SCHEMA = "assay-crosswalk/1"

EvidenceKind = Literal["section", "evidence", "file", "change_log", "comparison", "card_facts", "datasheet", "audit",
                       "scan"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvidenceItem(_Strict):
    """One kind of Assay evidence that speaks to an entry (see the header of crosswalk.yaml)."""

    kind: EvidenceKind
    section: str | None = None
    metrics: list[str] = Field(default_factory=list)
    tables: list[str] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=list)
    file: str | None = None
    actions: list[str] = Field(default_factory=list)
    why: str = Field(min_length=1)
    coverage: Literal["full", "partial"]

    @model_validator(mode="after")
    def _complete(self) -> EvidenceItem:
        needs = {"section": self.section, "audit": self.section, "file": self.file}.get(self.kind, "ok")
        if needs is None:
            raise ValueError(f"a {self.kind!r} item needs {'section' if self.kind == 'audit' else self.kind!r}")
        if self.kind in ("evidence", "change_log", "comparison", "card_facts", "datasheet") and not self.fields:
            raise ValueError(f"a {self.kind!r} item needs `fields`")
        if self.kind == "scan" and not (self.metrics or self.tables):
            raise ValueError("a 'scan' item needs `metrics` or `tables` of the model_scan section")
        return self


class Entry(_Strict):
    id: str = Field(min_length=1)
    citation: str = Field(min_length=1)
    text: str = Field(min_length=1)
    label: str = Field(min_length=1)
    evidence: list[EvidenceItem] = Field(default_factory=list)
    gap: str = Field(min_length=1)


class Framework(_Strict):
    title: str = Field(min_length=1)
    document: str = Field(min_length=1)
    publisher: str = Field(min_length=1)
    date: str = Field(min_length=1)
    identifier: str = Field(min_length=1)
    companion: str = Field(min_length=1)
    entries: list[Entry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Framework:
        ids = [e.id for e in self.entries]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate entry ids in {self.document}")
        return self


class Crosswalk(_Strict):
    version: int
    frameworks: dict[str, Framework]
    sha256: str = ""

    def entries(self) -> list[tuple[str, Framework, Entry]]:
        return [(key, fw, e) for key, fw in self.frameworks.items() for e in fw.entries]


@functools.cache
def load_crosswalk() -> Crosswalk:
    """The mapping shipped with Assay (``assay/govern/crosswalk.yaml``), validated; its sha256 is recorded in
    every crosswalk.json so a reader knows which version of the mapping was applied."""
    import yaml

    data = resources.files("assay.govern").joinpath(CROSSWALK_FILE).read_bytes()
    raw = yaml.safe_load(data.decode("utf-8"))
    return Crosswalk.model_validate({**raw, "sha256": hashlib.sha256(data).hexdigest()})


def metric_pattern(pattern: str) -> re.Pattern[str]:
    """A metric name or a pattern where ``*`` stands for any text (``auroc[*]``; brackets are literal)."""
    return re.compile("".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern)), re.S)


def _canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _section_pointers(bundle: LoadedBundle, item: EvidenceItem) -> list[str] | None:
    """Pointers into evidence.json the item is satisfied by in this bundle, or None when it is not."""
    assert item.section is not None
    section = bundle.evidence.sections.get(item.section)
    if section is None:
        return None
    metrics = [f"{item.section}.metrics.{key}" for pattern in item.metrics
               for key, m in section.metrics.items() if metric_pattern(pattern).fullmatch(key) and m.value is not None]
    tables = [f"{item.section}.tables.{t}" for t in item.tables if section.tables.get(t)]
    if (item.metrics or item.tables) and not (metrics or tables):
        return None
    return list(dict.fromkeys(metrics + tables)) or [item.section]


def _rows_for(item: EvidenceItem, bundles: list[LoadedBundle], facts: CardFacts | None,
              change_log: list[dict[str, Any]], datasheet: Datasheet | None = None,
              audit: LoadedAudit | None = None, scan: LoadedScan | None = None) -> list[dict[str, Any]]:
    """The evidence rows one item contributes: one per bundle (or per file, move, ...) that satisfies it."""
    rows: list[dict[str, Any]] = []
    if item.kind == "scan":
        if scan is not None:
            found = ([f"model_scan.metrics.{m}" for m in item.metrics if m in scan.section.metrics]
                     + [f"model_scan.tables.{t}" for t in item.tables if t in scan.section.tables])
            if found:
                rows.append({"bundle": "scan", "source_id": scan.file_id("scan.json"), "file": "scan.json",
                             "path": str(scan.folder / "scan.json"), "sha256": scan.files["scan.json"],
                             "pointers": found})
    elif item.kind == "audit":
        pointers = _section_pointers(audit, item) if audit is not None else None
        if audit is not None and pointers is not None:
            rows.append({"bundle": audit.label, "source_id": audit.file_id("evidence.json"), "file": "evidence.json",
                         "path": str(audit.folder / "evidence.json"), "sha256": audit.files["evidence.json"],
                         "pointers": pointers})
    elif item.kind == "datasheet":
        given = [f for f in item.fields if datasheet is not None and getattr(datasheet, f, None) not in (None, [])]
        if datasheet is not None and given:
            rows.append({"bundle": None, "source_id": "DS", "file": "datasheet.yaml", "path": datasheet.source_file,
                         "sha256": datasheet.sha256, "pointers": [f"datasheet.yaml:{f}" for f in given]})
    elif item.kind in ("section", "evidence", "file"):
        for b in bundles:
            if item.kind == "section":
                pointers = _section_pointers(b, item)
                file = "evidence.json"
            elif item.kind == "evidence":
                pointers = list(item.fields)
                file = "evidence.json"
            else:
                assert item.file is not None
                pointers, file = ([item.file] if item.file in b.files else None), item.file
            if pointers is not None:
                rows.append({"bundle": b.label, "source_id": b.file_id(file), "file": file,
                             "path": str(b.folder / file), "sha256": b.files[file], "pointers": pointers})
    elif item.kind == "change_log":
        moves = [m for m in change_log if not item.actions or m.get("action") in item.actions]
        if moves:
            rows.append({"bundle": None, "source_id": "L", "file": "registry history (canonical JSON of the moves)",
                         "path": None, "sha256": _canonical_sha256(moves),
                         "pointers": [f"change_log[{change_log.index(m)}]" for m in moves]})
    elif item.kind == "comparison":
        for i, move in enumerate(change_log):
            digest = move.get("comparison_sha256")
            if digest:
                rows.append({"bundle": None, "source_id": "L", "file": "comparison.json (registry artifact)",
                             "path": None, "sha256": digest, "pointers": [f"change_log[{i}].comparison_sha256"]})
    elif facts is not None:
        given = [f for f in item.fields if getattr(facts, f, None) not in (None, [])]
        if given:
            rows.append({"bundle": None, "source_id": "F", "file": "card.yaml", "path": facts.source,
                         "sha256": facts.sha256, "pointers": [f"card.yaml:{f}" for f in given]})
    return rows


def build_crosswalk(bundles: list[LoadedBundle], facts: CardFacts | None = None,
                    change_log: list[dict[str, Any]] | None = None, *, datasheet: Datasheet | None = None,
                    audit: LoadedAudit | None = None, scan: LoadedScan | None = None) -> dict[str, Any]:
    """crosswalk.json: ``rows`` (one per framework entry x piece of evidence, with the file's sha256 and the
    pointers into it), ``entries`` (each entry's status: evidenced in full, partially, or a gap) and ``gaps``.
    ``datasheet`` (datasheet.yaml) and ``audit`` (an ``assay audit`` bundle) speak to the data entries (MAP 2.3,
    MEASURE 2.1, Annex IV 2(d)); ``scan`` (an ``assay scan`` folder) to security (MEASURE 2.7)."""
    mapping = load_crosswalk()
    log = list(change_log or [])
    rows: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    for key, _fw, entry in mapping.entries():
        found = []
        for item in entry.evidence:
            for row in _rows_for(item, bundles, facts, log, datasheet, audit, scan):
                found.append({"framework": key, "id": entry.id, "label": entry.label, "kind": item.kind,
                              "coverage": item.coverage, "why": item.why, **row})
        status = "gap" if not found else ("full" if any(r["coverage"] == "full" for r in found) else "partial")
        entries.append({"framework": key, "id": entry.id, "label": entry.label, "citation": entry.citation,
                        "text": entry.text, "status": status, "rows": len(found)})
        rows += found
        if not found:
            gaps.append({"framework": key, "id": entry.id, "label": entry.label, "citation": entry.citation,
                         "missing": entry.gap})
    return {
        "schema": CROSSWALK_SCHEMA,
        "mapping": {"file": f"assay/govern/{CROSSWALK_FILE}", "version": mapping.version, "sha256": mapping.sha256},
        "sources": {key: {"title": fw.title, "document": fw.document, "publisher": fw.publisher, "date": fw.date,
                          "identifier": fw.identifier, "companion": fw.companion}
                    for key, fw in mapping.frameworks.items()},
        "bundles": [{"label": b.label, "path": str(b.folder), "files": dict(b.files),
                     "model_sha256": b.evidence.model.sha256, "data_fingerprint": b.evidence.data.fingerprint}
                    for b in bundles],
        "datasheet": None if datasheet is None else {"path": datasheet.source_file, "sha256": datasheet.sha256,
                                                     "license": datasheet.license},
        "audit": None if audit is None else {"path": str(audit.folder), "files": dict(audit.files),
                                             "missing_sections": list(audit.missing)},
        "scan": None if scan is None else {"path": str(scan.folder), "files": dict(scan.files),
                                           "model_sha256": scan.model_sha256,
                                           "verdict": scan.section.config.get("scan_verdict")},
        "summary": {status: sum(e["status"] == status for e in entries) for status in ("full", "partial", "gap")},
        "entries": entries,
        "rows": rows,
        "gaps": gaps,
    }
