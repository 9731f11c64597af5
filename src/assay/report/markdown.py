"""Evidence -> GitHub-flavoured Markdown short enough for a pull-request comment (no plots).

A verdict line and what needs reading, the model and data, then per section: its verdict and why, a table
of every metric with its interval (or, when the section names lead tables, those tables instead), and the
findings as bullets (most severe first). Text from the evidence is escaped so that a
class named ``<b>cat</b>`` or ``a|b`` cannot break the table or inject markup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from assay.evidence.schema import Evidence, Section
from assay.report.formatting import (
    MISSING,
    SEVERITY_ORDER,
    NumberFormat,
    ci_columns,
    format_number,
    headline_metrics,
    interval_note,
    metric_parts,
    short_hash,
    table_cells,
    write_text_atomic,
)
from assay.report.verdicts import INFO_NOTE, plural, verdict_headline

__all__ = ["escape_markdown", "render_markdown", "write_markdown"]

VERDICT_ICON = {"pass": "\u2705", "warn": "\u26a0\ufe0f", "fail": "\u274c", "info": "\u2139\ufe0f"}
SEVERITY_ICON = {"critical": "\u274c", "warning": "\u26a0\ufe0f", "info": "\u2139\ufe0f"}
MAX_FINDINGS = 10  # per section; GitHub comments are capped at 65,536 characters
MAX_METRICS = 25
MAX_TABLE_ROWS = 25  # per lead table

_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def escape_markdown(text: object) -> str:
    """Text safe inside a Markdown paragraph or table cell: HTML and Markdown syntax neutralised."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = _SPECIAL.sub(r"\\\1", out)
    return " ".join(out.split())  # newlines would end a table row or a bullet


def _code(text: object, in_table: bool = False) -> str:
    """Inline code that tolerates backticks in the text (and, in a table, pipes: GFM honours ``\\|`` there
    even inside code spans)."""
    body = " ".join(str(text).split())
    if in_table:
        body = body.replace("|", "\\|")
    fence = "``" if "`" in body else "`"
    return f"{fence}{body}{fence}" if fence == "`" else f"{fence} {body} {fence}"


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


def _table_lines(name: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A row-oriented table (``c``/``c_ci_low``/``c_ci_high`` merged into one ``value [lo, hi]`` cell)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    merged = ci_columns(seen)
    companions = {c for pair in merged.values() for c in pair}
    columns = [c for c in seen if c not in companions]
    if not columns:
        return []
    lines = [f"**{escape_markdown(name)}**", "", "| " + " | ".join(escape_markdown(c) for c in columns) + " |",
             "|" + "|".join("---:" if c in merged else "---" for c in columns) + "|"]
    shown = rows[:MAX_TABLE_ROWS]
    for row, cells in zip(shown, table_cells(shown, columns, merged), strict=True):  # one notation per column
        lines.append("| " + " | ".join(f"{text} {ci}".strip() if _is_number(row.get(c)) else escape_markdown(text)
                                       for c, (text, ci) in zip(columns, cells, strict=True)) + " |")
    if len(rows) > MAX_TABLE_ROWS:
        lines.append(f"| \u2026 {len(rows) - MAX_TABLE_ROWS} more rows in evidence.json |" + " |" * (len(columns) - 1))
    return [*lines, ""]


def _why_line(section: Section) -> list[str]:
    """The cause of a non-pass verdict, right under the section heading."""
    reasons = section.verdict_reasons()
    if reasons:
        causes = "; ".join(escape_markdown(f.message) + (f" ({_code(f.evidence)})" if f.evidence else "")
                           for f in reasons)
        return [f"**Why {section.verdict.upper()}:** {causes}", ""]
    if section.verdict == "info":
        return [f"_{escape_markdown(INFO_NOTE)}._", ""]
    return []


def _section_lines(section: Section) -> list[str]:
    icon = VERDICT_ICON.get(section.verdict, "")
    lines = [f"### {icon} {escape_markdown(section.title)}: {section.verdict.upper()}", ""]
    lines += _why_line(section)
    if section.summary:
        lines += [escape_markdown(section.summary), ""]
    lead = [name for name in section.lead_tables if name in section.tables]
    for name in lead:
        lines += _table_lines(name, section.tables[name])
    if lead and section.metrics:
        lines += [f"All {plural(len(section.metrics), 'metric')} are in evidence.json and the HTML report.", ""]
    elif section.metrics:
        lines += ["| metric | value | CI | n |", "|---|---:|---:|---:|"]
        shown = list(section.metrics.items())[:MAX_METRICS]
        fmt = NumberFormat.for_metrics(metric for _, metric in shown)  # one column: one notation
        notes = []
        for name, metric in shown:
            arrow = " \u2193" if metric.config.get("lower_is_better") else ""
            value, ci = fmt.metric(metric)
            note = interval_note(name, metric, fmt)
            dagger = " \u2020" if note else ""
            notes += [note] if note else []
            name_cell = _code(name, in_table=True) + arrow
            lines.append(f"| {name_cell} | {value} | {ci or MISSING}{dagger} | {format_number(metric.n)} |")
        if len(section.metrics) > MAX_METRICS:
            lines.append(f"| \u2026 {len(section.metrics) - MAX_METRICS} more in evidence.json | | | |")
        lines.append("")
        lines += [f"\u2020 {escape_markdown(note)}." for note in notes] + ([""] if notes else [])
    findings = sorted(section.findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9))
    for finding in findings[:MAX_FINDINGS]:
        pointer = f" ({_code(finding.evidence)})" if finding.evidence else ""
        icon = SEVERITY_ICON.get(finding.severity, "")
        lines.append(f"- {icon} **{finding.severity}**: {escape_markdown(finding.message)}{pointer}")
    if len(findings) > MAX_FINDINGS:
        lines.append(f"- \u2026 and {len(findings) - MAX_FINDINGS} more findings in the HTML report")
    if findings:
        lines.append("")
    return lines


