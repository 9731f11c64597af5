"""``datasheet.yaml`` -> ``DATASHEET.md``: the facts about a data set that no measurement can give.

The sections follow Gebru et al. 2021, "Datasheets for Datasets" (Communications of the ACM 64(12)): motivation,
composition, collection process, preprocessing/cleaning/labeling, uses, distribution, maintenance. The front
matter is Hugging Face dataset-card metadata (huggingface/hub-docs datasets-cards.md: ``license``,
``task_categories``, ``size_categories``, ``language``, ``pretty_name``, ``tags``). A fact the file does not give
is marked TODO and listed by :func:`gaps`, never invented; every fact shown names the key it came from.

The licence is an SPDX licence expression (SPDX 2.3 Annex D: ids joined by ``AND``, ``OR``, ``WITH`` and
parentheses; ``LicenseRef-...`` for a licence not on the SPDX list), validated with ``license-expression``; an
unknown id is a user error naming it (and the id it was probably meant to be). :func:`licence_obligations` lists
what common licences ask of a user (attribution, share-alike, non-commercial, ...) from a small table; for a
licence outside the table it says to read the licence text rather than guess.

The file is untrusted input, read by the same safe loader as card.yaml (:func:`assay.govern.facts.parse_facts`:
size limit, ``yaml.safe_load``, no tags, anchors or aliases). When an audit bundle is given (``assay audit``), its
duplicates, leakage, label-issue and integrity numbers are quoted with their intervals in an Audit section.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from assay.errors import OptionError
from assay.evidence.schema import Evidence, Section
from assay.govern.bundles import AUDIT_SECTIONS, LoadedAudit
from assay.govern.facts import FactsFile, _key_lines, parse_facts, read_facts_file
from assay.report.card import (
    CardDocument,
    CardSection,
    Cell,
    Facts,
    Items,
    Paragraph,
    Table,
    Todo,
    render_card_markdown,
)
from assay.report.formatting import format_number, metric_parts, short_hash

__all__ = ["DATASHEET_FILE", "REQUIRED_DATASHEET_FACTS", "AuditSummary", "Datasheet", "datasheet_document",
           "datasheet_front_matter", "gaps", "licence_obligations", "load_datasheet", "parse_datasheet",
           "render_datasheet", "summarize_audit", "validate_licence"]

#: The name of the rendered datasheet in a card or audit folder.
DATASHEET_FILE = "DATASHEET.md"

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
_Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

#: Facts every datasheet should state (key -> what it is, after Gebru et al.'s questions); a missing one is a gap.
REQUIRED_DATASHEET_FACTS: dict[str, str] = {
    "motivation": "why the data set was created, by whom and for which task",
    "source": "where the data comes from (origin, URL, upstream data sets)",
    "license": "the licence, as an SPDX expression such as CC-BY-4.0 or MIT OR Apache-2.0",
    "composition": "what the instances are, how many, which splits, what is missing",
    "collection": "how the data was collected or acquired, by whom, over which period",
    "consent": "whether the people the data is about consented, and how (or why consent was not needed)",
    "preprocessing": "cleaning, filtering and preprocessing applied to the raw data",
    "intended_uses": "the tasks the data set is meant for",
    "distribution": "how the data set is distributed, to whom, under which terms",
    "maintenance": "who maintains the data set, how errors are reported, how it is updated",
}


class Datasheet(FactsFile):
    """What ``datasheet.yaml`` may say. Only :data:`REQUIRED_DATASHEET_FACTS` are gaps when missing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: _Word | None = Field(None, description="The data set's name.")
    description: _Text | None = Field(None, description="What the data set is, in a few sentences.")
    motivation: _Text | None = Field(None, description="Why it was created, by whom, for which task.")
    creators: list[_Word] | None = Field(None, description="People or organisation who created it.")
    funding: _Text | None = Field(None, description="Who funded its creation.")
    source: _Text | None = Field(None, description="Where the data comes from (origin, URL, upstream data sets).")
    license: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)] | None = Field(
        None, description="SPDX licence expression (CC-BY-4.0, MIT OR Apache-2.0, LicenseRef-custom).")
    composition: _Text | None = Field(None, description="What the instances are, how many, splits, what is missing.")
    instances: Annotated[int, Field(ge=0)] | None = Field(None, description="Number of instances (all splits).")
    sensitive_data: _Text | None = Field(None, description="Personal or sensitive data it holds, and how handled.")
    collection: _Text | None = Field(None, description="How the data was collected, by whom, over which period.")
    consent: _Text | None = Field(None, description="Consent of the people the data is about (or why not needed).")
    preprocessing: _Text | None = Field(None, description="Cleaning, filtering and preprocessing applied.")
    labeling: _Text | None = Field(None, description="How labels were made: annotators, guidelines, agreement.")
    intended_uses: _Text | None = Field(None, description="Tasks the data set is meant for.")
    out_of_scope_uses: _Text | None = Field(None, description="Uses it is not meant or not fit for.")
    task_categories: list[_Word] | None = Field(None, description="Hugging Face task categories "
                                                                  "(image-classification, ...).")
    language: list[_Word] | None = Field(None, description="Languages of text data (ISO 639 codes).")
    tags: list[_Word] | None = Field(None, description="Extra tags for the card's metadata.")
    distribution: _Text | None = Field(None, description="How it is distributed, to whom, under which terms.")
    maintenance: _Text | None = Field(None, description="Who maintains it, how errors are reported and fixed.")
    contact: _Word | None = Field(None, description="Who to contact about the data set.")
    version: _Word | None = Field(None, description="Version of the data set this datasheet describes.")
    citation: _Text | None = Field(None, description="How to cite the data set.")



