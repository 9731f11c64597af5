"""Evidence -> one self-contained HTML file: inline CSS and SVG, no scripts, no network.

The page is generic over sections: every section gets its verdict badge, summary, metrics (value, CI, n,
method, configuration), findings, tables and plots, whatever check produced it. Python prepares plain
view data; ``templates/report.html.j2`` only lays it out, with autoescaping on for everything except the
SVG markup our own plotting code produced (``assay.report.svg`` escapes every text it writes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from numbers import Real
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from assay.evidence.schema import Evidence, Finding, Metric, Section
from assay.report.formatting import (
    MISSING,
    SEVERITY_ORDER,
    NumberFormat,
    ci_columns,
    format_number,
    format_value,
    headline_metrics,
    interval_note,
    metric_parts,
    short_hash,
    table_cells,
    write_text_atomic,
)
from assay.report.plots import UnsupportedPlotError, render_plot
from assay.report.verdicts import INFO_NOTE, attention, other_findings, plural, shorten, verdict_headline

__all__ = ["render_html", "write_html"]

HEAD_ROWS = 15  # rows shown before a "show all" <details>
MAX_TABLE_COLUMNS = 30
MAX_TABLE_CELLS = 10_000  # beyond this a table is cut (the full data stays in evidence.json)
MAX_CLASS_NAMES = 20
MAX_BANNER_ITEMS = 8  # section findings named under the banner; the rest are counted


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # autoescape=True explicitly: select_autoescape() would not match the ".html.j2" suffix.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("assay.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def _anchor(pointer: str) -> str:
    """Element id of an evidence pointer such as ``performance.tables.per_class``."""
    return "s-" + _slug(pointer)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _metric_rows(section: Section) -> list[dict[str, Any]]:
    rows = []
    fmt = NumberFormat.for_metrics(section.metrics.values())  # the list is one column: one notation
    for name, metric in section.metrics.items():
        value, ci = fmt.metric(metric)
        rows.append({
            "name": name,
            "id": _anchor(f"{section.name}.metrics.{name}"),
            "value": value,
            "ci": ci,
            "note": interval_note(name, metric, fmt),  # why the estimate lies outside its interval, if it does
            "n": format_number(metric.n),
            "method": metric.method,
            "config": [(str(k), format_value(v, 400)) for k, v in metric.config.items()],
            "config_json": json.dumps(metric.config, default=str, ensure_ascii=False, sort_keys=True)
            if metric.config else "",
            "lower_is_better": bool(metric.config.get("lower_is_better")),
        })
    return rows


def _table_view(section_name: str, name: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Header and cells of a row-oriented table; ``c``/``c_ci_low``/``c_ci_high`` become one cell."""
    seen: dict[str, None] = {}  # insertion-ordered set: columns in order of first appearance
    for row in rows:
        seen.update(dict.fromkeys(row))
    columns = list(seen)
    merged = ci_columns(columns)
    companions = {c for pair in merged.values() for c in pair}
    shown = [c for c in columns if c not in companions]
    omitted_columns = max(len(shown) - MAX_TABLE_COLUMNS, 0)
    shown = shown[:MAX_TABLE_COLUMNS]
    max_rows = max(MAX_TABLE_CELLS // max(len(shown), 1), HEAD_ROWS)
    # One format per column (numbers with or without an interval), so a column never mixes notations.
    texts = table_cells(rows[:max_rows], shown, {c: pair for c, pair in merged.items() if c in shown})
    body = [[{"text": text, "ci": ci, "numeric": _is_number(row.get(column))}
             for column, (text, ci) in zip(shown, cells, strict=True)]
            for row, cells in zip(rows[:max_rows], texts, strict=True)]
    return {
        "name": name,
        "id": _anchor(f"{section_name}.tables.{name}"),
        "columns": shown,
        "head": body[:HEAD_ROWS],
        "rest": body[HEAD_ROWS:],
        "n_rows": len(rows),
        "omitted_rows": len(rows) - len(body),
        "omitted_columns": omitted_columns,
    }


def _plot_view(section_name: str, name: str, plot: Mapping[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"name": name, "id": _anchor(f"{section_name}.plots.{name}"), "svg": None, "note": None}
    kind = plot.get("kind") if isinstance(plot, Mapping) else None
    try:
        view["svg"] = Markup(render_plot(plot))  # our own SVG writer; it escapes its text
    except UnsupportedPlotError:
        view["note"] = (f"Plot \u201c{name}\u201d has kind {kind!r}, which this version of Assay does not draw; "
                        "its data is in evidence.json.")
    except Exception as exc:  # a broken plot must not cost the user the whole report
        view["note"] = f"Plot \u201c{name}\u201d could not be drawn ({type(exc).__name__}: {exc})."
    return view


def _finding_target(pointer: str | None, known: set[str]) -> str | None:
    """The id of the element a finding points at, or of its nearest enclosing one."""
    if not pointer:
        return None
    parts = pointer.split(".")
    for end in range(len(parts), 0, -1):
        candidate = _anchor(".".join(parts[:end]))
        if candidate in known:
            return candidate
    return None


def _fold_label(n_metrics: int, n_tables: int) -> str:
    """Summary line of the fold that holds a section's full metric list behind its lead tables."""
    parts = [plural(n_metrics, "metric")] if n_metrics else []
    parts += [plural(n_tables, "full table")] if n_tables else []
    return f"All {' and '.join(parts)} (also in evidence.json)"


def _section_view(section: Section) -> dict[str, Any]:
    """View data of one section. Its verdict's cause (``why``) leads, then the other findings; tables the
    section names in ``lead_tables`` come before the plots, and the metric list and other tables are then
    folded into one ``<details>`` (the full list stays in evidence.json)."""
    metrics = _metric_rows(section)
    lead = [name for name in section.lead_tables if name in section.tables]
    lead_tables = [_table_view(section.name, name, section.tables[name]) for name in lead]
    tables = [_table_view(section.name, name, rows) for name, rows in section.tables.items() if name not in lead]
    plots = [_plot_view(section.name, name, plot) for name, plot in section.plots.items()]
    anchor = _anchor(section.name)
    known = ({anchor} | {m["id"] for m in metrics} | {t["id"] for t in lead_tables + tables}
             | {p["id"] for p in plots})

    def view(f: Finding) -> dict[str, Any]:
        return {"severity": f.severity, "message": f.message, "evidence": f.evidence,
                "href": _finding_target(f.evidence, known)}

    counted = sorted(section.findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9))
    return {
        "id": anchor,
        "name": section.name,
        "title": section.title,
        "verdict": section.verdict,
        "why": [view(f) for f in section.verdict_reasons()],
        "info_note": INFO_NOTE if section.verdict == "info" else "",
        "summary": section.summary,
        "metrics": metrics,
        "findings": [view(f) for f in other_findings(section)],
        "finding_counts": {s: sum(f.severity == s for f in counted) for s in ("critical", "warning")},
        "lead_tables": lead_tables,
        "fold_label": _fold_label(len(metrics), len(tables)) if lead_tables and (metrics or tables) else "",
        "tables": tables,
        "plots": plots,
        "config": [(str(k), format_value(v, 400)) for k, v in section.config.items()],
    }


def _banner_items(evidence: Evidence) -> tuple[list[dict[str, Any]], int]:
    """Section findings that need reading, named under the banner (run-level ones are listed right below
    it anyway), and how many more there are."""
    items = [a for a in attention(evidence) if a.section is not None]
    shown = [{"severity": a.finding.severity, "where": a.where, "message": shorten(a.finding.message),
              "label": f"why {a.section.verdict}" if a.cause else a.finding.severity, "href": _anchor(a.section.name)}
             for a in items[:MAX_BANNER_ITEMS] if a.section is not None]
    return shown, len(items) - len(shown)


def _headline(metric: Metric) -> dict[str, str]:
    value, ci = metric_parts(metric)
    return {"value": value, "ci": ci, "n": format_number(metric.n), "method": metric.method}


def _context(evidence: Evidence, title: str = "Assay report", verdict_text: str | None = None) -> dict[str, Any]:
    model, data, env = evidence.model, evidence.data, evidence.environment
    names = model.class_names
    class_preview = ", ".join(names[:MAX_CLASS_NAMES])
    if len(names) > MAX_CLASS_NAMES:
        class_preview += f", \u2026 (+{len(names) - MAX_CLASS_NAMES} more)"
    environment = [(k, format_value(v, 400)) for k, v in env.model_dump().items()]
    banner_items, banner_more = _banner_items(evidence) if verdict_text is None else ([], 0)
    return {
        "title": title,
        "verdict": evidence.verdict,
        "verdict_text": verdict_text or verdict_headline(evidence),
        "banner_items": banner_items,
        "banner_more": banner_more,
        "model": {
            "name": Path(model.path).name or model.path,
            "path": model.path,
            "format": model.format,
            "sha_short": short_hash(model.sha256),
            "sha": model.sha256,
            "num_classes": model.num_classes,
            "classes": class_preview or MISSING,
            "input": f"{model.input_dtype} ({', '.join('N' if d is None else str(d) for d in model.input_shape)})",
            "outputs": model.outputs,
        },
        "data": {
            "name": data.name,
            "source": data.source,
            "n": format_number(data.n),
            "modality": data.modality,
            "fingerprint_short": short_hash(data.fingerprint),
            "fingerprint": data.fingerprint,
        },
        "headline": [(label, _headline(metric)) for label, metric in headline_metrics(evidence)],
        "run_findings": [{"severity": f.severity, "message": f.message, "evidence": f.evidence}
                         for f in sorted(evidence.findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9))],
        "sections": [_section_view(section) for section in evidence.sections.values()],
        "environment": environment,
        "timings": [(stage, format_number(seconds, 2)) for stage, seconds in evidence.timings.items()],
        "config_json": json.dumps(evidence.config, indent=2, default=str, ensure_ascii=False, sort_keys=True),
        "assay_version": env.assay,
        "seed": evidence.seed,
        "created_at": evidence.created_at,
        "schema_version": evidence.schema_version,
    }


def render_html(evidence: Evidence, title: str = "Assay report", verdict_text: str | None = None) -> str:
    """The whole report as one self-contained HTML document (no scripts, no external resources).
    ``title``/``verdict_text`` let other commands (compare, select) reuse the page for their own sections."""
    return _environment().get_template("report.html.j2").render(**_context(evidence, title, verdict_text))


def write_html(evidence: Evidence, path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_html` to ``path`` atomically (temporary file in the same folder, then rename)."""
    return write_text_atomic(path, render_html(evidence))