def render_markdown(evidence: Evidence) -> str:
    """The evidence as Markdown: verdict line, headline, one metrics table and findings list per section."""
    verdict = evidence.verdict
    model, data = evidence.model, evidence.data
    lines = [
        f"## {VERDICT_ICON[verdict]} Assay verdict: **{verdict.upper()}**",
        "",
        escape_markdown(verdict_headline(evidence)),
        "",
        f"Model {_code(Path(model.path).name or model.path)} ({model.format}, "
        f"sha256 {_code(short_hash(model.sha256))}, {model.num_classes} classes) on {escape_markdown(data.name)} "
        f"(n = {format_number(data.n)}, fingerprint {_code(short_hash(data.fingerprint))}).",
        "",
    ]
    for finding in sorted(evidence.findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9)):
        icon = SEVERITY_ICON.get(finding.severity, "")
        lines.append(f"> {icon} **{finding.severity}**: {escape_markdown(finding.message)}")
    if evidence.findings:
        lines.append("")
    headline = headline_metrics(evidence)
    if headline:
        parts = []
        for label, metric in headline:
            value, ci = metric_parts(metric)
            parts.append(f"{label} **{value}**" + (f" {ci}" if ci else ""))
        lines += [" \u00b7 ".join(parts), ""]
    if evidence.sections:
        lines += ["| section | verdict | findings |", "|---|---|---|"]
        for section in evidence.sections.values():
            counts = {s: sum(f.severity == s for f in section.findings) for s in ("critical", "warning")}
            summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "\u2014"
            icon = VERDICT_ICON[section.verdict]
            lines.append(f"| {escape_markdown(section.title)} | {icon} {section.verdict} | {summary} |")
        lines.append("")
    else:
        lines += ["_No checks ran._", ""]
    for section in evidence.sections.values():
        lines += _section_lines(section)
    lines.append(f"<sub>Assay {escape_markdown(evidence.environment.assay)} \u00b7 seed {evidence.seed} \u00b7 "
                 f"{escape_markdown(evidence.created_at)}</sub>")
    return "\n".join(lines) + "\n"


def write_markdown(evidence: Evidence, path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_markdown` to ``path`` atomically."""
    return write_text_atomic(path, render_markdown(evidence))
