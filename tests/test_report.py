"""Report renderers: HTML (self-contained, escaped, one SVG per plot), Markdown, console, plots.

The evidence is built by hand, so every expected string below is known independently of the renderers.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import markupsafe
import pytest
from hypothesis import assume, given, settings
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
     (1500.25, "1500"), (12.5511, "12.55"), (0.0787, "0.0787"), (3.64e-4, "0.000364"), (2e16, "2.000e+16"),
     (True, "yes"), (float("inf"), "\u221e"), (9.99996, "10.00"), (99.996, "100.0")],
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
# The SVG is parsed as XML (xml.etree is the independent check that it is well formed); geometry is read
# from the parsed elements, and expectations are worked out by hand from the plot data.

SVG = "{http://www.w3.org/2000/svg}"


def _svg_root(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def _by_id(root: ET.Element, suffix: str) -> ET.Element:
    """The element whose id is ``<content prefix>-<suffix>`` (exactly one)."""
    found = [e for e in root.iter() if re.fullmatch(rf"p[0-9a-f]{{10}}-{re.escape(suffix)}", e.get("id", ""))]
    assert len(found) == 1, (suffix, len(found))
    return found[0]


def _ids(root: ET.Element, pattern: str) -> list[str]:
    return [e.get("id") for e in root.iter() if re.fullmatch(rf"p[0-9a-f]{{10}}-{pattern}", e.get("id", ""))]


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def _box(rect: ET.Element) -> tuple[float, float, float, float]:
    return tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))  # type: ignore[return-value]


def _subpaths(d: str) -> int:
    return d.count("M")


def test_bars_plot_draws_one_rect_per_bar_error_bars_labels_and_legend():
    svg = render_plot(BARS_PLOT)
    root = _svg_root(svg)
    assert root.tag == f"{SVG}svg" and root.get("viewBox")
    bars = _ids(root, r"bar-\d+-\d+")
    assert sorted(bars, key=lambda i: i[-3:]) and len(bars) == 2 * 4
    assert all(_by_id(root, f"bar-{i}-{j}").tag == f"{SVG}rect" for i in range(2) for j in range(4))
    # Only the first series has a CI: one whisker per category, with two caps each (4 categories <= 30).
    whiskers, caps = _by_id(root, "err-0").findall(f"{SVG}path")
    assert _subpaths(whiskers.get("d")) == 4 and _subpaths(caps.get("d")) == 8
    assert not _ids(root, "err-1")
    texts = _texts(root)
    assert "Accuracy per corruption" in texts and "accuracy" in texts  # title, y label
    assert {"blur", "noise", EVIL, "fog"} <= set(texts)  # category ticks (the XML parser unescapes)
    assert {"severity 1", "severity 5"} <= set(texts)  # legend: two series
    assert svg.count("&lt;b&gt;cat&lt;/b&gt;") == 1 and EVIL not in svg
    assert not svg.startswith("<?xml") and "<metadata" not in svg and "DOCTYPE" not in svg
    assert "font-face" not in svg and "<glyph" not in svg and "<script" not in svg


def test_bar_heights_follow_the_values_and_share_the_zero_line():
    plot = {"kind": "bars", "categories": ["a", "b", "c"], "series": [{"label": "s", "values": [0.25, 0.5, 1.0]}]}
    root = _svg_root(render_plot(plot))
    boxes = [_box(_by_id(root, f"bar-0-{j}")) for j in range(3)]
    heights = [h for _, _, _, h in boxes]
    assert heights[1] == pytest.approx(2 * heights[0], abs=0.2)
    assert heights[2] == pytest.approx(4 * heights[0], abs=0.2)
    bottoms = {round(y + h, 1) for _, y, _, h in boxes}
    assert len(bottoms) == 1  # every bar stands on y = 0
    xs = [x for x, _, _, _ in boxes]
    assert xs == sorted(xs)  # categories left to right in order
    assert _texts(root).count("a") == 1 and "c" in _texts(root)


def test_center_zero_bars_draw_negative_deltas_to_scale():
    plot = {"kind": "bars", "categories": ["a", "b"], "center_zero": True,
            "series": [{"label": "delta", "values": [-0.1, 0.05], "ci_low": [-0.12, 0.0], "ci_high": [-0.08, 0.1]}]}
    root = _svg_root(render_plot(plot))
    (xa, ya, _, ha), (xb, yb, _, hb) = (_box(_by_id(root, f"bar-0-{j}")) for j in range(2))
    assert ha == pytest.approx(2 * hb, abs=0.2)  # |-0.1| is twice 0.05, both drawn from 0
    assert ya == pytest.approx(yb + hb, abs=0.15)  # the negative bar hangs from the zero line the other stands on
    texts = _texts(root)
    assert "0.0" in texts or "0.00" in texts
    assert any(t.startswith("\u2212") for t in texts)  # negative ticks: a symmetric axis, unicode minus


def test_muted_bars_are_faint_and_hatched():
    plot = {"kind": "bars", "categories": ["a", "b", "c"], "muted": [False, True, False],
            "series": [{"label": "s", "values": [0.25, 0.5, 1.0]}]}
    svg = render_plot(plot)
    root = _svg_root(svg)
    assert [_by_id(root, f"bar-0-{j}").get("opacity") for j in range(3)] == [None, "0.35", None]
    assert svg.count("<pattern") == 1  # the hatch, used by the muted bar only
    pattern_id = next(root.iter(f"{SVG}pattern")).get("id")
    hatched = [r for r in root.iter(f"{SVG}rect") if r.get("fill") == f"url(#{pattern_id})"]
    assert [_box(r) for r in hatched] == [_box(_by_id(root, "bar-0-1"))]
    with pytest.raises(PlotDataError, match="muted"):
        render_plot({**plot, "muted": [True]})
    assert "<pattern" not in render_plot({**plot, "muted": [False] * 3})


def test_reliability_draws_one_bar_per_non_empty_bin_per_series():
    plot = make_evidence().sections["calibration"].plots["reliability"]
    root = _svg_root(render_plot(plot))
    for series, shift in ((0, 0.1), (1, 0.01)):
        boxes = [_box(_by_id(root, f"bar-{series}-{j}")) for j in range(7)]  # bins 3..9 are non-empty
        assert not _ids(root, rf"bar-{series}-7")
        # heights are proportional to the accuracy of bins 3..9 (mean confidence - shift)
        accuracy = [(i / 10 + (i + 1) / 10) / 2 - shift for i in range(3, 10)]
        ratios = [h / a for (_, _, _, h), a in zip(boxes, accuracy, strict=True)]
        assert max(ratios) == pytest.approx(min(ratios), rel=0.01)
        widths = {round(w) for _, _, w, _ in boxes}
        assert len(widths) == 1  # equal-width bins
    texts = _texts(root)
    for text in ("uncalibrated", "temperature-scaled", "Reliability diagram", "accuracy", "confidence",
                 "perfect calibration", "gap to mean confidence"):
        assert text in texts, text
    assert "count" in texts and "count (log)" not in texts  # counts 30..90 span less than two decades
    skewed = {"kind": "reliability", "series": [{"label": "x", "bins": [
        {"lower": 0.0, "upper": 0.5, "count": 1, "mean_confidence": 0.4, "accuracy": 0.3},
        {"lower": 0.5, "upper": 1.0, "count": 500, "mean_confidence": 0.8, "accuracy": 0.9}]}]}
    texts = _texts(_svg_root(render_plot(skewed)))
    assert "count (log)" in texts and {"1", "10", "100"} <= set(texts)


def test_heatmap_annotates_small_matrices_in_blues():
    plot = make_evidence().sections["performance"].plots["confusion_matrix"]
    root = _svg_root(render_plot(plot))
    cells = re.findall(r"^\d\.\d\d$", "\n".join(_texts(root)), re.M)
    assert cells == ["0.61", "0.30", "0.09", "0.03", "0.95", "0.02", "0.01", "0.99"]  # row-normalised; no zeros
    rects = _by_id(root, "cells").findall(f"{SVG}rect")
    assert len(rects) == 9
    matplotlib = pytest.importorskip("matplotlib")  # the reference colour map (a test-only dependency)
    from matplotlib.colors import to_hex

    fractions = [[61, 30, 9], [3, 95, 2], [0, 1, 99]]
    expected = [to_hex(matplotlib.colormaps["Blues"](v / 100)) for row in fractions for v in row]
    got = [r.get("fill") for r in rects]
    for g, e in zip(got, expected, strict=True):  # matplotlib quantises the map to 256 levels: +-1 per channel
        assert max(abs(int(g[k:k + 2], 16) - int(e[k:k + 2], 16)) for k in (1, 3, 5)) <= 2, (g, e)
    assert {"predicted", "label", "fraction of row", "Confusion matrix"} <= set(_texts(root))


def test_heatmap_leaves_missing_cells_blank():
    plot = {"kind": "heatmap", "rows": ["a", "b"], "cols": ["x", "y"], "values": [[None, 3], [1, None]]}
    root = _svg_root(render_plot(plot))
    assert len(_by_id(root, "cells").findall(f"{SVG}rect")) == 2
    assert {"3", "1"} <= set(_texts(root))
    empty = {**plot, "values": [[None, None], [None, None]]}
    assert not _by_id(_svg_root(render_plot(empty)), "cells").findall(f"{SVG}rect")


def _png_pixels(uri: str):
    import base64

    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))  # PIL: an independent PNG decoder


def test_heatmap_embeds_one_pixel_per_cell_and_shrinks_huge_matrices():
    import numpy as np

    n = 100
    big = {"kind": "heatmap", "rows": [f"c{i}" for i in range(n)], "cols": [f"c{i}" for i in range(n)],
           "values": [[(50 if i == j else (i * j) % 3) for j in range(n)] for i in range(n)], "normalize": "row"}
    svg = render_plot(big)
    image = _by_id(_svg_root(svg), "image")
    assert "pixelated" in image.get("style")
    png = _png_pixels(image.get("href"))
    assert png.size == (100, 100)
    pixels = np.asarray(png.convert("RGB"), dtype=int)
    diagonal, off = pixels[5, 5].sum(), pixels[5, 7].sum()
    assert diagonal < off  # the heavy diagonal is darker
    assert ">0.50<" not in svg and len(svg) < 60_000
    n = 1000
    huge = {"kind": "heatmap", "rows": list(range(n)), "cols": list(range(n)),
            "values": [[1 if i == j else 0 for j in range(n)] for i in range(n)]}
    svg = render_plot(huge)
    assert "maximum over blocks of 5" in svg and len(svg) < 120_000
    assert _png_pixels(_by_id(_svg_root(svg), "image").get("href")).size == (200, 200)


def test_line_draws_series_markers_bands_and_log_axes():
    plot = make_evidence().sections["robustness"].plots["severity"]
    root = _svg_root(render_plot(plot))
    assert _subpaths(_by_id(root, "series-0").get("d")) == 1
    assert len(_by_id(root, "markers-0").findall(f"{SVG}circle")) == 5  # <= 25 points: one marker each
    band = _by_id(root, "band-0")
    assert band.get("d").endswith("Z")
    assert {"Accuracy vs severity", "severity", "accuracy"} <= set(_texts(root))
    # A NaN breaks the line in two; more than 25 points get no markers.
    x = list(range(30))
    broken = {"kind": "line", "series": [{"label": "s", "x": x, "y": [float(v) if v != 10 else None for v in x]}]}
    root = _svg_root(render_plot(broken))
    assert _subpaths(_by_id(root, "series-0").get("d")) == 2 and not _ids(root, "markers-0")
    # log x: decade labels, plain text (no mathtext)
    log = {"kind": "line", "xscale": "log", "series": [{"label": "s", "x": [1, 10, 100, 1000], "y": [1, 2, 3, 4]}]}
    texts = _texts(_svg_root(render_plot(log)))
    assert {"1", "10", "100", "1000"} <= set(texts)
    with pytest.raises(PlotDataError, match="xscale"):
        render_plot({**log, "xscale": "cubic"})


def test_histogram_switches_to_log_when_counts_span_two_decades():
    hist = make_evidence().sections["calibration"].plots["confidence"]
    root = _svg_root(render_plot(hist))
    assert len(_ids(root, r"series-\d")) == 2
    texts = _texts(root)
    assert "count (log scale)" in texts and "100" in texts  # counts 1..200 span two decades: log axis
    assert "mathdefault" not in render_plot(hist)  # tick labels are plain text
    linear = render_plot({"kind": "histogram", "edges": [0, 1, 2], "series": [{"label": "a", "counts": [3, 4]}]})
    assert "log scale" not in linear
    # the step outline goes through every bin edge at its count: 2 bins -> 2 flat tops
    d = _by_id(_svg_root(linear), "series-0").get("d")
    points = [tuple(map(float, p.split(","))) for p in re.split(r"[MLZ\s]", d) if p]
    tops = sorted({y for _, y in points})
    assert len(tops) == 3  # baseline and the two counts
    baseline, top4, top3 = max(tops), tops[0], tops[1]
    assert (baseline - top4) == pytest.approx((baseline - top3) * 4 / 3, rel=0.01)


def test_scatter_draws_one_point_each_labels_and_the_front():
    plot = {"kind": "scatter", "title": "Pareto", "xlabel": "latency", "ylabel": "accuracy",
            "series": [{"label": "models", "x": [1, 2, 3], "y": [0.7, 0.9, 0.8], "text": ["small", "big", "mid"]},
                       {"label": "others", "x": [4, 5], "y": [0.6, 0.65]}], "front": [0, 1]}
    root = _svg_root(render_plot(plot))
    points = _by_id(root, "series-0").findall(f"{SVG}circle")
    assert len(points) == 3 and len(_by_id(root, "series-1").findall(f"{SVG}circle")) == 2
    xs = [float(c.get("cx")) for c in points]
    ys = [float(c.get("cy")) for c in points]
    assert xs == sorted(xs) and ys[1] < ys[2] < ys[0]  # SVG y grows downwards: 0.9 is highest
    front = _by_id(root, "front")
    assert len(front.findall(f"{SVG}circle")) == 2
    assert {"small", "big", "mid", "Pareto", "latency", "accuracy", "models", "others", "front"} <= set(_texts(root))
    with pytest.raises(PlotDataError, match="front"):
        render_plot({**plot, "front": [7]})


def test_legend_avoids_the_data():
    """Lines along the top leave the bottom free: the legend goes there (matplotlib's loc='best')."""
    x = [i / 10 for i in range(11)]
    plot = {"kind": "line", "series": [{"label": "first", "x": x, "y": [1.0 - 0.01 * i for i in range(11)]},
                                       {"label": "second", "x": x, "y": [0.95 - 0.01 * i for i in range(11)]},
                                       {"label": "floor", "x": [0.0], "y": [0.0]}]}
    root = _svg_root(render_plot(plot))
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    _, y, _, h = _box(legend.find(f"{SVG}rect"))
    line_ys = [float(v) for v in re.findall(r"[\d.]+,([\d.]+)", _by_id(root, "series-1").get("d"))]
    assert y > max(line_ys)  # below both lines


def test_many_categories_become_a_profile():
    n = 500
    plot = {"kind": "bars", "categories": [f"class{i}" for i in range(n)],
            "series": [{"label": "recall", "values": [(i * 37 % n) / n for i in range(n)],
                        "ci_low": [0.0] * n, "ci_high": [1.0] * n}]}
    svg = render_plot(plot)
    root = _svg_root(svg)
    assert not _ids(root, r"bar-.*") and _ids(root, "series-0") and _ids(root, "band-0")
    assert any("sorted by recall" in t for t in _texts(root)) and len(svg) < 150_000
    ticks = [t for t in _texts(root) if t.startswith("class")]
    assert ticks[0] == "class0" and len(ticks) <= 12  # weakest (value 0) first; a dozen labels


def test_plot_errors_are_typed():
    with pytest.raises(UnsupportedPlotError):
        render_plot({"kind": "hologram"})
    with pytest.raises(PlotDataError, match="edges"):
        render_plot({"kind": "histogram", "edges": [0, 1, 2], "series": [{"label": "a", "counts": [1, 2, 3]}]})
    with pytest.raises(PlotDataError, match="series"):
        render_plot({"kind": "line"})
    with pytest.raises(PlotDataError):
        render_plot({"kind": "heatmap", "rows": ["a"], "cols": ["b"], "values": [[1, 2]]})
    assert set(PLOT_KINDS) == {"reliability", "histogram", "bars", "heatmap", "line", "scatter", "images"}


def test_plot_text_is_literal():
    plot = {"kind": "bars", "categories": ["$5 bill", "$x^2$", "a\x00b"],
            "series": [{"label": "s", "values": [1, 2, 3]}]}
    svg = render_plot(plot)
    texts = _texts(_svg_root(svg))  # a NUL would make the XML invalid: it is replaced
    assert "$5 bill" in texts and "$x^2$" in texts and "a\ufffdb" in texts


def test_plots_are_deterministic_and_ids_differ_between_plots():
    assert render_plot(BARS_PLOT) == render_plot(BARS_PLOT)
    other = {**BARS_PLOT, "title": "another"}
    assert set(_ids(_svg_root(render_plot(BARS_PLOT)), ".*")).isdisjoint(_ids(_svg_root(render_plot(other)), ".*"))


def test_rendering_plots_does_not_import_matplotlib():
    import subprocess
    import sys

    code = ("import sys, json; from assay.report.plots import render_plot; from test_report import make_evidence\n"
            "for s in make_evidence().sections.values():\n"
            "    for p in s.plots.values():\n"
            "        if p['kind'] != 'hologram': render_plot(p)\n"
            "print(json.dumps(sorted(m for m in ('matplotlib', 'PIL', 'torch') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).parent))
    assert out.stdout.strip() == "[]"


_ODD_NUMBERS = st.one_of(st.none(), st.floats(min_value=-1e9, max_value=1e9),
                        st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["bars", "line", "scatter", "histogram", "heatmap", "reliability"]),
       numbers=st.lists(_ODD_NUMBERS, min_size=1, max_size=8), flag=st.booleans())
def test_odd_numbers_draw_or_raise_plot_data_error(kind, numbers, flag):
    """Missing, infinite and negative numbers never crash the renderer or leak NaN into the SVG."""
    n = len(numbers)
    plot = {
        "bars": {"kind": "bars", "categories": [str(i) for i in range(n)], "center_zero": flag,
                 "series": [{"label": "a", "values": numbers, "ci_low": numbers[::-1], "ci_high": numbers}],
                 "muted": [flag] * n},
        "line": {"kind": "line", "xscale": "log" if flag else "linear",
                 "series": [{"label": "a", "x": numbers, "y": numbers[::-1], "y_low": numbers, "y_high": numbers}]},
        "scatter": {"kind": "scatter", "series": [{"label": "a", "x": numbers, "y": numbers, "text": ["t"] * n}],
                    "front": list(range(n)) if flag else None},
        "histogram": {"kind": "histogram", "edges": list(range(n + 1)), "series": [{"label": "a", "counts": numbers}],
                      "yscale": "log" if flag else None},
        "heatmap": {"kind": "heatmap", "rows": list(range(n)), "cols": list(range(n)), "values": [numbers] * n,
                    "normalize": "row" if flag else None},
        "reliability": {"kind": "reliability", "series": [{"label": "a", "bins": [
            {"lower": i / n, "upper": (i + 1) / n, "count": c, "mean_confidence": c, "accuracy": c}
            for i, c in enumerate(numbers)]}]},
    }[kind]
    try:
        svg = render_plot(plot)
    except PlotDataError:
        return
    _svg_root(svg)
    assert not re.search(r'="[^"]*(nan|inf)', svg, re.I)


# ------------------------------------------------------------------------------------ drawing layer


def test_nice_ticks_by_hand():
    from assay.report.svg import linear_ticks, log_ticks

    t = linear_ticks(0.0, 1.05, 6)
    assert t.major == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert t.labels == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    t = linear_ticks(-0.115, 0.115, 6)
    assert t.labels == ["\u22120.10", "\u22120.05", "0.00", "0.05", "0.10"]
    assert linear_ticks(0, 160_000, 8).labels[-1] == "160000"
    assert log_ticks(0.5, 600).major == [1, 10, 100]
    assert [v for v in log_ticks(0.5, 600).minor if 1 < v < 10] == pytest.approx([2, 3, 4, 5, 6, 7, 8, 9])
    assert log_ticks(8, 32).labels == ["10", "20"]  # inside one decade: 1-2-5 ticks are labelled too


@settings(max_examples=80, deadline=None)
@given(lo=st.floats(-1e5, 1e5), span=st.floats(1e-6, 1e6), target=st.integers(3, 10))
def test_linear_ticks_are_evenly_spaced_nice_and_inside(lo, span, target):
    from assay.report.svg import linear_ticks

    assume(span > 1e-3 * max(1.0, abs(lo)))  # an axis, not a float-rounding experiment
    hi = lo + span
    ticks = linear_ticks(lo, hi, target).major
    assert 1 <= len(ticks) <= target + 2
    slack = 1e-9 * (span + max(1.0, abs(lo), abs(hi)))
    assert all(lo - slack <= v <= hi + slack for v in ticks)
    if len(ticks) > 1:
        steps = [b - a for a, b in itertools.pairwise(ticks)]
        step = steps[0]
        assert all(s == pytest.approx(step, rel=1e-6) for s in steps)
        mantissa = step / 10 ** math.floor(math.log10(step) + 1e-12)
        assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5, 10)) < 1e-6


