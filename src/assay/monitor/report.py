"""The monitor report folder (``assay monitor --out``): ``monitor.json`` (sections + the snapshot),
``monitor.md`` and ``dashboard.html``, written under the project's output rules (kind ``monitor``:
:func:`~assay.evidence.output.atomic_directory`, a manifest, only Assay's own folders replaced)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from assay.report.formatting import format_number
from assay.report.markdown import escape_markdown

__all__ = ["MONITOR_KIND", "REPORT_SCHEMA", "monitor_report", "render_monitor_markdown", "write_monitor_report"]

MONITOR_KIND = "monitor"
REPORT_SCHEMA = "assay.monitor.report/1"
_MAX_WINDOW_ROWS = 50


def monitor_report(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The report as plain JSON: a verdict, sections (drift, label-free accuracy, alarms) and the snapshot."""
    windows = list(snapshot.get("windows", []))
    judged = [w for w in windows if not w.get("insufficient")]
    alarmed = [w for w in windows if w.get("alarms")]
    verdict = "alarm" if alarmed else ("pass" if judged else "insufficient data")
    drift = [{"window": w["index"], "test": t["name"], "statistic": t["statistic"], "threshold": t["threshold"],
              "p_value": t["p_value"], "p_adjusted": t["p_adjusted"], "method": t["method"], "alarm": t["alarm"]}
             for w in windows for t in w.get("tests", [])]
    label_free = [{"window": w["index"], "n": w["n"], "estimated_accuracy": w.get("estimated_accuracy"),
                   "doc_accuracy": w.get("doc_accuracy"), "realized_accuracy": w.get("realized_accuracy"),
                   "ood_rate": w.get("ood_rate"), "margin_share": w.get("margin_share")} for w in windows]
    return {
        "schema": REPORT_SCHEMA,
        "verdict": verdict,
        "summary": {"windows": len(windows), "judged": len(judged), "alarmed": len(alarmed),
                    "insufficient": len(windows) - len(judged), "rows": snapshot.get("rows_processed"),
                    "threshold_method": snapshot.get("threshold_method")},
        "sections": {
            "drift": {"method": snapshot.get("threshold_method"), "tests": drift},
            "label_free": {"method": "ATC (Garg et al. 2022) with the reference threshold, Clopper-Pearson CI; DoC "
                                     "(Guillory et al. 2021) with a normal CI; realized accuracy from feedback labels",
                           "windows": label_free},
            "alarms": [{"window": w["index"], "start": w["start"], "end": w["end"], "alarm": a}
                       for w in alarmed for a in w["alarms"]],
        },
        "snapshot": dict(snapshot),
    }


def _estimate(value: Any) -> str:
    if not isinstance(value, Mapping) or value.get("value") is None:
        return "-"
    ci = value.get("ci") or [None, None]
    return f"{format_number(value['value'], 3)} [{format_number(ci[0], 3)}, {format_number(ci[1], 3)}]"


def render_monitor_markdown(report: Mapping[str, Any]) -> str:
    """monitor.md: verdict, settings, one row per window (the latest :data:`_MAX_WINDOW_ROWS`), the alarms."""
    snap = report["snapshot"]
    summary = report["summary"]
    model = snap.get("model") or {}
    ref = snap.get("reference") or {}
    lines = ["# Assay monitor report", "",
             f"**Verdict: {escape_markdown(report['verdict'].upper())}** - {summary['alarmed']} of "
             f"{summary['windows']} windows raised an alarm ({summary['insufficient']} had insufficient data).", "",
             f"- Model: {escape_markdown(model.get('name') or '-')} version "
             f"{escape_markdown(model.get('version') or '-')} (alias {escape_markdown(model.get('alias') or '-')})",
             f"- Reference: {escape_markdown(ref.get('source'))} (n = {ref.get('n')}, accuracy "
             f"{format_number(ref.get('accuracy'), 4)}, sha256 {escape_markdown((ref.get('sha256') or '-')[:12])})",
             f"- Windows: {escape_markdown(snap['window']['kind'])} of {format_number(snap['window']['size'])}; "
             f"rows processed: {snap.get('rows_processed')}",
             f"- Alarm rules: {escape_markdown(snap.get('threshold_method'))}", "",
             "| window | rows | ATC accuracy | DoC accuracy | realized | OOD rate | alarms |",
             "|---:|---:|---|---|---|---|---|"]
    windows = snap.get("windows", [])[-_MAX_WINDOW_ROWS:]
    for w in windows:
        status = "insufficient data" if w.get("insufficient") else (str(len(w["alarms"])) if w["alarms"] else "none")
        lines.append(f"| {w['index']}{' (open)' if w.get('open') else ''} | {w['n']} | "
                     f"{_estimate(w.get('estimated_accuracy'))} | {_estimate(w.get('doc_accuracy'))} | "
                     f"{_estimate(w.get('realized_accuracy'))} | "
                     f"{_estimate(w.get('ood_rate'))} | {status} |")
    lines.append("")
    alarms = report["sections"]["alarms"]
    if alarms:
        lines += ["## Alarms", ""] + [f"- window {a['window']}: {escape_markdown(a['alarm'])}" for a in alarms[-200:]]
        lines.append("")
    return "\n".join(lines)


def write_monitor_report(snapshot: Mapping[str, Any], out: str | os.PathLike[str], *, force: bool = False,
                         inputs: Iterable[Path] = ()) -> dict[str, Any]:
    """Write the report folder ``out`` (monitor.json, monitor.md, dashboard.html); returns the report."""
    from assay.evidence.output import atomic_directory
    from assay.report.dashboard import render_dashboard

    report = monitor_report(snapshot)
    with atomic_directory(out, MONITOR_KIND, inputs=inputs, force=force) as work:
        (work / "monitor.json").write_text(json.dumps(report, indent=1, allow_nan=False, default=str) + "\n",
                                           encoding="utf-8")
        (work / "monitor.md").write_text(render_monitor_markdown(report), encoding="utf-8")
        (work / "dashboard.html").write_text(render_dashboard(snapshot, refresh_s=None), encoding="utf-8")
    return report
