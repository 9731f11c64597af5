"""Report renderers: HTML (self-contained, escaped, one SVG per plot), Markdown, console, plots.

The evidence is built by hand, so every expected string below is known independently of the renderers.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import markupsafe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from assay.evidence.schema import DataInfo, EnvironmentInfo, Evidence, Finding, Metric, ModelInfo, Section
from assay.report import (
    PLOT_KINDS,
    PlotDataError,
    UnsupportedPlotError,
    format_metric,
    format_number,
    print_console,
    render_html,
    render_markdown,
    render_plot,
    write_html,
    write_markdown,
)

SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'
XLINK_NS = 'xmlns:xlink="http://www.w3.org/1999/xlink"'
EVIL = "<b>cat</b>"
CLASSES = [EVIL, "dog", "bird"]


def _metric(value, lo=None, hi=None, n=300, **config):
    method = "bootstrap percentile, 95% (B=1000, seed=0)" if lo is not None else "point estimate (no interval)"
    return Metric(value=value, ci_low=lo, ci_high=hi, n=n, method=method, config=config)


def _bins(shift: float) -> list[dict]:
    bins = []
    for i in range(10):
        lower, upper = i / 10, (i + 1) / 10
        count = 0 if i < 3 else 10 * i
        conf = (lower + upper) / 2 if count else None
        bins.append({"lower": lower, "upper": upper, "count": count, "mean_confidence": conf,
                     "accuracy": max(conf - shift, 0.0) if count else None})
    return bins


BARS_PLOT = {
    "kind": "bars", "title": "Accuracy per corruption", "categories": ["blur", "noise", EVIL, "fog"],
    "series": [
        {"label": "severity 1", "values": [0.9, 0.8, 0.7, 0.6], "ci_low": [0.85, 0.75, 0.65, 0.55],
         "ci_high": [0.95, 0.85, 0.75, 0.65]},
        {"label": "severity 5", "values": [0.5, 0.4, 0.3, 0.2]},
    ],
    "ylabel": "accuracy",
}


def make_evidence() -> Evidence:
    performance = Section(
        name="performance", title="Performance", verdict="warn",
        summary="Accuracy 0.9123 on 300 samples.",
        metrics={
            "accuracy": _metric(0.9123, 0.9012, 0.9234, definition="fraction correct"),
            "macro_f1": _metric(0.8765, 0.8601, 0.8899),
            "nll": _metric(0.3141, 0.2718, 0.3535, lower_is_better=True),
        },
        findings=[
            Finding(severity="info", message="worst class by recall: bird", evidence="performance.tables.per_class"),
            Finding(severity="warning", message=f"class {EVIL} is significantly weaker",
                    evidence="performance.tables.per_class"),
        ],
        tables={"per_class": [
            {"class": name, "support": 100, "recall": r, "recall_ci_low": r - 0.05, "recall_ci_high": r + 0.05}
            for name, r in zip(CLASSES, [0.61, 0.95, 0.99], strict=True)
        ] + [{"class": f"extra{i}", "support": 1, "recall": 0.5, "recall_ci_low": 0.0, "recall_ci_high": 1.0}
             for i in range(30)]},
        plots={"confusion_matrix": {
            "kind": "heatmap", "title": "Confusion matrix", "rows": CLASSES, "cols": CLASSES,
            "values": [[61, 30, 9], [3, 95, 2], [0, 1, 99]], "xlabel": "predicted", "ylabel": "label",
            "normalize": "row"}},
        config={"n_bootstrap": 1000},
    )
    calibration = Section(
        name="calibration", title="Calibration", verdict="fail",
        summary="Overconfident.",
        metrics={"ece": _metric(0.0712, 0.0601, 0.0823, bins=15, norm="l1")},
        findings=[Finding(severity="critical", message="ECE above 0.05", evidence="calibration.metrics.ece")],
        plots={
            "reliability": {"kind": "reliability", "title": "Reliability diagram", "series": [
                {"label": "uncalibrated", "bins": _bins(0.1)}, {"label": "temperature-scaled", "bins": _bins(0.01)}]},
            "confidence": {"kind": "histogram", "title": "Confidence histogram", "edges": [0, 0.25, 0.5, 0.75, 1.0],
                           "series": [{"label": "correct", "counts": [1, 5, 20, 200]},
                                      {"label": "wrong", "counts": [3, 9, 12, 50]}],
                           "xlabel": "confidence", "ylabel": "count"},
        },
    )
    robustness = Section(
        name="robustness", title="Robustness", verdict="pass",
        metrics={"mean_corruption_accuracy": _metric(0.55, 0.52, 0.58), "params": _metric(1234567, n=1)},
        plots={
            "severity": {"kind": "line", "title": "Accuracy vs severity", "xlabel": "severity", "ylabel": "accuracy",
                         "series": [{"label": "mean", "x": [1, 2, 3, 4, 5], "y": [0.8, 0.7, 0.6, 0.5, 0.4],
                                     "y_low": [0.75, 0.65, 0.55, 0.45, 0.35],
                                     "y_high": [0.85, 0.75, 0.65, 0.55, 0.45]}]},
            "per_corruption": BARS_PLOT,
        },
    )
    future = Section(
        name="future", title="Future check", verdict="info", summary="A plot kind this version cannot draw.",
        plots={"hologram": {"kind": "hologram", "title": "From the future", "voxels": [1, 2, 3]}},
    )
    return Evidence(
        created_at="2025-01-01T00:00:00Z",
        model=ModelInfo(path="/models/net.onnx", format="onnx", sha256="ab" * 32, input_shape=[None, 3, 32, 32],
                        input_dtype="float32", num_classes=3, class_names=CLASSES),
        data=DataInfo(name="demo-test", source="/data/test.npz", modality="image", fingerprint="cd" * 32, n=300,
                      num_classes=3, class_names=CLASSES, input_shape=[3, 32, 32]),
        environment=EnvironmentInfo(assay="0.1.0", python="3.11.9", platform="Linux-x86_64", numpy="2.1.0"),
        seed=0, config={"n_bootstrap": 1000, "note": EVIL}, timings={"inference": 1.25, "checks": 0.5},
        sections={"performance": performance, "calibration": calibration, "robustness": robustness, "future": future},
    )


N_DRAWABLE_PLOTS = 5  # heatmap, reliability, histogram, line, bars; "hologram" is skipped


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    return make_evidence()


@pytest.fixture(scope="module")
def html(evidence: Evidence) -> str:
    return render_html(evidence)


# ------------------------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.91234, "0.9123"), (None, "\u2014"), (float("nan"), "\u2014"), (12, "12"), (0, "0"), (0.0, "0.0000"),
     (3e-7, "3.000e-07"), (2.5e7, "25000000"), (1234567.0, "1234567"), (1234567.89, "1234568"),
     (1500.25, "1500.2500"), (2e16, "2.000e+16"), (True, "yes"), (float("inf"), "\u221e")],
)
def test_format_number(value, expected):
    assert format_number(value) == expected


def test_format_metric_with_and_without_interval():
    assert format_metric(_metric(0.9123, 0.9012, 0.9234)) == "0.9123 [0.9012, 0.9234]"
    assert format_metric(_metric(0.5)) == "0.5000"
    assert format_metric(_metric(None, 0.1, None)) == "\u2014 [0.1000, \u2014]"
    assert format_metric(_metric(12.0, 9.0, 15.0)) == "12 [9, 15]"  # counts stay integers
    assert format_metric(_metric(1.0, 1.0, 1.0)) == "1.0000 [1.0000, 1.0000]"  # a perfect score is not a count
    assert format_metric(_metric(0.0037, 0.00054, 0.0135)) == "0.0037 [0.0005, 0.0135]"  # one notation
    assert format_metric(_metric(2e-5, 1e-5, 4e-5)) == "2.000e-05 [1.000e-05, 4.000e-05]"


# ------------------------------------------------------------------------------------------------ HTML


def test_html_shows_every_section_metric_and_the_verdict(html: str, evidence: Evidence):
    assert evidence.verdict == "fail"
    assert 'class="banner v-fail"' in html and ">FAIL<" in html
    for section in evidence.sections.values():
        assert section.title in html
        assert f'id="s-{section.name}"' in html and f'href="#s-{section.name}"' in html  # navigation
        assert f">{section.verdict.upper()}<" in html
    metric_cells = {  # metric id -> (value, interval), written out by hand
        "performance.metrics.accuracy": ("0.9123", "[0.9012, 0.9234]"),
        "performance.metrics.macro_f1": ("0.8765", "[0.8601, 0.8899]"),
        "performance.metrics.nll": ("0.3141", "[0.2718, 0.3535]"),
        "calibration.metrics.ece": ("0.0712", "[0.0601, 0.0823]"),
        "robustness.metrics.mean_corruption_accuracy": ("0.5500", "[0.5200, 0.5800]"),
        "robustness.metrics.params": ("1234567", "\u2014"),  # integral: printed as an integer, no interval
    }
    for metric_id, (value, ci) in metric_cells.items():
        row = html[html.index(f'<tr id="s-{metric_id}">'):]
        row = row[:row.index("</tr>")]
        assert f"<strong>{value}</strong>" in row and f'<td class="num ci">{ci}</td>' in row
    assert "ECE above 0.05" in html and "sev-critical" in html
    # Header: model format, short hashes, data size; headline metrics with CIs.
    assert "abababababab" in html and "cdcdcdcdcdcd" in html and "onnx" in html
    headline = html[html.index('<div class="headline">'):html.index('<nav class="sections"')]
    for text in ("Accuracy", "0.9123", "[0.9012, 0.9234]", "Macro-F1", "0.8765", "ECE", "0.0712", "[0.0601, 0.0823]"):
        assert text in headline


def test_html_has_one_svg_per_drawable_plot_and_a_note_for_unknown_kinds(html: str):
    assert html.count("<svg") == N_DRAWABLE_PLOTS
    assert html.count('<figure class="plot"') == N_DRAWABLE_PLOTS + 1
    assert "hologram" in html and "does not draw" in html


def test_html_is_self_contained(html: str):
    without_namespaces = html.replace(SVG_NS, "").replace(XLINK_NS, "")
    assert "http://" not in without_namespaces and "https://" not in without_namespaces
    assert html.count(SVG_NS) == N_DRAWABLE_PLOTS
    assert "<script" not in html.lower()
    assert "<link" not in html.lower() and "@import" not in html and "@font-face" not in html
    # Every reference stays inside the document (or is inline image data).
    for target in re.findall(r'(?:href|src)="([^"]*)"', html):
        assert target.startswith(("#", "data:image/png;base64,")), target
    for target in re.findall(r"url\(([^)]*)\)", html):
        assert target.startswith("#"), target


def test_html_ids_are_unique(html: str):
    ids = re.findall(r'\sid="([^"]+)"', html)
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates


def test_html_escapes_text_from_the_evidence(html: str):
    assert EVIL not in html
    assert "&lt;b&gt;cat&lt;/b&gt;" in html  # in the header, the table, the finding, the plots, the config


def test_html_long_tables_are_capped_behind_show_all(html: str):
    table = html[html.index('id="s-performance.tables.per_class"'):]
    table = table[:table.index("</details>")]
    visible, hidden = table.split("<details", 1)
    assert visible.count("<tr>") == 1 + 15  # header + HEAD_ROWS
    assert "Show all 33 rows" in hidden and hidden.count("<tr>") == 1 + 33 - 15
    # recall and its CI companions collapse into one cell
    assert "<th>recall_ci_low</th>" not in table
    assert "0.6100<span class=\"ci\">[0.5600, 0.6600]</span>" in table


def test_findings_link_to_what_they_point_at(html: str):
    assert 'href="#s-performance.tables.per_class"' in html and 'id="s-performance.tables.per_class"' in html
    assert 'href="#s-calibration.metrics.ece"' in html and 'id="s-calibration.metrics.ece"' in html


def test_html_size_is_small(html: str):
    assert len(html.encode()) < 1_000_000
    assert len(html.encode()) < 300_000  # the typical report is far below the limit


def test_html_survives_a_malformed_plot(evidence: Evidence):
    broken = evidence.model_copy(deep=True)
    broken.sections["future"].plots["broken"] = {"kind": "bars", "title": "x", "categories": ["a", "b"],
                                                 "series": [{"label": "s", "values": [1.0]}]}
    html = render_html(broken)
    assert "could not be drawn" in html and "PlotDataError" in html
    assert html.count("<svg") == N_DRAWABLE_PLOTS


def test_write_html_and_markdown(tmp_path, evidence: Evidence):
    html_path = write_html(evidence, tmp_path / "out" / "report.html")
    md_path = write_markdown(evidence, tmp_path / "out" / "report.md")
    assert html_path.read_text(encoding="utf-8") == render_html(evidence)
    assert md_path.read_text(encoding="utf-8") == render_markdown(evidence)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.md"]  # no temp files left


def test_html_without_sections(evidence: Evidence):
    empty = evidence.model_copy(update={"sections": {}})
    html = render_html(empty)
    assert "no check ran" in html and 'class="banner v-info"' in html and "<svg" not in html


# ----------------------------------------------------------------------------------------------- plots


def _svg_root(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_bars_plot_draws_one_rect_per_bar_and_error_bars():
    svg = render_plot(BARS_PLOT)
    _svg_root(svg)
    bars = re.findall(r'id="p[0-9a-f]+-bar-(\d+)-(\d+)"', svg)
    assert sorted(bars) == sorted((str(i), str(j)) for i in range(2) for j in range(4))
    # Only the first series has a CI: one error-bar segment per category.
    errorbars = re.search(r'id="p[0-9a-f]+-err-0">(.*?)</g>', svg)
    assert errorbars is not None and errorbars.group(1).count("<path") == 4
    assert "-err-1" not in svg
    assert svg.count("&lt;b&gt;cat&lt;/b&gt;") == 1 and EVIL not in svg
    assert not svg.startswith("<?xml") and "<metadata" not in svg and "DOCTYPE" not in svg
    assert "<text" in svg  # svg.fonttype = 'none': text is text, glyphs are not embedded
    assert "font-face" not in svg and "<glyph" not in svg


def test_bar_heights_follow_the_values():
    plot = {"kind": "bars", "categories": ["a", "b", "c"], "series": [{"label": "s", "values": [0.25, 0.5, 1.0]}]}
    svg = render_plot(plot)
    heights = []
    for j in range(3):
        path = re.search(rf'id="p[0-9a-f]+-bar-0-{j}"><path d="([^"]+)"', svg).group(1)
        ys = [float(v) for v in re.findall(r"[\d.]+ ([\d.]+)", path)]
        heights.append(max(ys) - min(ys))
    assert heights[1] == pytest.approx(2 * heights[0], rel=0.02)
    assert heights[2] == pytest.approx(4 * heights[0], rel=0.02)


def test_center_zero_bars_draw_negative_deltas_to_scale():
    plot = {"kind": "bars", "categories": ["a", "b"], "center_zero": True,
            "series": [{"label": "delta", "values": [-0.1, 0.05], "ci_low": [-0.12, 0.0], "ci_high": [-0.08, 0.1]}]}
    svg = render_plot(plot)
    heights = []
    for j in range(2):
        path = re.search(rf'id="p[0-9a-f]+-bar-0-{j}"><path d="([^"]+)"', svg).group(1)
        ys = [float(v) for v in re.findall(r"[\d.]+ ([\d.]+)", path)]
        heights.append(max(ys) - min(ys))
    assert heights[0] == pytest.approx(2 * heights[1], rel=0.03)  # |-0.1| is twice 0.05, both drawn from 0


def test_muted_bars_are_faint_and_hatched():
    plot = {"kind": "bars", "categories": ["a", "b", "c"], "muted": [False, True, False],
            "series": [{"label": "s", "values": [0.25, 0.5, 1.0]}]}
    svg = render_plot(plot)
    groups = {j: re.search(rf'id="p[0-9a-f]+-bar-0-{j}">(.*?)</g>', svg, re.S).group(1) for j in range(3)}
    assert "opacity: 0.35" in groups[1] and "opacity: 0.35" not in groups[0] + groups[2]
    assert svg.count("<pattern") == 1  # the hatch, used by the muted bar only
    with pytest.raises(PlotDataError, match="muted"):
        render_plot({**plot, "muted": [True]})


def test_reliability_draws_one_bar_per_non_empty_bin_per_series():
    plot = make_evidence().sections["calibration"].plots["reliability"]
    svg = render_plot(plot)
    _svg_root(svg)
    for series in range(2):
        assert len(re.findall(rf'id="p[0-9a-f]+-bar-{series}-\d+"', svg)) == 7  # bins 3..9 are non-empty
    assert "uncalibrated" in svg and "temperature-scaled" in svg


def test_heatmap_annotates_small_and_shrinks_large_matrices():
    small = render_plot(make_evidence().sections["performance"].plots["confusion_matrix"])
    cells = re.findall(r"<text[^>]*>(\d\.\d\d)</text>", small)
    assert cells == ["0.61", "0.30", "0.09", "0.03", "0.95", "0.02", "0.01", "0.99"]  # row-normalised; no zeros
    n = 100
    big = {"kind": "heatmap", "rows": [f"c{i}" for i in range(n)], "cols": [f"c{i}" for i in range(n)],
           "values": [[(50 if i == j else (i * j) % 3) for j in range(n)] for i in range(n)], "normalize": "row"}
    svg = render_plot(big)
    # The matrix is embedded at its own resolution (one pixel per cell, drawn crisp), without per-cell text.
    assert re.search(r'<image [^>]*id="p[0-9a-f]+-image" width="100" height="100"[^>]*pixelated', svg)
    assert ">0.50<" not in svg and len(svg) < 60_000
    n = 1000
    huge = {"kind": "heatmap", "rows": list(range(n)), "cols": list(range(n)),
            "values": [[1 if i == j else 0 for j in range(n)] for i in range(n)]}
    svg = render_plot(huge)
    assert "maximum over blocks of 5" in svg and len(svg) < 120_000
    assert re.search(r'<image [^>]*id="p[0-9a-f]+-image" width="200" height="200"', svg)


def test_line_histogram_scatter_draw_each_series():
    evidence = make_evidence()
    line = render_plot(evidence.sections["robustness"].plots["severity"])
    assert re.search(r'id="p[0-9a-f]+-series-0"', line) and re.search(r'id="p[0-9a-f]+-band-0"', line)
    hist = render_plot(evidence.sections["calibration"].plots["confidence"])
    assert len(re.findall(r'id="p[0-9a-f]+-series-\d"', hist)) == 2
    assert "count (log scale)" in hist and ">100<" in hist  # counts 1..200 span two decades: log axis
    assert "mathdefault" not in hist  # tick labels are plain text, not unparsed mathtext
    linear = render_plot({"kind": "histogram", "edges": [0, 1, 2], "series": [{"label": "a", "counts": [3, 4]}]})
    assert "log scale" not in linear
    scatter = render_plot({"kind": "scatter", "title": "Pareto", "xlabel": "latency", "ylabel": "accuracy",
                           "series": [{"label": "models", "x": [1, 2, 3], "y": [0.7, 0.9, 0.8],
                                       "text": ["small", "big", "mid"]}], "front": [0, 1]})
    assert re.search(r'id="p[0-9a-f]+-front"', scatter) and ">small<" in scatter and ">big<" in scatter
    for svg in (line, hist, scatter):
        _svg_root(svg)


def test_many_categories_become_a_profile():
    n = 500
    plot = {"kind": "bars", "categories": [f"class{i}" for i in range(n)],
            "series": [{"label": "recall", "values": [(i * 37 % n) / n for i in range(n)],
                        "ci_low": [0.0] * n, "ci_high": [1.0] * n}]}
    svg = render_plot(plot)
    assert "-bar-" not in svg and re.search(r'id="p[0-9a-f]+-series-0"', svg)
    assert "sorted by recall" in svg and len(svg) < 150_000


def test_plot_errors_are_typed():
    with pytest.raises(UnsupportedPlotError):
        render_plot({"kind": "hologram"})
    with pytest.raises(PlotDataError, match="edges"):
        render_plot({"kind": "histogram", "edges": [0, 1, 2], "series": [{"label": "a", "counts": [1, 2, 3]}]})
    with pytest.raises(PlotDataError, match="series"):
        render_plot({"kind": "line"})
    assert set(PLOT_KINDS) == {"reliability", "histogram", "bars", "heatmap", "line", "scatter", "images"}


def test_plot_text_is_never_mathtext():
    plot = {"kind": "bars", "categories": ["$5 bill", "$x^2$"], "series": [{"label": "s", "values": [1, 2]}]}
    svg = render_plot(plot)
    assert ">$5 bill<" in svg and ">$x^2$<" in svg


def test_plots_are_deterministic():
    assert render_plot(BARS_PLOT) == render_plot(BARS_PLOT)


# -------------------------------------------------------------------------------------------- Markdown


def test_markdown_has_verdict_metric_rows_and_findings(evidence: Evidence):
    md = render_markdown(evidence)
    assert md.startswith("## \u274c Assay verdict: **FAIL**")
    assert "| `accuracy` | 0.9123 | [0.9012, 0.9234] | 300 |" in md
    assert "| `ece` | 0.0712 | [0.0601, 0.0823] | 300 |" in md
    assert "| `nll` \u2193 | 0.3141 | [0.2718, 0.3535] | 300 |" in md
    assert "| `params` | 1234567 | \u2014 | 1 |" in md
    assert "- \u274c **critical**: ECE above 0.05 (`calibration.metrics.ece`)" in md
    assert "**warning**: class &lt;b&gt;cat&lt;/b&gt; is significantly weaker" in md
    assert "Accuracy **0.9123** [0.9012, 0.9234]" in md and "ECE **0.0712**" in md
    assert "<svg" not in md and EVIL not in md
    # Findings are listed most severe first within a section.
    perf = md[md.index("### \u26a0\ufe0f Performance"):md.index("### \u274c Calibration")]
    assert perf.index("**warning**") < perf.index("**info**")
    assert len(md) < 65_536  # fits a GitHub comment


def test_markdown_table_cells_cannot_be_broken():
    from assay.report.markdown import escape_markdown

    assert escape_markdown("a|b\nc *d*") == "a\\|b c \\*d\\*"


# --------------------------------------------------------------------------------------------- console


def test_console_lists_sections_verdicts_metrics_and_findings(evidence: Evidence):
    console = Console(record=True, width=120, file=io.StringIO())
    print_console(evidence, console)
    text = console.export_text()
    for word in ("FAIL", "WARN", "PASS", "INFO", "Performance", "Calibration", "Robustness", "Future check"):
        assert word in text
    for value in ("0.9123", "[0.9012, 0.9234]", "0.8765", "0.0712", "[0.0601, 0.0823]", "1234567"):
        assert value in text
    assert "ECE above 0.05" in text and f"class {EVIL} is significantly weaker" in text  # literal, not markup
    assert "worst class by recall" not in text  # info findings stay out of the terminal
    assert text.index("ECE above 0.05") < text.index("significantly weaker")  # critical first


# ------------------------------------------------------------------------------------------ properties


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=60))
def test_markdown_escaping_neutralises_any_text(text: str):
    from assay.report.markdown import escape_markdown

    out = escape_markdown(text)
    assert "<" not in out and ">" not in out and "\n" not in out and "\r" not in out
    assert re.search(r"(?<!\\)\|", out) is None  # every pipe escaped: a table cell cannot be split


@settings(max_examples=25, deadline=None)
@given(message=st.text(min_size=1, max_size=40), title=st.text(min_size=1, max_size=20))
def test_html_escapes_any_text(message: str, title: str):
    section = Section(name="x", title=title, verdict="warn", findings=[Finding(severity="warning", message=message)])
    evidence = make_evidence().model_copy(update={"sections": {"x": section}})
    html = render_html(evidence)
    assert str(markupsafe.escape(message)) in html  # markupsafe as the independent reference
    assert str(markupsafe.escape(title)) in html
    if "<" in message:
        assert message not in html


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats()), min_size=3, max_size=3))
def test_estimates_use_one_notation(values):
    from assay.report.formatting import format_estimate

    value, ci = format_estimate(*values)
    parts = [value] + ([p.strip() for p in ci.strip("[]").split(",")] if ci else [])
    notations = {("sci" if "e" in p else "fixed") for p in parts if p not in ("\u2014", "\u221e", "-\u221e")}
    assert len(notations) <= 1, (values, value, ci)


def test_images_kind_embeds_one_png_per_thumbnail():
    import base64

    import numpy as np

    from assay.report.thumbnails import png_thumbnail

    img = np.zeros((1, 8, 8), np.float32)
    img[0, 2:6, 2:6] = 1.0
    data = png_thumbnail(img, size=32)
    assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    plot = {"kind": "images", "title": "<b>t</b>", "columns": ["a", "b"],
            "rows": [{"label": "r1", "images": [data, data], "captions": ["x", "y"]},
                     {"label": "r2", "images": [data]}]}
    svg = render_plot(plot)
    assert svg.count("<image ") == 3 and svg.count("data:image/png;base64,") == 3
    assert "<b>" not in svg and "&lt;b&gt;" in svg
