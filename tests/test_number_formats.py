"""Numbers that mean something: one format per table column, estimates outside their own interval explained,
and console tables that never split a word when there is no terminal.

Expected strings are written by hand; the console checks read Rich's plain-text output back.
"""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from assay.evidence.schema import DataInfo, EnvironmentInfo, Evidence, Metric, ModelInfo, Section
from assay.report import print_console
from assay.report.formatting import (
    MISSING,
    NumberFormat,
    decimals_for,
    format_estimate,
    interval_note,
    table_cells,
)

BOOT = "bootstrap percentile, 95% (B=1000, seed=0)"


def _metric(value, lo=None, hi=None, n=540, method=BOOT, **config):
    return Metric(value=value, ci_low=lo, ci_high=hi, n=n, method=method if lo is not None else "point", config=config)


def _evidence() -> Evidence:
    """The demo's summary, by hand: long section titles and metric names, numbers of every magnitude, and a
    calibration error whose estimate lies outside its own bootstrap interval."""
    sections = {
        "performance": Section(name="performance", title="Performance", verdict="pass", metrics={
            "accuracy": _metric(0.98889, 0.97963, 0.99630), "balanced_accuracy": _metric(0.98878, 0.97865, 0.99633)}),
        "calibration": Section(name="calibration", title="Calibration", verdict="pass", metrics={
            "ece": _metric(0.009529, 0.004561, 0.018956, binning="equal-width"),
            "mce": _metric(0.0123, 0.0150, 0.0300, binning="equal-width")}),
        "efficiency": Section(name="efficiency", title="Efficiency", verdict="info", metrics={
            "latency_p95_ms": _metric(0.078687, 0.068638, 0.242004, n=72, method="order-statistic CI, 95%"),
            "throughput_per_s": _metric(112144.9473, 107919.9773, 112838.1619, n=72, method="from the p50 CI"),
            "flops": _metric(675072.0, n=1)}),
        "ood": Section(name="ood", title="Out-of-distribution detection", verdict="pass",
                       metrics={"aurc": _metric(3.641e-4, 8.614e-5, 8.155e-4)}),
        "corruption": Section(name="corruption", title="Corruption robustness", verdict="pass", metrics={
            "worst_corruption_accuracy": _metric(0.3715, 0.3515, 0.3922)}),
    }
    return Evidence(
        created_at="2025-01-01T00:00:00Z",
        model=ModelInfo(path="/m/model.onnx", format="onnx", sha256="ab" * 32, input_shape=[None, 64],
                        input_dtype="float32", num_classes=10, class_names=[str(i) for i in range(10)]),
        data=DataInfo(name="digits:test", source="builtin", modality="tabular", fingerprint="cd" * 32, n=540,
                      num_classes=10, class_names=[str(i) for i in range(10)], input_shape=[64]),
        environment=EnvironmentInfo(assay="0.1.0", python="3.11", platform="Linux", numpy="2.1"),
        seed=0, config={}, sections=sections)


CELLS = ["Performance", "Calibration", "Efficiency", "Out-of-distribution detection", "Corruption robustness",
         "balanced_accuracy", "latency_p95_ms", "throughput_per_s", "worst_corruption_accuracy", "0.9889",
         "[0.9796, 0.9963]", "112145", "[107920, 112838]", "675072", "0.000364", "[0.000086, 0.000816]",
         "0.0787", "[0.0686, 0.2420]"]


def _console_text(width: int, terminal: bool) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None)
    print_console(_evidence(), console)
    return buffer.getvalue()


def test_off_a_terminal_the_table_never_splits_a_cell():
    text = _console_text(80, terminal=False)  # `assay evaluate ... | cat`: Rich assumes 80 columns
    lines = text.splitlines()
    for cell in CELLS:
        assert any(cell in line for line in lines), f"{cell!r} split across lines or missing"
    for fragment in ("Calibratio\n", "latency_\n", "Out-of-dis\n"):
        assert fragment not in text
    row = next(line for line in lines if "throughput_per_s" in line)
    assert "112145" in row and "[107920, 112838]" in row and "72" in row  # one table row, one line
    assert max(map(len, lines)) > 80  # laid out at its natural width, not squeezed into 80 columns


def test_a_narrow_terminal_gets_one_line_per_metric():
    text = _console_text(60, terminal=True)
    lines = text.splitlines()
    for cell in CELLS:
        assert any(cell in line for line in lines), f"{cell!r} split across lines or missing"
    line = next(line for line in lines if "throughput_per_s" in line)
    assert re.search(r"throughput_per_s:\s+112145 \[107920, 112838\]\s+n=72", line)