#: An SPDX expression longer than this is not a licence statement.
MAX_LICENCE_CHARS = 1000
_FIX = "datasheet.yaml is a mapping of facts, e.g. `license: CC-BY-4.0` and `collection: ...` (see `assay card --help`)"
_SPDX_FIX = ("write SPDX licence ids (https://spdx.org/licenses/) joined by AND, OR, WITH and parentheses, e.g. "
             "`CC-BY-4.0` or `MIT OR Apache-2.0`; a licence not on the SPDX list is `LicenseRef-<name>`")


# --------------------------------------------------------------------------------------------- SPDX licences


@functools.cache
def _licensing() -> Any:
    from license_expression import get_spdx_licensing  # type: ignore[import-untyped]

    return get_spdx_licensing()


@functools.cache
def _spdx_ids() -> dict[str, str]:
    """lower-case id -> SPDX id, of the SPDX list proper (not the scancode LicenseRef-s), for suggestions."""
    return {key.lower(): key for key in _licensing().known_symbols if not key.startswith("LicenseRef-")}


def _is_custom(symbol: str) -> bool:
    """A user-defined licence reference (SPDX 2.3 Annex D): ``LicenseRef-x`` or ``DocumentRef-y:LicenseRef-x``."""
    return re.fullmatch(r"(DocumentRef-[A-Za-z0-9.-]+:)?LicenseRef-[A-Za-z0-9.-]+", symbol) is not None


@functools.lru_cache(maxsize=1024)
def _is_known(symbol: str) -> bool:
    """An id on the SPDX list, deprecated ids and exceptions included (``GPL-2.0``, ``Classpath-exception-2.0``),
    whether or not it was used in the right place."""
    try:
        errors = _licensing().validate(symbol).errors
    except Exception:  # license-expression raises AttributeError on some malformed input
        return False
    return not any(str(e).startswith("Unknown license key") for e in errors)


