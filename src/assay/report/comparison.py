"""Comparison -> comparison.md (a pull-request comment / CI step summary), junit.xml (one test case per
rule) and comparison.html (the evaluate report's page, with gate, per-class, per-slice and flip sections).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from assay.evidence.schema import Evidence, Finding, Section, Severity, Verdict
from assay.report.formatting import MISSING, NumberFormat, format_number, interval_note

if TYPE_CHECKING:
    from assay.compare.gate import Comparison

__all__ = ["comparison_sections", "render_comparison_html", "render_junit", "render_markdown",
           "render_selection_html", "render_selection_markdown", "selection_sections"]

_MARK = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "⚠️ inconclusive", "skipped": "➖ skipped"}
_SEVERITY: dict[str, Severity] = {"pass": "info", "skipped": "info", "inconclusive": "warning", "fail": "critical"}
_VERDICT: dict[str, Verdict] = {"pass": "pass", "fail": "fail", "inconclusive": "warn"}
#: The verdict as the exit code of `assay compare` reads it, so that a green CI step and an inconclusive gate
#: are not taken to mean the same thing.
_EXIT_MEANING = {
    "pass": "Every rule passed: `assay compare` exits 0.",
    "fail": "At least one rule failed (the data show a regression at the policy's confidence): `assay compare` "
            "exits 1.",
    "inconclusive": "No rule failed, so `assay compare` exits 0, but at least one rule could not be settled with "
                    "these samples (the table says how many would settle it): no regression is shown, and none is "
                    "ruled out. `--fail-on-inconclusive` makes this verdict exit 1.",
}


def _ci(text: str) -> str:
    """An interval cell: the em dash for none."""
    return text or MISSING


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(c: Comparison, max_rows: int = 10) -> str:
    """A compact Markdown summary that fits a pull-request comment or ``$GITHUB_STEP_SUMMARY``."""
    m = c.metrics
    lines = [
        f"## Assay regression gate: {_MARK[c.verdict].upper() if c.verdict != 'pass' else '✅ PASS'}",
        "",
        _EXIT_MEANING[c.verdict],
        "",
        f"Baseline `{_cell(c.baseline.model_path)}` vs candidate `{_cell(c.candidate.model_path)}` on "
        f"**{_cell(c.data_name)}** ({c.n:,} samples, fingerprint `{c.data_fingerprint[:12]}`), "
        f"{int(c.policy['confidence'] * 100)}% paired bootstrap CIs.",
        "",
        "| rule | result | value | CI | limit | detail |",
        "|---|---|---|---|---|---|",
    ]
    # One NumberFormat per table column (value, CI and limit of a rule share the row's decimals).
    rule_fmt = NumberFormat.for_rows([(r.value, r.ci_low, r.ci_high, r.limit) for r in c.rules], signed=True)
    for r in c.rules:
        value, lo, hi, limit = rule_fmt.row(r.value, r.ci_low, r.ci_high, r.limit)
        ci = f"[{lo}, {hi}]" if r.ci_low is not None and r.ci_high is not None else MISSING
        lines.append(f"| {_cell(r.rule)} | {_MARK[r.status]} | {value} | {ci} | {limit} | {_cell(r.message)} |")
    shown = [key for key in ("accuracy_delta", "macro_f1_delta", "ece_delta", "nll_delta", "negative_flip_rate",
                             "positive_flip_rate") if key in m]
    delta_fmt = NumberFormat.for_metrics([m[key] for key in shown], signed=True)
    notes = {key: interval_note(key, m[key], delta_fmt) for key in shown}
    lines += ["", "| metric | candidate − baseline | CI |", "|---|---|---|"]
    for key in shown:
        value, ci = delta_fmt.metric(m[key])
        lines.append(f"| {key} | {value}{'†' if notes[key] else ''} | {_ci(ci)} |")
    if any(notes.values()):
        lines += ["", *(f"† {_cell(note)}" for note in notes.values() if note)]
    mcnemar = m.get("mcnemar_p")
    if mcnemar is not None and mcnemar.value is not None:  # a p-value: not a delta, so not in the delta table
        broken, fixed = (mcnemar.config.get(k) for k in ("n10_baseline_right_candidate_wrong",
                                                          "n01_baseline_wrong_candidate_right"))
        counts = f" ({broken:,} right → wrong, {fixed:,} wrong → right)" if isinstance(broken, int) and \
            isinstance(fixed, int) else ""
        lines += ["", f"McNemar exact test (two-sided, all samples): p = {format_number(mcnemar.value)}{counts}."]
    worst = sorted(c.per_class, key=lambda r: r["delta"])[:max_rows]
    drops = [r for r in worst if r["delta"] < 0]
    if drops:
        accuracy_fmt = NumberFormat.for_rows(v for r in drops for v in (r["accuracy_baseline"],
                                                                         r["accuracy_candidate"]))
        class_fmt = NumberFormat.for_rows([(r["delta"], r["ci_low"], r["ci_high"]) for r in drops], signed=True)
        p_fmt = NumberFormat.for_rows([r["p_adjusted"] for r in drops])
        lines += ["", "<details><summary>Largest per-class drops</summary>", "",
                  "| class | n | baseline | candidate | right → wrong | wrong → right | delta | exact CI | adj. p | "
                  "status |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in drops:
            delta, ci = class_fmt.estimate(row["delta"], row["ci_low"], row["ci_high"])
            status = _MARK.get(str(row.get("status")), MISSING)
            if row.get("basis") and row.get("status") != "inconclusive":
                status += f" ({_cell(row['basis'])})"
            lines.append(f"| {_cell(row['group'])} | {row['n']} | {accuracy_fmt.number(row['accuracy_baseline'])} | "
                         f"{accuracy_fmt.number(row['accuracy_candidate'])} | {row['negative_flips']} | "
                         f"{row['positive_flips']} | {delta} | {_ci(ci)} | {p_fmt.number(row['p_adjusted'])} | "
                         f"{status} |")
        lines += ["", "</details>"]
    neg = c.flips.get("negative", [])
    if neg:
        lines += ["", f"<details><summary>Negative flips (right before, wrong now): "
                      f"{int(round((m['negative_flip_rate'].value or 0) * c.n)):,}</summary>", "",
                  "| id | label | baseline | candidate (confidence) |", "|---|---|---|---|"]
        for f in neg[:max_rows]:
            lines.append(f"| {_cell(f['id'])} | {_cell(f['label'])} | {_cell(f['baseline'])} | "
                         f"{_cell(f['candidate'])} ({f['candidate_confidence']:.2f}) |")
        lines += ["", "</details>"]
    lines += ["", f"_{_cell(c.notes[0]) if c.notes else ''}_", ""]
    return "\n".join(lines)


def render_junit(c: Comparison) -> str:
    """JUnit XML: one test case per rule; fail → <failure>, inconclusive/skipped → <skipped>."""
    failures = sum(r.status == "fail" for r in c.rules)
    skipped = sum(r.status in ("inconclusive", "skipped") for r in c.rules)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites name="assay.compare" tests="{len(c.rules)}" failures="{failures}" skipped="{skipped}">',
           f'  <testsuite name="assay.compare" tests="{len(c.rules)}" failures="{failures}" errors="0" '
           f'skipped="{skipped}" timestamp={quoteattr(c.created_at)}>']
    for r in c.rules:
        out.append(f'    <testcase classname="assay.compare.gate" name={quoteattr(r.rule)}>')
        if r.status == "fail":
            out.append(f'      <failure message={quoteattr(r.message)} type="regression">{escape(r.message)}</failure>')
        elif r.status in ("inconclusive", "skipped"):
            out.append(f"      <skipped message={quoteattr(r.status + ': ' + r.message)}/>")
        else:
            out.append(f"      <system-out>{escape(r.message)}</system-out>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>", ""]
    return "\n".join(out)


def _group_plot(rows: list[dict[str, Any]], title: str) -> dict[str, Any]:
    return {"kind": "bars", "title": title, "ylabel": "accuracy delta (candidate − baseline)", "center_zero": True,
            "categories": [str(r["group"]) for r in rows], "muted": [bool(r["insufficient"]) for r in rows],
            "series": [{"label": "delta", "values": [r["delta"] for r in rows],
                        "ci_low": [r["ci_low"] for r in rows], "ci_high": [r["ci_high"] for r in rows]}]}


def comparison_sections(c: Comparison, thumbnails: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Section]:
    """The comparison as report sections (gate, per class, per slice, flips), for the HTML page."""
    findings = [Finding(severity=_SEVERITY[r.status], message=f"{r.rule}: {r.status.upper()} — {r.message}",
                        evidence="gate.tables.rules") for r in c.rules]
    rules = [{"rule": r.rule, "status": r.status, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high,
              "limit": r.limit, "group": r.group, "n_needed": r.n_needed, "n_needed_unit": r.n_needed_unit}
             for r in c.rules]
    counts = {s: sum(r.status == s for r in c.rules) for s in ("pass", "fail", "inconclusive", "skipped")}
    sections = {"gate": Section(
        name="gate", title="Regression gate", verdict=_VERDICT[c.verdict],
        summary=(f"baseline {c.baseline.model_path} ({c.baseline.model_sha256[:12]}) vs candidate "
                 f"{c.candidate.model_path} ({c.candidate.model_sha256[:12]}): "
                 + ", ".join(f"{v} {k}" for k, v in counts.items() if v)),
        metrics=dict(c.metrics), findings=findings, tables={"rules": rules},
        config={"policy": c.policy, "notes": c.notes,
                "key_metrics": ["accuracy_delta", "negative_flip_rate", "ece_delta"]})}
    per_class = [dict(r.items()) for r in c.per_class]
    sections["per_class"] = Section(
        name="per_class", title="Per-class accuracy deltas", verdict="info",
        summary=(f"{sum(r['significant_drop'] for r in per_class)} class(es) with a significant drop after correction"
                 + "".join(f"; {k} {status}" for status in ("fail", "inconclusive", "pass", "untested")
                           if (k := sum(r.get("status") == status for r in per_class)))
                 + ". Exact intervals from each class's discordant counts; a class with no right → wrong flip "
                   "passes on that alone."),
        tables={"classes": per_class}, plots={"delta": _group_plot(per_class, "Accuracy delta per class (CI; "
                                                                   "hatched: too few samples to test)")})
    if c.per_slice:
        sections["per_slice"] = Section(
            name="per_slice", title="Per-slice accuracy deltas", verdict="info",
            summary=", ".join(f"{col}: {len(rows)} slices" for col, rows in c.per_slice.items()),
            tables=dict(c.per_slice),
            plots={f"delta[{col}]": _group_plot(rows, f"Accuracy delta by {col}") for col, rows in c.per_slice.items()})
    plots = {}
    for kind, rows in (thumbnails or {}).items():
        if rows:
            plots[kind] = {"kind": "images", "title": f"{kind.capitalize()} flips (label / baseline → candidate)",
                           "rows": rows}
    sections["flips"] = Section(
        name="flips", title="Flipped examples", verdict="info",
        summary=(f"negative flips (right → wrong): {len(c.flips['negative'])} listed; positive flips (wrong → right): "
                 f"{len(c.flips['positive'])} listed; most confident first"),
        tables={"negative": c.flips["negative"], "positive": c.flips["positive"]}, plots=plots)
    return sections


def render_comparison_html(c: Comparison, candidate: Evidence,
                           thumbnails: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """comparison.html: the report page (header from the candidate bundle) with the comparison sections."""
    from assay.report.html import render_html

    page = candidate.model_copy(update={"sections": comparison_sections(c, thumbnails)})
    text = _EXIT_MEANING[c.verdict].replace("`", "")
    return render_html(page, title="Assay comparison", verdict_text=text)


# ------------------------------------------------------------------------------------------- select

_LEADERBOARD = ("accuracy", "worst_class_accuracy", "worst_slice_accuracy", "ece", "robust_accuracy",
                "mean_corruption_accuracy", "latency_p95_ms", "model_size_mb")


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def render_selection_markdown(selection: Any) -> str:
    """Leaderboard and pick as Markdown."""
    cols = [c for c in _LEADERBOARD if any(r.get(c) is not None for r in selection.rows)]
    lines = [f"## Assay selection: {selection.pick or 'no model meets the constraints'}", "",
             f"Objective: **{selection.objective}**; constraints: "
             f"{', '.join(f'`{c}`' for c in selection.constraints) or 'none'}.", "",
             "| model | " + " | ".join(cols) + " | feasible | Pareto |", "|---" * (len(cols) + 3) + "|"]
    for r in selection.rows:
        mark = "✅" if r["feasible"] else "❌ " + ", ".join(r["violations"])
        lines.append(f"| {_cell(r['model'])}{' **(pick)**' if r['model'] == selection.pick else ''} | "
                     + " | ".join(_fmt(r.get(c)) for c in cols) + f" | {mark} | {'★' if r['pareto'] else ''} |")
    lines += ["", *[f"- {_cell(reason)}" for reason in selection.reasons], ""]
    return "\n".join(lines)


def selection_sections(selection: Any) -> dict[str, Section]:
    """Leaderboard (table, Pareto scatter) and the pick as report sections; the pick is marked in both."""
    plots = {}
    if selection.cost_metric is not None:
        rows = selection.rows
        plots["pareto"] = {
            "kind": "scatter", "title": f"Accuracy vs {selection.cost_metric} (Pareto front highlighted)",
            "xlabel": selection.cost_metric, "ylabel": "accuracy", "front": list(selection.front),
            "series": [{"label": "models", "x": [r[selection.cost_metric] for r in rows],
                        "y": [r["accuracy"] if r["accuracy"] is not None else float("nan") for r in rows],
                        "text": [f"pick: {r['model']}" if r["model"] == selection.pick else r["model"]
                                 for r in rows]}]}
    table = [{"model": r["model"], "picked": r["model"] == selection.pick,
              **{k: v for k, v in r.items() if k not in ("sha256", "model")}} for r in selection.rows]
    findings = [Finding(severity="info", message=reason, evidence="selection.tables.leaderboard")
                for reason in selection.reasons]
    return {"selection": Section(
        name="selection", title="Model selection", verdict="pass" if selection.pick else "fail",
        summary=(f"pick: {selection.pick}" if selection.pick else "no model meets the constraints")
                + f"; objective {selection.objective}; constraints: {', '.join(selection.constraints) or 'none'}",
        findings=findings, tables={"leaderboard": table}, plots=plots,
        config={"objective": selection.objective, "constraints": selection.constraints,
                "cost_metric": selection.cost_metric})}


def _selection_header(selection: Any, evidence: Mapping[str, Evidence]) -> Evidence:
    """The evidence that heads the page: the picked model's. With no pick, the data and input (shared by all
    the models) with, in the model's place, the statement that no model was picked."""
    if selection.pick is not None and selection.pick in evidence:
        return evidence[selection.pick]
    first = next(iter(evidence.values()))
    nobody = first.model.model_copy(update={"path": "no model picked: none meets every constraint", "weights": None,
                                            "format": "\u2014", "sha256": ""})
    return first.model_copy(update={"model": nobody})


def render_selection_html(selection: Any, evidence: Mapping[str, Evidence] | Evidence) -> str:
    """selection.html: headed by the picked model (``evidence``: each model's evidence by its leaderboard
    name), or by "no model picked" when none meets the constraints; the leaderboard and Pareto sections."""
    from assay.report.html import render_html

    by_name = {selection.pick or "": evidence} if isinstance(evidence, Evidence) else dict(evidence)
    page = _selection_header(selection, by_name).model_copy(update={"sections": selection_sections(selection)})
    text = f"Pick: {selection.pick}. " if selection.pick else "No model picked: "
    text += "; ".join(selection.reasons) + "."
    return render_html(page, title="Assay selection", verdict_text=text)
