"""The report pages in a real browser: headless Chromium (Debian's ``/usr/bin/chromium``, driven over the
DevTools protocol by ``tests/chromium.py``) lays out each page 1400 and 800 CSS px wide, and the layout
is measured there, with the browser's own fonts:

* nothing makes the page scroll sideways, and every plot lies within the window;
* a plot is never stretched beyond its natural size (its SVG ``width``), and one alone in its row is shown
  at that size (or as wide as the row, when narrower);
* no text of a plot (titles included) sticks out of the plot's box, so none is clipped;
* no two labels overlap: Pareto point labels, thumbnail captions, column headers and row labels.

Pages: the demo's evaluation report, a comparison (flipped-example thumbnails), a selection (Pareto labels;
headed by the pick, or by "no model picked"), a compression report (class names in the damage audit,
exemplar thumbnails, Pareto labels) and a page of deliberately awkward plots (long titles, crowded and
coincident labels, long captions). Screenshots of every page at both widths are kept in
``artifacts/pages/<page>-<width>.png`` (``$ASSAY_TEST_ARTIFACTS/pages`` when set). The tests are skipped,
saying why, only where the browser is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chromium import LAYOUT_PROBE, Chromium, Page, available
from conftest import make_blobs_dataset

pytestmark = pytest.mark.skipif(not available(), reason="no headless browser: /usr/bin/chromium is not installed "
                                                        "(apt-get install chromium; or set ASSAY_CHROMIUM)")

WIDTHS = (1400, 800)
ARTIFACTS = Path(os.environ.get("ASSAY_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def browser():
    with Chromium() as chromium:
        yield chromium


def layout_problems(m: dict[str, Any], where: str) -> list[str]:
    """What breaks the layout rules (module docstring) in one measurement of :data:`LAYOUT_PROBE`."""
    problems = []
    if m["scroll_width"] > m["inner_width"]:
        problems.append(f"{where}: the page scrolls sideways (scrollWidth {m['scroll_width']} > {m['inner_width']})")
    for p in m["plots"]:
        name, box, natural = f"{where}, plot {p['id'] or p['label']!r}", p["box"], p["natural_width"]
        if box["left"] < -0.5 or box["right"] > m["inner_width"] + 0.5:
            problems.append(f"{name}: outside the window ({box['left']}..{box['right']})")
        if box["width"] > natural + 0.5:
            problems.append(f"{name}: stretched to {box['width']} px, natural width {natural}")
        if p["alone"] and abs(box["width"] - min(natural, p["room"])) > 1:
            problems.append(f"{name}: alone in its row but {box['width']} px wide, not min(natural {natural}, "
                            f"room {p['room']})")
        for t in p["outside"]:
            problems.append(f"{name}: text {t['text']!r} sticks out of the plot ({t['box']} vs {box})")
        for a, b in p["overlaps"]:
            problems.append(f"{name}: labels {a!r} and {b!r} overlap")
    return problems


def check_page(page: Page, html: Path, name: str) -> dict[int, dict[str, Any]]:
    """Lay ``html`` out at each width, keep a full-page screenshot, assert the layout rules; the measurements."""
    measured, problems = {}, []
    for width in WIDTHS:
        page.set_width(width)
        page.goto(html.resolve().as_uri())
        m = page.evaluate(LAYOUT_PROBE)
        shot = page.screenshot(ARTIFACTS / "pages" / f"{name}-{width}.png")
        assert shot.stat().st_size > 1000
        assert m["plots"], f"{name}: no plot found on the page (svg.assay-plot)"
        problems += layout_problems(m, f"{name} at {width} px")
        measured[width] = m
    assert not problems, "\n".join(problems)
    return measured


def _plot(m: dict[str, Any], fragment: str) -> dict[str, Any]:
    found = [p for p in m["plots"] if fragment in p["id"]]
    assert found, f"no plot whose id contains {fragment!r}: {[p['id'] for p in m['plots']]}"
    return found[0]


# ---------------------------------------------------------------------------------------- the demo


def test_demo_report_layout(browser, tmp_path_factory):
    from assay.demo import run_demo

    root = tmp_path_factory.mktemp("demo")
    run_demo(root / "demo", progress=False, cache_dir=root / "cache")
    measured = check_page(browser.new_page(), root / "demo" / "report.html", "demo")
    for width, m in measured.items():
        # the slices section has one plot: alone in its row, at its natural size (it was stretched to the row)
        ink = _plot(m, "s-slices")
        assert ink["alone"] and ink["box"]["width"] == pytest.approx(min(ink["natural_width"], ink["room"]), abs=1)
        assert ink["titles"], "the slice plot's title is marked class=title"
        assert all(p["box"]["width"] <= p["natural_width"] + 0.5 for p in m["plots"]), width


# ------------------------------------------------------------------- comparison, selection, compression


def _digits_model(root: Path) -> tuple[Path, Path]:
    """A small digits CNN exported without class names, and the test digits as NPZ with class names that
    are words, not indices (so a page that shows an index instead of a name is caught)."""
    import onnx
    import torch

    from assay.data.loader import load_data
    from assay.demo import train_digits_cnn
    from assay.models.export import export_onnx

    train, test = load_data("digits:train"), load_data("digits:test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = train_digits_cnn(train.x, train.y, epochs=3)
    finally:
        torch.set_num_threads(threads)
    path = root / "cnn.onnx"
    export_onnx(net, torch.from_numpy(test.x[:2]), path)
    model = onnx.load(path)  # no class names in the file: the data's names must reach every output
    kept = [p for p in model.metadata_props if p.key != "class_names"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, path)
    data = root / "digits.npz"
    np.savez(data, x=test.x, y=test.y, ids=np.asarray(test.ids), class_names=np.array(WORDS))
    return path, data


def test_compression_comparison_and_selection_pages(browser, tmp_path):
    """One test for the three pages: they share one trained model and its int8 variant (which changes a few
    predictions), so that one pytest-xdist worker builds them."""
    from assay.compare.run import compare, select
    from assay.compress.run import compress

    cnn, data = _digits_model(tmp_path)
    fast = {"suite": "quick", "n_bootstrap": 100, "cache_dir": tmp_path / "cache"}
    compression = compress(str(cnn), str(data), methods=["int8-static-entropy"], train_data="digits:train",
                           out=tmp_path / "compress", latency_budget_s=0.2, batch_sizes=(1, 8), **fast)
    variants = tmp_path / "compress" / "variants"
    comparison = compare(str(cnn), str(variants / "int8-static-entropy.onnx"), data=str(data),
                         out=tmp_path / "compare", **fast)
    models = [str(cnn), str(variants / "fp32.onnx"), str(variants / "int8-static-entropy.onnx")]
    picked = select(models, str(data), out=tmp_path / "select", **fast)
    nothing = select(models, str(data), constraints=["accuracy>=0.9999"], out=tmp_path / "select-none", **fast)
    check_compression_page(browser, compression, tmp_path)
    check_comparison_page(browser, comparison, tmp_path)
    check_selection_pages(browser, picked, nothing, tmp_path)


def check_compression_page(browser: Chromium, result: Any, root: Path) -> None:
    """Class names (not output indices) in the damage audit, the console's rows and the exemplar captions;
    Pareto labels of coincident points (the original and its fp32 copy) apart."""
    audited = [r for r in result.rows if r["status"] != "failed"]
    assert audited and all(r["worst_class"] in WORDS for r in audited)  # what the console prints, too
    summary = json.loads((root / "compress" / "compression.json").read_text())
    assert {r["worst_class"] for r in summary["variants"]} <= set(WORDS)
    page = browser.new_page()
    measured = check_page(page, root / "compress" / "report.html", "compression")
    groups = page.evaluate("[...document.querySelectorAll('#s-damage table tbody tr td:first-child')]"
                           ".map(td => td.textContent.trim())")
    assert groups and set(groups) <= set(WORDS), groups  # per-class damage rows, one per class, by name
    for m in measured.values():
        pareto = _plot(m, "pareto_accuracy")
        # the original and its fp32 copy sit on (almost) the same point: both labelled, apart
        assert sorted(pareto["labels"]) == sorted(["original", *[r["variant"] for r in audited]])
        assert any(r["changed_predictions"] > 0 for r in audited)
        thumbs = _plot(m, "s-exemplars")  # the changed predictions, captioned with class names
        assert any(word in " ".join(thumbs["labels"]) for word in WORDS)


def check_comparison_page(browser: Chromium, comparison: Any, root: Path) -> None:
    assert comparison.flips["negative"] or comparison.flips["positive"], "the int8 variant changes predictions"
    measured = check_page(browser.new_page(), root / "compare" / "comparison.html", "comparison")
    for m in measured.values():
        flips = [p for p in m["plots"] if "s-flips" in p["id"]]
        assert flips and all(len(p["labels"]) > 1 for p in flips)  # captions were measured, and none overlap


def check_selection_pages(browser: Chromium, picked: Any, nothing: Any, root: Path) -> None:
    """Headed by the pick (not the first model given), or by "no model picked"; every Pareto point labelled."""
    assert picked.pick is not None and nothing.pick is None
    measured = check_page(browser.new_page(), root / "select" / "selection.html", "selection")
    for m in measured.values():
        assert picked.pick in m["heading"] and picked.pick in m["banner"]
        pareto = _plot(m, "pareto")
        assert len(pareto["labels"]) == len(picked.rows)
        assert any(t.startswith(f"pick: {picked.pick[:10]}") for t in pareto["labels"])
    first = picked.rows[0]["model"]
    if first != picked.pick:
        assert first not in measured[1400]["heading"]
    none = check_page(browser.new_page(), root / "select-none" / "selection.html", "selection-none")
    for m in none.values():
        assert "no model picked" in m["heading"] and "No model picked: no model meets every constraint" in m["banner"]
        assert not any(row["model"] in m["heading"] for row in nothing.rows)


# -------------------------------------------------------------------------------- awkward plots


def _awkward_sections() -> dict[str, Any]:
    """Plots whose text is hard to fit: long and wide titles, crowded and coincident point labels, long
    rotated categories, long captions and headers, a row of many thumbnails."""
    from assay.evidence.schema import Section
    from assay.report.thumbnails import png_thumbnail

    wide_title = "WWW MMM Accuracy Δ per CLASS with 95% CI (hatched: TOO FEW SAMPLES TO TEST) " * 2
    unbroken = "x" * 140
    rng = np.random.default_rng(0)
    names = [f"model-{i}-with-a-long-name.onnx" for i in range(12)]
    x = np.r_[[1.0, 1.0, 1.0], rng.uniform(1, 3, 9)]  # three models on the very same point
    y = np.r_[[0.9, 0.9, 0.9], rng.uniform(0.85, 0.95, 9)]
    image = png_thumbnail(rng.random((1, 8, 8)).astype(np.float32))
    plots = {
        "bars": {"kind": "bars", "title": wide_title, "ylabel": "accuracy delta", "center_zero": True,
                 "categories": [f"a-very-long-class-name-{i}" for i in range(8)],
                 "series": [{"label": "delta", "values": list(rng.normal(0, 0.01, 8))}]},
        "line": {"kind": "line", "title": unbroken, "xlabel": "severity", "ylabel": "accuracy",
                 "series": [{"label": f"series {i}", "x": [1, 2, 3], "y": list(rng.random(3))} for i in range(3)]},
        "scatter": {"kind": "scatter", "title": "Accuracy vs latency (Pareto front highlighted)", "xlabel": "ms",
                    "ylabel": "accuracy", "front": [0, 4],
                    "series": [{"label": "models", "x": list(x), "y": list(y), "text": names}]},
        "reliability": {"kind": "reliability", "title": wide_title, "series": [
            {"label": "W" * 40, "bins": [{"lower": 0.5, "upper": 1.0, "count": 10, "mean_confidence": 0.8,
                                          "accuracy": 0.7}]},
            {"label": "M" * 40, "bins": [{"lower": 0.5, "upper": 1.0, "count": 10, "mean_confidence": 0.8,
                                          "accuracy": 0.7}]}]},
        "heatmap": {"kind": "heatmap", "title": wide_title, "rows": WORDS, "cols": WORDS,
                    "values": rng.integers(0, 50, (10, 10)).tolist()},
        "thumbnails": {"kind": "images", "title": wide_title, "rows": [
            {"label": "negative flips of a variant with a long name (24 changed)", "images": [image] * 24,
             "captions": [f"id-{i:05d}: {WORDS[i % 10]} / {WORDS[(i + 3) % 10]}→{WORDS[(i + 5) % 10]}"
                          for i in range(24)]}]},
        "columns": {"kind": "images", "title": "Sample under each corruption",
                    "columns": ["clean", *[f"severity {s}" for s in range(1, 6)]],
                    "rows": [{"label": name, "images": [image] * 6, "captions": ["clean", "s1", "s2", "s3", "s4", "s5"]}
                             for name in ("gaussian_noise", "elastic_transform", "jpeg_compression")]},
    }
    return {"awkward": Section(name="awkward", title="Awkward plots", verdict="info", plots=plots)}


def test_awkward_plots_fit_and_keep_labels_apart(browser, tmp_path):
    from assay.evaluation import run_evaluation
    from assay.report.html import write_html

    ds, model = make_blobs_dataset(n=200)
    evidence = run_evaluation(model, ds, checks=["performance"], cache_dir=None).evidence
    page = tmp_path / "awkward.html"
    write_html(evidence.model_copy(update={"sections": _awkward_sections()}), page)
    measured = check_page(browser.new_page(), page, "awkward")
    for m in measured.values():
        assert len(m["plots"]) == 7
        scatter = _plot(m, "scatter")
        assert len(scatter["labels"]) == 12  # every point labelled, the three coincident ones too
        assert all(len(p["titles"]) >= 2 for p in m["plots"] if p["id"].endswith(("bars", "line", "heatmap")))


def test_screenshot_script_writes_section_images(tmp_path):
    """docs/screenshots.py: one PNG per section id, named without the ``s-``; a missing id exits 2."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshots", Path(__file__).resolve().parents[1] / "docs" /
                                                  "screenshots.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from assay.evaluation import run_evaluation
    from assay.report.html import write_html

    ds, model = make_blobs_dataset(n=200)
    write_html(run_evaluation(model, ds, checks=["performance"], cache_dir=None).evidence, tmp_path / "report.html")
    assert script.main([str(tmp_path), "s-performance", "--out", str(tmp_path / "shots"), "--prefix", "x-"]) == 0
    shot = tmp_path / "shots" / "x-performance.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert script.main([str(tmp_path), "s-nothing", "--out", str(tmp_path / "shots")]) == 2
    shutil.rmtree(tmp_path / "shots")