def validate_licence(expression: str, where: str = "license") -> str:
    """The SPDX expression normalised (``mit`` -> ``MIT``, ``GPL-2.0+`` -> ``GPL-2.0-or-later``); an OptionError
    naming the expression, every unknown id (with the id it was probably meant to be) and the fix otherwise."""
    text = str(expression).strip()
    if not text:
        raise OptionError("the licence expression is empty", where=where, fix=_SPDX_FIX)
    if len(text) > MAX_LICENCE_CHARS:
        raise OptionError(f"the licence expression is {len(text):,} characters long (at most {MAX_LICENCE_CHARS})",
                          where=where, fix=_SPDX_FIX)
    odd = re.search(r"[^A-Za-z0-9.+:()\s-]", text)
    if odd is not None:
        raise OptionError(f"licence expression {text!r} is not valid SPDX: the character {odd.group()!r} (position "
                          f"{odd.start() + 1}) is not allowed", where=where, fix=_SPDX_FIX)
    try:
        result = _licensing().validate(text)
    except Exception as exc:  # license-expression raises AttributeError on some malformed input
        raise OptionError(f"licence expression {text!r} is not valid SPDX ({type(exc).__name__})", where=where,
                          fix=_SPDX_FIX) from None
    unknown = [str(s) for s in result.invalid_symbols if str(s).strip() and not _is_custom(str(s))
               and not _is_known(str(s))]
    syntax = [e for e in result.errors if not str(e).startswith("Unknown license key")]
    if not syntax and result.errors and not unknown and not all(_is_custom(str(s)) for s in result.invalid_symbols):
        syntax = [f"{', '.join(map(repr, map(str, result.invalid_symbols)))} used where SPDX does not allow it"]
    if unknown:
        hints = []
        for symbol in unknown:
            close = difflib.get_close_matches(symbol.lower(), list(_spdx_ids()), n=1, cutoff=0.6)
            hints.append(f"{symbol!r} (did you mean {_spdx_ids()[close[0]]!r}?)" if close else repr(symbol))
        raise OptionError(f"licence expression {text!r} is not valid SPDX: unknown licence id"
                          f"{'s' if len(unknown) > 1 else ''} {', '.join(hints)}", where=where, fix=_SPDX_FIX)
    if syntax:
        raise OptionError(f"licence expression {text!r} is not valid SPDX: {syntax[0]}", where=where, fix=_SPDX_FIX)
    if result.normalized_expression:
        return str(result.normalized_expression)
    return str(_licensing().parse(text, validate=False))  # only LicenseRef-s, which the SPDX list cannot know


def _licence_keys(expression: str) -> list[str]:
    return [str(k) for k in _licensing().license_keys(_licensing().parse(validate_licence(expression)))]


def _cc_obligations(mods: set[str]) -> list[tuple[str, str]]:
    out = [("attribution", "credit the creator, keep the copyright and licence notices and link to the licence"),
           ("state-changes", "indicate whether you modified the material"),
           ("no-additional-restrictions", "add no legal terms or technological measures that stop others from doing "
                                          "what the licence permits")]
    if "NC" in mods:
        out.append(("non-commercial", "no use primarily intended for commercial advantage or monetary compensation"))
    if "SA" in mods:
        out.append(("share-alike", "adapted material you share must be under the same licence (or a compatible one)"))
    if "ND" in mods:
        out.append(("no-derivatives", "you may share the material only unchanged: no adapted material"))
    return out


_NOTICE = ("notice", "keep the copyright notice and the licence text in all copies or substantial portions")
_PUBLIC = ("none", "public-domain dedication: no conditions (patent and trademark rights are not waived)")
_COPYLEFT = ("share-alike", "a work based on it that you distribute must be under the same licence as a whole, with "
                            "its source")
_PATENT = ("patent-grant", "contributors grant a patent licence; it ends for anyone who sues claiming the work "
                           "infringes a patent")
#: Obligations of common licences (SPDX id or pattern -> (kind, what it asks)); from the licence texts.
_OBLIGATIONS: tuple[tuple[str, list[tuple[str, str]]], ...] = (
    (r"CC0-1\.0|PDDL-1\.0|Unlicense", [_PUBLIC]),
    (r"MIT|MIT-0|ISC|BSD-2-Clause|0BSD|Zlib", [_NOTICE]),
    (r"BSD-3-Clause", [_NOTICE, ("no-endorsement", "do not use the authors' names to endorse derived products")]),
    (r"Apache-2\.0", [("notice", "give a copy of the licence; keep the copyright, patent and attribution notices "
                                 "and the NOTICE file's attributions"),
                      ("state-changes", "modified files must state prominently that you changed them"), _PATENT]),
    (r"GPL-2\.0.*", [_NOTICE, _COPYLEFT, ("state-changes", "modified files must state that you changed them")]),
    (r"GPL-3\.0.*", [_NOTICE, _COPYLEFT, ("state-changes", "modified versions must say that you changed them"),
                     _PATENT]),
    (r"LGPL-[23]\..*", [_NOTICE, ("share-alike", "changes to the library itself must stay under the LGPL, with "
                                                 "source; works that only use it may have other terms")]),
    (r"AGPL-3\.0.*", [_NOTICE, _COPYLEFT, _PATENT,
                      ("network-use", "users of a modified version over a network must be offered its source")]),
    (r"MPL-2\.0", [_NOTICE, ("share-alike", "files you change must stay under the MPL, with source"), _PATENT]),
    (r"ODbL-1\.0", [("attribution", "keep the notices and credit the database as the licence asks, also for works "
                                    "produced from it"),
                    ("share-alike", "an adapted database you use publicly must be offered under the ODbL"),
                    ("keep-open", "if you distribute it with technical restrictions, also offer it without them")]),
    (r"ODC-By-1\.0", [("attribution", "credit the database as the licence asks, also for works produced from it")]),
    (r"CDLA-Permissive-[12]\.0", [("notice", "when you share the data, include the licence text (or its URI)")]),
    (r"CDLA-Sharing-1\.0", [("notice", "when you share the data, include the licence text"),
                            ("share-alike", "data you share, changed or not, must be under CDLA-Sharing-1.0 (results "
                                            "of analysing it are free)")]),
)