def test_transforms_match_matplotlib():
    import numpy as np

    pytest.importorskip("matplotlib")
    from matplotlib.scale import LogitScale, SymmetricalLogScale

    from assay.report.svg import Scale

    values = np.array([-1000, -10, -1, -0.5, 0, 0.3, 1, 2, 50, 1e4])
    reference = SymmetricalLogScale(None, base=10, linthresh=1, linscale=1).get_transform().transform(values)
    scale = Scale("symlog", -1e4, 1e4).place(0.0, 1.0)
    ours = scale(values) * (scale.t_hi - scale.t_lo) + scale.t_lo  # back to transformed units
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)
    p = np.array([0.001, 0.1, 0.5, 0.9, 0.999])
    reference = LogitScale(None).get_transform().transform(p)  # log10(p / (1 - p))
    scale = Scale("logit", 0.001, 0.999).place(0.0, 1.0)
    ours = scale(p) * (scale.t_hi - scale.t_lo) + scale.t_lo
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)


def test_png_writer_round_trips_through_pil():
    import numpy as np

    from assay.report.svg import png_data_uri

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    decoded = np.asarray(_png_pixels(png_data_uri(rgba)).convert("RGBA"))
    np.testing.assert_array_equal(decoded, rgba)


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.text(max_size=30), min_size=1, max_size=4), title=st.text(max_size=80))
def test_any_text_gives_valid_svg_with_the_text_in_it(labels, title):
    plot = {"kind": "bars", "title": title, "categories": labels,
            "series": [{"label": labels[0], "values": [0.5] * len(labels)}]}
    root = _svg_root(render_plot(plot))  # well-formed whatever the text
    def shown(text: str) -> str:  # XML-invalid characters replaced, tabs and line breaks as spaces
        return re.sub("[\t\n\r]", " ", re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "\ufffd", text))

    texts = "\n".join(_texts(root))
    for label in labels:
        assert (shown(label) if len(label) <= 18 else shown(label)[:17]) in texts
    assert root.get("aria-label") == shown(title or "bars")


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
    marked = f"\u27e6{message}\u27e7"  # brackets that cannot occur in the page's own markup
    section = Section(name="x", title=title, verdict="warn", findings=[Finding(severity="warning", message=marked)])
    evidence = make_evidence().model_copy(update={"sections": {"x": section}})
    html = render_html(evidence)
    assert str(markupsafe.escape(marked)) in html  # markupsafe as the independent reference
    assert str(markupsafe.escape(title)) in html
    if any(c in message for c in "<>&"):
        assert marked not in html


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
