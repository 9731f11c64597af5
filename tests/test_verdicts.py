"""Verdicts say why: every non-pass section verdict names the finding(s) that caused it in the HTML,
Markdown and console reports; the banner's wording follows the worst severity present (never "no problem"
next to a warning); sections that name lead tables show them first and fold their full metric list.

The evidence is built by hand, so every expected sentence below is known independently of the renderers.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from assay.evidence.bundle import read_evidence
from assay.evidence.schema import DataInfo, EnvironmentInfo, Evidence, Finding, Metric, ModelInfo, Section
from assay.report import print_console, render_html, render_markdown
from assay.report.verdicts import verdict_headline

CAUSE = "slice ink=light: accuracy 0.712 vs 0.951 elsewhere"
CAVEAT = "the images are 8x8 px, far below the 32x32 px the corruption table was made for"


def _metric(value: float, lo: float | None = None, hi: float | None = None) -> Metric:
    return Metric(value=value, ci_low=lo, ci_high=hi, n=200, method="bootstrap percentile, 95% (B=200, seed=0)")


def _evidence(*sections: Section, findings: list[Finding] | None = None) -> Evidence:
    return Evidence(
        created_at="2025-01-01T00:00:00Z",
        model=ModelInfo(path="/m/net.onnx", format="onnx", sha256="ab" * 32, input_shape=[None, 4],
                        input_dtype="float32", num_classes=2, class_names=["a", "b"]),
        data=DataInfo(name="test", source="/d/test.npz", modality="tabular", fingerprint="cd" * 32, n=200,
                      num_classes=2, class_names=["a", "b"], input_shape=[4]),
        environment=EnvironmentInfo(assay="0.1.0", python="3.11", platform="Linux", numpy="2.1"),
        seed=0, config={}, sections={s.name: s for s in sections}, findings=findings or [])


def _passing(name: str = "performance", title: str = "Performance", findings: list[Finding] | None = None) -> Section:
    return Section(name=name, title=title, verdict="pass", summary=f"{title} summary.",
                   metrics={"accuracy": _metric(0.95, 0.93, 0.97)}, findings=findings or [])


def _warning_slices() -> Section:
    return Section(
        name="slices", title="Slices", verdict="warn", summary="3 slices over ink; 1 flagged.",
        metrics={"worst_slice_gap[ink]": _metric(0.24, 0.15, 0.33)},
        findings=[Finding(severity="info", message="ink: 1 slice below 30 samples is reported as insufficient"),
                  Finding(severity="warning", message=CAUSE, evidence="slices.metrics.worst_slice_gap[ink]")])


def _console_text(evidence: Evidence) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    print_console(evidence, console)
    return console.export_text()


def _html_section(html: str, name: str) -> str:
    start = html.index(f'<section class="check" id="s-{name}">')
    return html[start:html.index("</section>", start)]


# ------------------------------------------------------------------------------------------- schema


def test_marked_findings_are_the_cause_even_next_to_other_warnings():
    marked = Finding(severity="warning", message="MSP AUROC 0.61 < 0.8", sets_verdict=True)
    caveat = Finding(severity="warning", message="fitted on half of the evaluation set")
    section = Section(name="ood", title="OOD", verdict="warn", findings=[caveat, marked])
    assert section.verdict_reasons() == [marked]


def test_unmarked_reasons_fall_back_to_severity_then_to_the_summary():
    critical = Finding(severity="critical", message="accuracy at chance")
    warning = Finding(severity="warning", message="class 3 weaker")
    info = Finding(severity="info", message="worst class 3")
    assert Section(name="p", title="P", verdict="fail", findings=[warning, critical, info]).verdict_reasons() == [
        critical]
    # A fail without any critical finding: the warnings are the best stated cause.
    assert Section(name="p", title="P", verdict="fail", findings=[info, warning]).verdict_reasons() == [warning]
    # A check that stated its cause only in the summary (fairness: "largest demographic parity difference ...").
    (synthetic,) = Section(name="fairness", title="Fairness", verdict="warn", summary="Largest DPD 0.150 over sex.",
                           findings=[info]).verdict_reasons()
    assert synthetic.severity == "warning" and synthetic.message == "Largest DPD 0.150 over sex."
    assert synthetic.evidence == "fairness"
    # An info finding marked as the cause of a warn is not a cause (a warn verdict needs a warning).
    odd = Finding(severity="info", message="marked info", sets_verdict=True)
    assert Section(name="p", title="P", verdict="warn", findings=[odd, warning]).verdict_reasons() == [warning]
    for verdict in ("pass", "info"):
        assert Section(name="p", title="P", verdict=verdict, findings=[critical, warning]).verdict_reasons() == []


def test_bundles_written_before_verdict_causes_still_load(tmp_path):
    """An evidence.json of schema 1.1 (no ``sets_verdict``, no ``lead_tables``) reads and renders."""
    raw = json.loads(_evidence(_warning_slices()).model_dump_json())
    raw["schema_version"] = "1.1"
    for section in raw["sections"].values():
        del section["lead_tables"]
        for finding in section["findings"]:
            del finding["sets_verdict"]
    (tmp_path / "evidence.json").write_text(json.dumps(raw))
    old = read_evidence(tmp_path / "evidence.json")
    assert old.schema_version == "1.1" and old.sections["slices"].lead_tables == []
    assert [f.message for f in old.sections["slices"].verdict_reasons()] == [CAUSE]
    assert f"**Why WARN:** {CAUSE}" in render_markdown(old).replace("\\", "")


# ------------------------------------------------------------------------------------- section causes


def test_html_names_the_cause_under_the_section_heading():
    html = render_html(_evidence(_passing(), _warning_slices()))
    section = _html_section(html, "slices")
    heading, why, summary = (section.index('<span class="badge v-warn">WARN</span>'),
                             section.index('<span class="sev">why warn</span>'), section.index("3 slices over ink"))
    assert heading < why < summary  # under the badge, before the summary
    assert section[why:summary].count(CAUSE) == 1
    assert section.count(CAUSE) == 1  # not repeated in the findings list below
    assert 'href="#s-slices.metrics.worst_slice_gap-ink"' in section[why:summary]  # links to the metric
    assert "insufficient" in section[summary:]  # the other findings stay in the list
    assert "why" not in _html_section(html, "performance")  # a pass needs no cause


def test_markdown_names_the_cause_after_the_heading():
    md = render_markdown(_evidence(_passing(), _warning_slices()))
    lines = md.splitlines()
    heading = lines.index("### \u26a0\ufe0f Slices: WARN")
    assert lines[heading + 2] == ("**Why WARN:** slice ink=light: accuracy 0.712 vs 0.951 elsewhere "
                                  "(`slices.metrics.worst_slice_gap[ink]`)")
    performance = lines.index("### \u2705 Performance: PASS")
    assert not lines[performance + 2].startswith("**Why")


def test_console_has_a_why_line_per_non_pass_section():
    calibration = Section(name="calibration", title="Calibration", verdict="fail", summary="Overconfident.",
                          findings=[Finding(severity="critical", message="ECE 0.21 above 0.15",
                                            evidence="calibration.metrics.ece", sets_verdict=True)])
    text = _console_text(_evidence(_passing(), _warning_slices(), calibration))
    why = text.index("\nWhy\n")
    fail_line = next(line for line in text[why:].splitlines() if "ECE 0.21 above 0.15" in line)
    warn_line = next(line for line in text[why:].splitlines() if CAUSE in line)
    assert re.match(r"\s+FAIL\s+Calibration: ECE 0\.21 above 0\.15\s+\(calibration\.metrics\.ece\)", fail_line)
    assert re.match(r"\s+WARN\s+Slices: slice ink=light", warn_line)
    assert text.index(fail_line) < text.index(warn_line)  # the failed section first
    assert text[why:].count(CAUSE) == 1  # not listed again under other findings (the banner names it once)
    assert "insufficient" not in text  # info findings stay off the terminal


def test_a_verdict_stated_only_in_the_summary_still_shows_its_cause():
    fairness = Section(name="fairness", title="Fairness", verdict="warn",
                       summary="Largest demographic parity difference 0.150 over sex.",
                       findings=[Finding(severity="info", message="fairlearn definitions")])
    evidence = _evidence(fairness)
    assert "Largest demographic parity difference 0.150 over sex. (`fairness`)" in render_markdown(evidence)
    section = _html_section(render_html(evidence), "fairness")
    assert section.index("why warn") < section.index("Largest demographic parity difference")
    assert re.search(r"WARN\s+Fairness: Largest demographic parity difference 0\.150", _console_text(evidence))


def test_info_sections_say_what_info_means():
    efficiency = Section(name="efficiency", title="Efficiency", verdict="info", summary="p50 0.05 ms.")
    evidence = _evidence(efficiency)
    assert "this check has no pass/warn/fail rule" in _html_section(render_html(evidence), "efficiency")
    assert "_reported for reference: this check has no pass/warn/fail rule._" in render_markdown(evidence)


# -------------------------------------------------------------------------------------------- banner


def test_a_pass_with_warnings_never_reads_as_no_problem():
    corruption = _passing("corruption", "Corruption robustness",
                          findings=[Finding(severity="warning", message=CAVEAT, evidence="corruption.config"),
                                    Finding(severity="info", message="13% relative drop (warn above 20%)")])
    evidence = _evidence(_passing(), corruption)
    assert evidence.verdict == "pass"
    expected = ("Every check passed its rule, but 1 warning needs reading: Corruption robustness \u2014 the images "
                "are 8x8 px, far below the 32x32 px the corruption table was made for.")
    assert verdict_headline(evidence) == expected
    html = render_html(evidence)
    banner = html[html.index('id="verdict"'):html.index('<div class="facts">')]
    assert expected in banner and "No check found a problem" not in html
    assert 'href="#s-corruption"' in banner and CAVEAT in banner  # named, with a link to its section
    md = render_markdown(evidence)
    assert md.splitlines()[2] == expected  # the paragraph after the verdict heading
    text = _console_text(evidence)
    assert expected in " ".join(text.split()) and "No check found a problem" not in text
    assert re.search(r"warning\s+Corruption robustness: the images are 8x8 px", text)


def test_the_banner_follows_the_worst_severity_present():
    clean = _evidence(_passing())
    assert verdict_headline(clean) == "No check found a problem."
    assert "No check found a problem." in render_html(clean) and "No check found a problem." in render_markdown(clean)
    warned = _evidence(_passing(), _warning_slices(), findings=[
        Finding(severity="warning", message="images outside [0, 1] were given to the model unchanged")])
    assert warned.verdict == "warn"
    assert verdict_headline(warned) == (
        "2 warnings to read before shipping: this run \u2014 images outside [0, 1] were given to the model "
        "unchanged; Slices \u2014 slice ink=light: accuracy 0.712 vs 0.951 elsewhere.")
    many = _evidence(*[Section(name=f"s{i}", title=f"Check {i}", verdict="warn", findings=[
        Finding(severity="warning", message=f"problem {i}.{j}") for j in range(2)]) for i in range(2)])
    assert verdict_headline(many) == "4 warnings to read before shipping: Check 0 (2), Check 1 (2)."
    failed = _evidence(_warning_slices(), Section(
        name="calibration", title="Calibration", verdict="fail",
        findings=[Finding(severity="critical", message="ECE 0.21 above 0.15")]))
    assert verdict_headline(failed) == ("1 check failed: Calibration \u2014 ECE 0.21 above 0.15; also 1 warning: "
                                        "Slices \u2014 slice ink=light: accuracy 0.712 vs 0.951 elsewhere.")
    info = _evidence(Section(name="efficiency", title="Efficiency", verdict="info"))
    assert verdict_headline(info) == "Informational only: no check passed judgement."


def test_pages_with_their_own_banner_text_keep_it():
    html = render_html(_evidence(_warning_slices()), title="Assay comparison", verdict_text="Every gate rule passed.")
    banner = html[html.index('id="verdict"'):html.index('<div class="facts">')]
    assert "Every gate rule passed." in banner and CAUSE not in banner


# --------------------------------------------------------------------------------------- lead tables


def _lead_section() -> Section:
    rows = {f"detectors[{name}]": [{"detector": d, "auroc": a, "auroc_ci_low": a - 0.01, "auroc_ci_high": a + 0.01}
                                   for d, a in (("msp", 0.9123), ("energy", 0.9456))]
            for name in ("noise", "blobs")}
    metrics = {f"auroc[{d},{s}]": _metric(0.9) for d in ("msp", "energy") for s in ("noise", "blobs")}
    metrics |= {f"aupr_in[{d},{s}]": _metric(0.8) for d in ("msp", "energy") for s in ("noise", "blobs")}
    return Section(name="ood", title="OOD", verdict="pass", summary="2 detectors x 2 sets.", metrics=metrics,
                   tables={**rows, "detectors": [{"detector": "msp", "ood_set": "noise", "aupr_in": 0.8}]},
                   plots={"roc": {"kind": "line", "title": "ROC", "series": [{"label": "a", "x": [0, 1],
                                                                              "y": [0, 1]}]}},
                   lead_tables=["detectors[noise]", "detectors[blobs]"])


def test_html_leads_with_the_named_tables_and_folds_the_metric_list():
    section = _html_section(render_html(_evidence(_lead_section())), "ood")
    noise, blobs = (section.index(f'id="s-ood.tables.detectors-{name}"') for name in ("noise", "blobs"))
    plots, fold = section.index("<h4>Plots</h4>"), section.index('<details class="block" id="s-ood-all">')
    assert noise < blobs < plots < fold
    assert "All 8 metrics and 1 full table (also in evidence.json)" in section
    assert section.index('<table class="metrics">') > fold  # the metric list is inside the fold
    assert section.index('id="s-ood.tables.detectors"') > fold
    assert "0.9123<span class=\"ci\">[0.9023, 0.9223]</span>" in section[noise:blobs]  # value with its CI
    for name in ("auroc[msp,noise]", "aupr_in[energy,blobs]"):  # nothing is lost, only folded
        assert f"<code>{name}</code>" in section[fold:]


def test_markdown_shows_the_lead_tables_instead_of_the_metric_list():
    md = render_markdown(_evidence(_lead_section()))
    assert "| detector | auroc |" in md and "| msp | 0.9123 [0.9023, 0.9223] |" in md
    assert "| energy | 0.9456 [0.9356, 0.9556] |" in md
    assert md.count("| detector | auroc |") == 2  # one table per lead table, not the full detectors table
    assert "All 8 metrics are in evidence.json and the HTML report." in md
    assert "| metric | value | CI | n |" not in md


def test_sections_without_lead_tables_render_as_before():
    section = _html_section(render_html(_evidence(_warning_slices())), "slices")
    assert 'id="s-slices-all"' not in section and '<table class="metrics">' in section


@pytest.mark.parametrize("verdict", ["warn", "fail"])
def test_every_non_pass_verdict_names_a_cause_in_all_three_reports(verdict):
    section = Section(name="x", title="Some check", verdict=verdict, summary="stated in the summary only")
    evidence = _evidence(section)
    assert f"why {verdict}" in _html_section(render_html(evidence), "x")
    assert f"**Why {verdict.upper()}:** stated in the summary only" in render_markdown(evidence)
    assert re.search(rf"{verdict.upper()}\s+Some check: stated in the summary only", _console_text(evidence))


def test_a_lead_table_column_keeps_one_notation():
    """An AUROC near 0 next to one near 1 (a more-confident OOD set): no scientific notation in the column."""
    rows = [{"detector": "msp", "auroc": 0.2033, "auroc_ci_low": 0.1713, "auroc_ci_high": 0.2392},
            {"detector": "max_logit", "auroc": 0.000317, "auroc_ci_low": 0.0000167, "auroc_ci_high": 0.000837}]
    section = Section(name="ood", title="OOD", verdict="pass", tables={"detectors[x]": rows},
                      lead_tables=["detectors[x]"])
    md = render_markdown(_evidence(section))
    assert "| msp | 0.2033 [0.1713, 0.2392] |" in md
    assert "| max\\_logit | 0.000317 [0.000017, 0.000837] |" in md
    html = _html_section(render_html(_evidence(section)), "ood")
    assert '0.000317<span class="ci">[0.000017, 0.000837]</span>' in html and "e-0" not in html