def _obligations_of(key: str) -> list[tuple[str, str]] | None:
    cc = re.fullmatch(r"CC-BY((?:-(?:NC|ND|SA))*)-\d.*", key)
    if cc is not None:
        return _cc_obligations(set(cc.group(1).split("-")) - {""})
    for pattern, obligations in _OBLIGATIONS:
        if re.fullmatch(pattern, key):
            return obligations
    return None


def licence_obligations(expression: str) -> list[str]:
    """What the licence expression asks of a user, one line per obligation (``kind: what (licence ids)``), from a
    small table of common licences. A licence outside the table gets "check the licence text" (never a guess);
    an ``OR`` expression is a choice, said first; a ``WITH`` exception is named for the reader to check."""
    normalised = validate_licence(expression)
    parsed = _licensing().parse(normalised)
    merged: dict[tuple[str, str], list[str]] = {}
    unknown: list[str] = []
    exceptions: list[str] = []
    for symbol in _licensing().license_symbols(parsed, decompose=True):
        key = str(symbol.key)
        if getattr(symbol, "is_exception", False):
            exceptions.append(key)
            continue
        found = _obligations_of(key)
        if found is None:
            unknown.append(key)
        for kind, what in found or []:
            merged.setdefault((kind, what), [])
            if key not in merged[(kind, what)]:
                merged[(kind, what)].append(key)
    lines = []
    if " OR " in normalised:
        lines.append(f"choice: {normalised} offers alternatives; only the obligations of the licence you choose apply "
                     "(each obligation below names its licence)")
    lines += [f"{kind}: {what} ({', '.join(keys)})" for (kind, what), keys in merged.items()]
    lines += [f"unknown: Assay's table does not cover {key}: check the licence text for its obligations ({key})"
              for key in dict.fromkeys(unknown)]
    lines += [f"exception: {key} changes the terms of the licence it is attached to: check its text ({key})"
              for key in dict.fromkeys(exceptions)]
    return lines


# --------------------------------------------------------------------------------------------- loading


def parse_datasheet(text: str, source: str = "datasheet.yaml") -> Datasheet:
    """A datasheet from datasheet.yaml text; every problem (YAML, unknown key, wrong type, invalid SPDX licence)
    an OptionError naming the key, its line and the fix."""
    sheet = parse_facts(text, source, Datasheet, name="datasheet.yaml", fix=_FIX,
                        examples={"license": "e.g. `license: CC-BY-4.0`", "instances": "e.g. `instances: 1797`"})
    if sheet.license is not None:
        line = _key_lines(text).get("license")
        normalised = validate_licence(sheet.license, where=f"{source}:{line}" if line else source)
        sheet = sheet.model_copy(update={"license": normalised})
    return sheet


def load_datasheet(path: str | os.PathLike[str]) -> Datasheet:
    """Read and validate ``datasheet.yaml`` (see the module docstring); remembers its path and sha256."""
    text, data = read_facts_file(path, name="datasheet.yaml", fix=_FIX, option="--datasheet")
    sheet = parse_datasheet(text, str(Path(path)))
    sheet.remember_file(path, data)
    return sheet


