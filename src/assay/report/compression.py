"""CompressionResult -> compression.md and report.html (variants, damage audit, exemplars, Pareto fronts).

A renderer only: it reads the result and the plot data it is handed (the Pareto fronts come from
:func:`assay.compress.run.pareto_plots`), and computes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from assay.evidence.schema import Evidence, Finding, Section

if TYPE_CHECKING:
    from assay.compress.run import CompressionResult

__all__ = ["compression_sections", "render_compression_html", "render_compression_markdown"]


def _f(value: Any, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, fmt)


def render_compression_markdown(result: CompressionResult) -> str:
    b = result.ranking_batch
    lines = ["## Assay compression: "
             f"{'recommend ' + result.recommended if result.recommended else 'keep the original'}",
             "", *[f"- {r}" for r in result.reasons], "",
             f"Original: accuracy {_f(result.original['accuracy'])}, "
             f"p50 {_f(result.original[f'p50_ms[batch={b}]'], '.3f')} ms "
             f"at batch {b}, size {_f(result.original['size_mb'], '.3f')} MB.", "",
             f"| variant | accuracy Δ (CI) | worst class Δ | changed | ECE Δ | speed-up (batch {b}) | "
             "size MB | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        lo, hi = r["accuracy_delta_ci"]
        lines.append(f"| {r['variant']} | {_f(r['accuracy_delta'], '+.4f')} ({_f(lo, '+.4f')}, {_f(hi, '+.4f')}) | "
                     f"{r['worst_class'] if r['worst_class'] is not None else '—'}: "
                     f"{_f(r['worst_class_delta'], '+.4f')} | "
                     f"{r['changed_predictions']} | {_f(r['ece_delta'], '+.4f')} | "
                     f"{_speedup(r.get(f'speedup[batch={b}]'))} | "
                     f"{_f(r['size_mb'], '.3f')} | {r['verdict']} |")
    slow = [(r["variant"], reason) for r in result.rows for reason in r["slow_reasons"]]
    if slow:
        lines += ["", "Why some variants are slow here:", *[f"- **{v}**: {reason}" for v, reason in slow]]
    lines.append("")
    return "\n".join(lines)


def _speedup(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    """A variant row for the HTML table: CI split into two numeric columns; long texts live elsewhere."""
    lo, hi = row["accuracy_delta_ci"]
    failed = row["status"] == "failed"
    out = {"variant": row["variant"], "status": row["verdict"] if failed else row["status"]}  # "failed: <reason>"
    for key, value in row.items():
        if key in ("variant", "status", "method", "notes", "slow_reasons", "verdict", "error"):
            continue
        if key == "accuracy_delta_ci":
            out["accuracy_delta_ci_low"], out["accuracy_delta_ci_high"] = lo, hi
        else:
            out[key] = value
    return out


def compression_sections(result: CompressionResult, exemplars: list[dict[str, Any]] | None = None,
                         plots: dict[str, dict[str, Any]] | None = None) -> dict[str, Section]:
    """The sections of the compression report page; ``plots``: plot data for the compression section (the
    Pareto fronts), ``exemplars``: thumbnail rows of changed predictions."""
    rows = result.rows
    failed = sum(r["status"] == "failed" for r in rows)
    findings = [Finding(severity="info" if result.recommended else "warning", message=result.reasons[0],
                        evidence="compression.tables.variants")]
    findings += [Finding(severity="info", message=r, evidence="compression.tables.variants")
                 for r in result.reasons[1:]]
    for r in rows:
        if r["status"] == "failed":
            findings.append(Finding(severity="warning", message=f"{r['variant']} {r['verdict']}",
                                    evidence="compression.tables.variants"))
        for reason in r["slow_reasons"]:
            findings.append(Finding(severity="warning", message=f"{r['variant']} is not faster here: {reason}",
                                    evidence="compression.tables.variants"))
    sections = {"compression": Section(
        name="compression", title="Compression variants and recommendation",
        verdict="pass" if result.recommended else "warn",
        summary=(f"{len(rows)} variant(s) audited against the original"
                 + (f" ({failed} failed)" if failed else "") + "; "
                 + (f"recommended: {result.recommended}" if result.recommended else "none recommended")),
        findings=findings, tables={"variants": [_table_row(r) for r in rows], "original": [result.original],
                                   "methods": [{"variant": r["variant"], "method": r["method"],
                                                "notes": "; ".join(r["notes"])} for r in rows]},
        plots=dict(plots or {}), config={"limits": result.limits, "ranking_batch": result.ranking_batch})}
    damage_tables = {}
    delta_plots = {}
    for audit in result.variants:
        if audit.comparison is None:  # failed before its damage audit
            continue
        per_class = audit.comparison.per_class
        damage_tables[audit.name] = per_class
        delta_plots[f"delta[{audit.name}]"] = {
            "kind": "bars", "title": f"{audit.name}: accuracy delta per class vs the original (paired CI)",
            "ylabel": "accuracy delta", "center_zero": True, "categories": [str(r["group"]) for r in per_class],
            "muted": [bool(r["insufficient"]) for r in per_class],
            "series": [{"label": "delta", "values": [r["delta"] for r in per_class],
                        "ci_low": [r["ci_low"] for r in per_class], "ci_high": [r["ci_high"] for r in per_class]}]}
        for col, srows in audit.comparison.per_slice.items():
            damage_tables[f"{audit.name} by {col}"] = srows
    sections["damage"] = Section(
        name="damage", title="Damage audit per class and slice", verdict="info",
        summary="Per-class (and per-slice, with --slice-by) accuracy deltas of every variant against the original, "
                "paired, Holm-corrected.",
        tables=damage_tables, plots=delta_plots)
    sections["exemplars"] = Section(
        name="exemplars", title="Compression-identified exemplars", verdict="info",
        summary="Samples whose prediction changed under compression (Hooker et al. 2019): review them by hand; "
                "the full list is in exemplars.csv.",
        tables={"counts": [{"variant": r["variant"], "changed_predictions": r["changed_predictions"]} for r in rows]},
        plots={"thumbnails": {"kind": "images", "title": "Changed predictions (label / original → variant)",
                              "rows": exemplars}} if exemplars else {})
    return sections


def render_compression_html(result: CompressionResult, header: Evidence, exemplars: list[dict[str, Any]] | None = None,
                            plots: dict[str, dict[str, Any]] | None = None) -> str:
    """The compression report page: ``header``'s model and data, the sections of :func:`compression_sections`."""
    from assay.report.html import render_html

    page = header.model_copy(update={"sections": compression_sections(result, exemplars, plots)})
    return render_html(page, title="Assay compression", verdict_text=result.reasons[0])