def test_a_wide_terminal_gets_the_table():
    text = _console_text(200, terminal=True)
    header = next(line for line in text.splitlines() if "section" in line and "metric" in line)
    assert header.split() == ["section", "verdict", "metric", "value", "CI", "n"]


def test_console_explains_an_estimate_outside_its_interval():
    for terminal, width in ((False, 80), (True, 60), (True, 200)):
        text = " ".join(_console_text(width, terminal).split())  # notes may wrap between words
        assert "0.0123\u2020" in text  # the value is marked ...
        assert ("\u2020 Calibration: mce 0.0123 lies outside its own bootstrap interval [0.0150, 0.0300]: binned "
                "calibration errors are biased upwards when bins hold few samples") in text  # ... and explained
        assert "ece 0.0095 lies" not in text  # an estimate inside its interval gets no note


def test_interval_note_wording_by_kind_of_statistic():
    assert interval_note("ece", _metric(0.02, 0.01, 0.03, binning="equal-width")) is None
    assert interval_note("x", _metric(0.5)) is None  # no interval
    assert interval_note("x", _metric(0.5, None, 0.7)) is None  # half an interval
    note = interval_note("gap", _metric(0.001, 0.004, 0.02, method="percentile interval"))
    assert note is not None and note.startswith("gap 0.0010 lies outside its own interval [0.0040, 0.0200]: ")
    assert "the statistic is biased" in note and "binned calibration" not in note
    note = interval_note("mce", _metric(0.5, 0.55, 0.9, binning="equal-width"))
    assert note is not None and "bootstrap interval" in note and "binned calibration errors" in note


# ------------------------------------------------------------------------------------------- NumberFormat


@pytest.mark.parametrize(("magnitude", "decimals"), [
    (0.0, 4), (0.9889, 4), (7.2381, 4), (0.0135, 4), (0.00488, 5), (8.2e-4, 6), (9.9e-5, 7), (12.55, 2),
    (999.4, 1), (1000.0, 0), (185019.2, 0), (9.99996, 2)])
def test_decimals_by_magnitude(magnitude, decimals):
    assert decimals_for(magnitude) == decimals


def test_the_reported_mixed_column_prints_in_one_notation():
    rows = [(0.0697, None, None), (185019.2247, None, None), (3.641e-4, 8.6e-5, 8.2e-4), (0.9889, 0.97, 0.99)]
    fmt = NumberFormat.for_rows(rows)
    assert not fmt.scientific
    assert [fmt.estimate(*r) for r in rows] == [
        ("0.0697", ""), ("185019", ""), ("0.000364", "[0.000086, 0.000820]"), ("0.9889", "[0.9700, 0.9900]")]
    # A number that fixed notation cannot show turns the whole column scientific, not just its own row.
    fmt = NumberFormat.for_rows([*rows, (2e-7, None, None)])
    assert fmt.scientific and fmt.number(0.9889) == "9.889e-01" and fmt.number(2e-7) == "2.000e-07"
    assert NumberFormat(signed=True).row(0.01, -0.002, 0.02, -0.005) == ["+0.0100", "-0.0020", "+0.0200", "-0.0050"]
    assert NumberFormat.for_rows([3, 12.0]).number(3) == "3" and NumberFormat().number(None) == MISSING


def _notation(text: str) -> str | None:
    if text in (MISSING, "\u221e", "-\u221e", "+\u221e", ""):
        return None
    return "sci" if "e" in text else "fixed"


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e18, max_value=1e18)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(finite, st.one_of(st.none(), finite), st.one_of(st.none(), finite)), min_size=1,
                max_size=8))
def test_a_column_never_mixes_notations(rows):
    fmt = NumberFormat.for_rows(rows)
    texts = []
    for value, lo, hi in rows:
        text, ci = fmt.estimate(value, lo, hi)
        texts += [text, *(p.strip() for p in ci.strip("[]").split(",") if ci)]
    float_texts = [t for t in texts if not re.fullmatch(r"[-+]?\d+", t)]  # integers (counts) are no notation
    assert len({_notation(t) for t in float_texts} - {None}) <= 1, texts
    # A value from 10 up never shows more than 4 significant digits (no 185019.2247).
    for value, lo, hi in rows:
        t = fmt.estimate(value, lo, hi)[0]
        if _notation(t) == "fixed" and "." in t and abs(float(t)) >= 10:
            assert len(t.lstrip("+-").replace(".", "").lstrip("0")) <= 4, t