def gaps(datasheet: Datasheet) -> list[str]:
    """The :data:`REQUIRED_DATASHEET_FACTS` the datasheet does not give (``key: what it is``), in order."""
    return [f"{key}: {what}" for key, what in REQUIRED_DATASHEET_FACTS.items()
            if getattr(datasheet, key) in (None, [])]


def describe_datasheet() -> list[tuple[str, str]]:
    """(key, description) of every datasheet.yaml key, for help texts."""
    return [(name, field.description or "") for name, field in Datasheet.model_fields.items()]


# --------------------------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class AuditSummary:
    """What a datasheet quotes of an audit: the audit's sections (duplicates, leakage, labels, integrity) as they
    are in its evidence.json, the ones it lacks, and the file's path and sha256 when known."""

    sections: dict[str, Section]
    missing: tuple[str, ...]
    path: str | None = None
    sha256: str | None = None


def summarize_audit(audit: Evidence | LoadedAudit, *, path: str | None = None,
                    sha256: str | None = None) -> AuditSummary:
    """The audit sections of an audit's evidence (or of a loaded audit bundle, with its path and sha256)."""
    if isinstance(audit, LoadedAudit):
        path = path or str(audit.folder / "evidence.json")
        sha256 = sha256 or audit.files.get("evidence.json")
        audit = audit.evidence
    sections = {name: audit.sections[name] for name in AUDIT_SECTIONS if name in audit.sections}
    return AuditSummary(sections, tuple(n for n in AUDIT_SECTIONS if n not in sections), path, sha256)


#: Metrics of one audit section the datasheet quotes (the rest stay in evidence.json).
MAX_AUDIT_METRICS = 30


def _audit_section(summary: AuditSummary) -> CardSection:
    blocks: list[Any] = [Paragraph(
        "Measured by `assay audit` on the data (not stated by the provider). Each number names its pointer into "
        "the audit's evidence.json (AU)" + (f", sha256 `{short_hash(summary.sha256, 16)}`" if summary.sha256 else "")
        + ".")]
    for name, what in AUDIT_SECTIONS.items():
        section = summary.sections.get(name)
        if section is None:
            blocks.append(CardSection(name.capitalize(), f"audit-{name}", [Paragraph(
                f"Gap: the audit has no {name} section ({what}); it was not measured.", "note")]))
            continue
        sub: list[Any] = [Paragraph(f"Verdict {section.verdict}." + (f" {section.summary}" if section.summary else "")
                                    + f" (AU `{name}.summary`)")]
        rows = []
        for key, metric in list(section.metrics.items())[:MAX_AUDIT_METRICS]:
            value, ci = metric_parts(metric)
            rows.append([Cell(key, code=True), Cell(value, ci, numeric=True), Cell(format_number(metric.n),
                                                                                   numeric=True),
                         Cell(metric.method), Cell(f"AU `{name}.metrics.{key}`")])
        if rows:
            sub.append(Table(["metric", "value [CI]", "n", "interval method", "source"], rows))
        if len(section.metrics) > MAX_AUDIT_METRICS:
            sub.append(Paragraph(f"{len(section.metrics) - MAX_AUDIT_METRICS} more metrics in AU `{name}.metrics`.",
                                 "note"))
        warned = [f"{f.severity}: {f.message} (AU `{name}.findings[{i}]`)" for i, f in enumerate(section.findings)
                  if f.severity != "info"]
        if warned:
            sub.append(Items(warned))
        blocks.append(CardSection(name.capitalize(), f"audit-{name}", sub))
    return CardSection("Audit", "audit", blocks)


# --------------------------------------------------------------------------------------------- rendering

#: Hugging Face Hub licence ids (huggingface/hub-docs repositories-licenses.md) for the SPDX ids that differ.
_HF_RENAMES = {"ODbL-1.0": "odbl", "ODC-By-1.0": "odc-by", "PDDL-1.0": "pddl"}
_HF_IDS = frozenset(str.split(
    "apache-2.0 mit afl-3.0 artistic-2.0 bsl-1.0 bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc0-1.0 cc-by-2.0 "
    "cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 "
    "cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 "
    "cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 "
    "gpl-2.0 gpl-3.0 lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl osl-3.0 postgresql ofl-1.1 ncsa "
    "unlicense zlib pddl"))


def _hf_licence(expression: str) -> dict[str, Any]:
    """``license`` (a Hub id, or a list for a compound expression) or ``other`` with the SPDX expression as
    ``license_name`` when a licence has no Hub id (a WITH exception, a LicenseRef)."""
    parsed = _licensing().parse(expression)
    ids = []
    for symbol in _licensing().license_symbols(parsed, decompose=False):
        key = str(getattr(symbol, "key", symbol))  # a LicenseWithExceptionSymbol has no key: "X WITH Y"
        hub = _HF_RENAMES.get(key) or re.sub(r"-(only|or-later)$", "", key.lower())
        if hub not in _HF_IDS or " WITH " in key:
            return {"license": "other", "license_name": re.sub(r"[^a-z0-9.-]+", "-", expression.lower()).strip("-"),
                    "license_details": expression}
        ids.append(hub)
    ids = list(dict.fromkeys(ids))
    return {"license": ids[0] if len(ids) == 1 else ids}


def _size_category(n: int) -> str:
    """The Hub's size_categories bucket of ``n`` instances (n<1K, 1K<n<10K, ..., n>1T)."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
              (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
    return next((label for bound, label in bounds if n < bound), "n>1T")


def datasheet_front_matter(datasheet: Datasheet) -> dict[str, Any]:
    """Hugging Face dataset-card metadata from the datasheet's facts only (nothing is filled in)."""
    meta: dict[str, Any] = {}
    if datasheet.name:
        meta["pretty_name"] = datasheet.name
    if datasheet.license:
        meta.update(_hf_licence(validate_licence(datasheet.license)))
    if datasheet.language:
        meta["language"] = list(datasheet.language)
    if datasheet.task_categories:
        meta["task_categories"] = list(datasheet.task_categories)
    if datasheet.instances is not None:
        meta["size_categories"] = [_size_category(datasheet.instances)]
    meta["tags"] = list(dict.fromkeys(["assay", "datasheet", *(datasheet.tags or [])]))
    return meta


def _value(sheet: Datasheet, key: str) -> str | None:
    value = getattr(sheet, key)
    if value in (None, []):
        return None
    return ", ".join(value) if isinstance(value, list) else str(value)


def _src(key: str) -> str:
    return f"DS `datasheet.yaml:{key}`"


def _prose(sheet: Datasheet, key: str, title: str) -> list[Any]:
    """A free-text fact under its own heading, with its source; a TODO when a required one is missing."""
    value = _value(sheet, key)
    if value is not None:
        return [CardSection(title, f"ds-{key.replace('_', '-')}", [Paragraph(value, "provider"),
                                                                   Paragraph(f"Source: {_src(key)}", "note")])]
    if key in REQUIRED_DATASHEET_FACTS:
        return [CardSection(title, f"ds-{key.replace('_', '-')}",
                            [Todo(key, REQUIRED_DATASHEET_FACTS[key], "datasheet.yaml")])]
    return []


def _facts(sheet: Datasheet, keys: list[tuple[str, str]]) -> list[Any]:
    rows: list[tuple[str, str | Todo, str]] = [(label, _value(sheet, key) or "", _src(key)) for key, label in keys
                                               if _value(sheet, key) is not None]
    return [Facts(rows)] if rows else []