def test_one_row_keeps_its_numbers_readable_against_each_other():
    # An interval shares its value's decimals, so 0.0037 [0.0005, 0.0135] is not 0.0037 [5.4e-04, 0.0135].
    assert format_estimate(0.0037, 0.00054, 0.0135) == ("0.0037", "[0.0005, 0.0135]")
    assert format_estimate(12.5511, 7.2381, 36.3611) == ("12.55", "[7.24, 36.36]")
    # A skewed interval does not cost the value its digits (a p95 latency with a long upper tail).
    assert format_estimate(0.078687, 0.068638, 16.104) == ("0.0787", "[0.0686, 16.1040]")


def test_table_cells_give_every_numeric_column_one_format():
    rows = [{"class": "cat", "support": 100, "recall": 0.61, "recall_ci_low": 0.56, "recall_ci_high": 0.66, "p": 0.5,
             "ok": True},
            {"class": "dog", "support": 3, "recall": 1.0, "recall_ci_low": 0.29, "recall_ci_high": 1.0, "p": 3e-7,
             "ok": False},
            {"class": "emu", "support": 12, "recall": None, "recall_ci_low": None, "recall_ci_high": None, "p": 0.02,
             "ok": None}]
    cells = table_cells(rows, ["class", "support", "recall", "p", "ok"])
    assert [c[0] for c in cells] == [("cat", ""), ("dog", ""), ("emu", "")]
    assert [c[1] for c in cells] == [("100", ""), ("3", ""), ("12", "")]
    assert [c[2] for c in cells] == [("0.6100", "[0.5600, 0.6600]"), ("1.0000", "[0.2900, 1.0000]"), (MISSING, "")]
    # 3e-7 needs scientific notation, so the whole p column uses it (not 0.5000 next to 3.000e-07).
    assert [c[3] for c in cells] == [("5.000e-01", ""), ("3.000e-07", ""), ("2.000e-02", "")]
    assert [c[4][0] for c in cells] == ["yes", "no", MISSING]


def test_evaluate_piped_prints_whole_cells(tmp_path, capsys, monkeypatch):
    """End to end: `assay evaluate ... | cat` (stdout not a terminal, 80 columns) prints every section title,
    metric name, value and interval of its summary table on one line."""
    import json

    import numpy as np
    import torch

    from assay.cli import main
    from assay.models.export import export_onnx

    monkeypatch.delenv("COLUMNS", raising=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    net = torch.nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-2.0, 0, 0, 0], [2.0, 0, 0, 0]]))
    export_onnx(net, torch.from_numpy(x[:2]), tmp_path / "model.onnx", class_names=["no", "yes"])
    code = main(["evaluate", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "data.npz"), "--out",
                 str(tmp_path / "out"), "--checks", "performance,calibration,efficiency", "--n-bootstrap", "100",
                 "--latency-budget", "0.2", "--cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    evidence = json.loads((tmp_path / "out" / "evidence.json").read_text())
    for section in evidence["sections"].values():
        assert any(section["title"] in line for line in lines), section["title"]
        for name in section["config"].get("key_metrics") or list(section["metrics"])[:4]:
            # The metric's row: its name, value, interval (if any) and n, all on one line.
            row = re.compile(rf"(^|\s){re.escape(name)}\s+[-+]?\d[\d.e+-]*\S?(\s+\[[^\]]+\])?\s+\d+\s*$")
            assert any(row.search(line) for line in lines), f"metric {name!r} split across lines or missing"



def test_markdown_and_html_explain_an_estimate_outside_its_interval():
    from assay.report import render_html, render_markdown

    evidence = _evidence()
    markdown = render_markdown(evidence)
    assert "[0.0150, 0.0300] \u2020" in markdown
    assert "\u2020 mce 0.0123 lies outside its own bootstrap interval \\[0.0150, 0.0300\\]: binned" in markdown
    assert "ece 0.0095 lies" not in markdown
    html = render_html(evidence)
    assert "[0.0150, 0.0300] \u2020" in html and "mce 0.0123 lies outside its own bootstrap interval" in html
    assert "ece 0.0095 lies" not in html


def test_a_metric_list_keeps_one_notation_in_markdown_and_html():
    """A metric list is one column: next to a value that needs scientific notation (3e-7) an accuracy prints
    in scientific notation too, not 0.9123 under 3.000e-07."""
    from assay.report import render_markdown

    evidence = _evidence()
    evidence.sections["ood"].metrics = {"p_value": _metric(3e-7), "auroc": _metric(0.91234, 0.9, 0.93)}
    markdown = render_markdown(evidence)
    ood = markdown[markdown.index("Out-of-distribution detection: PASS"):]
    rows = [line for line in ood.splitlines() if line.startswith("| `")][:2]
    assert len(rows) == 2
    cells = [cell.strip() for row in rows for cell in row.split("|")[2:4]]
    assert cells == ["3.000e-07", MISSING, "9.123e-01", "[9.000e-01, 9.300e-01]"]