def datasheet_document(datasheet: Datasheet, audit_summary: AuditSummary | Evidence | LoadedAudit | None = None
                       ) -> CardDocument:
    """The datasheet as a document (Gebru et al.'s seven sections, the gaps first, the audit when given)."""
    sheet = datasheet
    audit = summarize_audit(audit_summary) if isinstance(audit_summary, (Evidence, LoadedAudit)) else audit_summary
    sections: list[CardSection] = []
    missing = [key for key in REQUIRED_DATASHEET_FACTS if _value(sheet, key) is None]
    if missing:
        sections.append(CardSection("Gaps", "gaps", [
            Paragraph("Facts datasheet.yaml does not give (never filled in by Assay):"),
            Items([Todo(key, REQUIRED_DATASHEET_FACTS[key], "datasheet.yaml") for key in missing])]))
    sections.append(CardSection("Motivation", "motivation", [
        *_facts(sheet, [("name", "Name"), ("version", "Version"), ("creators", "Created by")]),
        *_prose(sheet, "description", "Description"), *_prose(sheet, "motivation", "Why it was created"),
        *_prose(sheet, "funding", "Funding")]))
    composition: list[Any] = [*_facts(sheet, [("instances", "Instances")]),
                              *_prose(sheet, "composition", "Instances and splits"),
                              *_prose(sheet, "sensitive_data", "Sensitive data")]
    if audit is not None:
        composition.append(Paragraph("Duplicates, train/test leakage, label issues and integrity as measured: see "
                                     "Audit."))
    sections.append(CardSection("Composition", "composition", composition))
    sections.append(CardSection("Collection process", "collection-process", [
        *_prose(sheet, "source", "Source"), *_prose(sheet, "collection", "How it was collected"),
        *_prose(sheet, "consent", "Consent")]))
    sections.append(CardSection("Preprocessing, cleaning and labeling", "preprocessing-cleaning-labeling", [
        *_prose(sheet, "preprocessing", "Preprocessing and cleaning"), *_prose(sheet, "labeling", "Labeling")]))
    sections.append(CardSection("Uses", "uses", [
        *_facts(sheet, [("task_categories", "Task categories"), ("language", "Languages")]),
        *_prose(sheet, "intended_uses", "Intended uses"), *_prose(sheet, "out_of_scope_uses", "Out-of-scope uses")]))
    distribution: list[Any] = [*_prose(sheet, "distribution", "How it is distributed")]
    if sheet.license:
        distribution.append(Facts([("Licence (SPDX)", f"`{sheet.license}`", _src("license"))]))
        distribution.append(CardSection("Licence obligations", "licence-obligations", [
            Paragraph(f"What {sheet.license} asks of a user, from Assay's table of common licences (a summary, not "
                      "legal advice; the licence text governs):"),
            Items(licence_obligations(sheet.license))]))
    else:
        distribution.append(Todo("license", REQUIRED_DATASHEET_FACTS["license"], "datasheet.yaml"))
    sections.append(CardSection("Distribution", "distribution", distribution))
    sections.append(CardSection("Maintenance", "maintenance", [
        *_facts(sheet, [("contact", "Contact")]), *_prose(sheet, "maintenance", "Maintenance"),
        *_prose(sheet, "citation", "Citation")]))
    if audit is not None:
        sections.append(_audit_section(audit))
    rows = [[Cell("DS"), Cell(sheet.source_file or "datasheet facts (built in Python)", code=True),
             Cell(f"sha256:{sheet.sha256}", code=True)]]
    if audit is not None:
        rows.append([Cell("AU"), Cell(audit.path or "evidence.json (of the audit bundle this file was written with)",
                                      code=bool(audit.path)),
                     Cell(f"sha256:{audit.sha256}" if audit.sha256 else "in the bundle's assay-manifest.json",
                          code=bool(audit.sha256))])
    sections.append(CardSection("Sources", "sources", [
        Paragraph("Every fact names its source: DS is datasheet.yaml (the key it was read from), AU the audit's "
                  "evidence.json (a pointer into it)."), Table(["id", "file", "sha256"], rows)]))
    title = f"Datasheet: {sheet.name}" if sheet.name else "Datasheet"
    subtitle = ("Written by Assay from datasheet.yaml after Gebru et al. 2021, \"Datasheets for Datasets\" (CACM "
                "64(12)); facts the file does not give are marked TODO, never invented.")
    return CardDocument(title, subtitle, sections)


def render_datasheet(datasheet: Datasheet, audit_summary: AuditSummary | Evidence | LoadedAudit | None = None) -> str:
    """DATASHEET.md: Hugging Face dataset-card front matter, then the datasheet (see :func:`datasheet_document`).
    ``audit_summary``: the audit's Evidence (``assay audit``), a loaded audit bundle or an :class:`AuditSummary`;
    its numbers are quoted in an Audit section, its missing sections stated as gaps."""
    import yaml

    front = yaml.safe_dump(datasheet_front_matter(datasheet), sort_keys=False, allow_unicode=True, width=100,
                           default_flow_style=False)
    return render_card_markdown(datasheet_document(datasheet, audit_summary), front)
