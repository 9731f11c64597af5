"""The monitoring dashboard (``assay.report.dashboard.render_dashboard``): every snapshot string escaped, alarms
and CI bands drawn, empty and partial snapshots rendered, the size bounded; and in a real headless Chromium
(Debian's ``/usr/bin/chromium`` over the DevTools protocol, ``tests/chromium.py``): a snapshot with a planted
shift loads with no console error, exception or network request, shows the alarm, and lays out like the
report pages (no sideways scroll, no text outside its plot). Screenshots: ``artifacts/dashboard/*.png``
(``$ASSAY_TEST_ARTIFACTS/dashboard`` when set).

The planted shift is measured here, independently of the monitor: the KS statistic (scipy) of each window of a
feature against a reference sample, its threshold the 99th percentile of the statistic on reference resamples;
windows after the shift exceed it, those before do not.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp

from assay.errors import OptionError
from assay.report.dashboard import MAX_TEST_PANELS, MAX_WINDOWS, render_dashboard, time_ticks, write_dashboard
from chromium import LAYOUT_PROBE, Chromium, available

T0 = 1_764_547_200.0  # 2025-12-01 00:00:00 UTC
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;"\''
ARTIFACTS = Path(os.environ.get("ASSAY_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")


def _window(i: int, *, seconds: float = 60.0, tests: list[dict[str, Any]] | None = None, accuracy: float = 0.9,
            insufficient: bool = False, labelled: bool = True) -> dict[str, Any]:
    tests = tests or []
    return {
        "index": i, "start": T0 + seconds * i, "end": T0 + seconds * (i + 1), "n": 20 if insufficient else 400,
        "insufficient": insufficient,
        "estimated_accuracy": None if insufficient else {"method": "ATC", "value": accuracy,
                                                         "ci": [accuracy - 0.03, accuracy + 0.03]},
        "doc_accuracy": None if insufficient else {"value": accuracy + 0.01, "ci": [accuracy - 0.02, accuracy + 0.04]},
        "realized_accuracy": {"value": accuracy - 0.01, "ci": [accuracy - 0.08, accuracy + 0.05], "n_labelled": 50,
                              "label_delay_s_median": 420.0} if labelled and not insufficient else None,
        "ood_rate": None if insufficient else {"value": 0.04, "ci": [0.02, 0.06], "threshold": 0.73},
        "tests": tests,
        "alarms": [f"{t['name']}: drift" for t in tests if t["alarm"]],
    }


def _snapshot(windows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "schema": "assay.monitor.snapshot/1", "generated_at": T0 + 60 * len(windows),
        "model": {"name": "digits", "version": "3", "alias": "production"},
        "reference": {"source": "digits@production", "sha256": "ab" * 32, "accuracy": 0.91, "n": 900},
        "window": {"kind": "count", "size": 400}, "threshold_method": "chunk quantile 0.99",
        "traffic": [{"start": w["start"], "end": w["end"], "requests": w["n"], "latency_p50_ms": 2.5,
                     "latency_p99_ms": 11.0} for w in windows],
        "windows": windows,
        "rollout": {"state": "canary", "challenger": "digits:4", "fraction": 0.1,
                    "difference": {"kind": "estimated", "value": -0.021, "ci": [-0.04, -0.002], "n": 3000},
                    "decision": "stop: the challenger is worse with confidence"},
        "alias_history": [{"time": T0 - 3600, "alias": "production", "version": "3", "action": "promote",
                           "actor": "ci"}],
        "events": [{"time": T0 + 30, "kind": "canary", "message": "canary started at 10 %"}],
        **extra,
    }


def _planted_shift(n_windows: int = 24, shift_at: int = 16, rows: int = 300, seed: int = 0) -> dict[str, Any]:
    """Windows of two features; from ``shift_at`` on, ``pixel_mean`` is shifted by one standard deviation.
    Statistic: two-sample KS against the reference; threshold: its 99th percentile on reference resamples."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(5000, 2))
    null = [ks_2samp(reference[:, 0], rng.normal(size=rows)).statistic for _ in range(200)]
    threshold = float(np.quantile(null, 0.99))
    windows = []
    for i in range(n_windows):
        current = rng.normal(size=(rows, 2))
        if i >= shift_at:
            current[:, 0] += 1.0
        tests = []
        for k, name in enumerate(("pixel_mean", "confidence")):
            statistic = float(ks_2samp(reference[:, k], current[:, k]).statistic)
            tests.append({"name": name, "statistic": statistic, "threshold": threshold, "p_value": None,
                          "p_adjusted": None, "method": "binned KS", "alarm": statistic > threshold})
        windows.append(_window(i, tests=tests, accuracy=0.9 if i < shift_at else 0.72, labelled=i % 4 == 0,
                               insufficient=False))
    windows.insert(0, _window(-1, insufficient=True))  # the warm-up window: too little data
    return _snapshot(windows)


def _monitor_snapshot(seed: int = 5) -> dict[str, Any]:
    """A real :class:`assay.monitor.Monitor` snapshot: Gaussian classes and a linear model (5 classes, 6
    features); six windows of 300 rows like the reference, then three with every feature shifted by 0.6
    (a covariate shift); every fifth row labelled."""
    import pandas as pd

    from assay.monitor import Monitor, MonitorSettings
    from assay.reference import Reference

    centers = np.eye(5, 6) * 2.5

    def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.integers(0, 5, n)
        x = (centers[y] + rng.normal(0, 1, (n, 6)) + shift).astype(np.float32)
        return (x @ centers.T / 2).astype(np.float32), y, x

    logits, y, x = draw(np.random.default_rng(0), 4000)
    reference = Reference.from_arrays(logits, y, x, class_names=[f"c{i}" for i in range(5)])
    rng = np.random.default_rng(seed)
    parts = [draw(rng, 1800), draw(rng, 900, shift=0.6)]
    logits, y, x = (np.concatenate(column) for column in zip(*parts, strict=True))
    n = len(y)
    times = T0 + np.arange(n) * 0.5
    labelled = np.arange(n) % 5 == 0
    frame = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)], "row": np.zeros(n, dtype=np.int64), "time": times,
        "role": "primary", "logits": list(logits), "features": list(x),
        "label": pd.array([int(v) if k else None for v, k in zip(y, labelled, strict=True)], dtype="Int64"),
        "label_time": np.where(labelled, times + 30.0, np.nan)})
    monitor = Monitor(reference, MonitorSettings(window_size=300, min_window=100, sample_size=40, mmd_permutations=50),
                      info={"model": {"name": "blobs", "version": "1", "alias": "production"}, "source": "test"})
    monitor.update(frame)
    return monitor.snapshot()


class _Tags(HTMLParser):
    """Start tags, attributes and the text of an HTML page (the browser's tokenizer rules, in the stdlib)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


def _svgs(html: str) -> list[ET.Element]:
    """Every inline SVG, parsed as XML (so an unescaped ``<`` or ``&`` in a label would fail here)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


# ------------------------------------------------------------------------------------------------ unit


def test_every_snapshot_string_is_escaped():
    """A script planted in every string field of the snapshot stays text: no script or img element, every
    SVG still well-formed XML, and the planted text readable on the page."""
    test = {"name": EVIL, "statistic": 0.5, "threshold": 0.1, "p_value": 0.001, "p_adjusted": 0.004, "method": EVIL,
            "alarm": True}
    window = _window(0, tests=[test])
    window["alarms"] = [EVIL]
    snapshot = _snapshot([window], threshold_method=EVIL)
    snapshot["model"] = {"name": EVIL, "version": EVIL, "alias": EVIL}
    snapshot["reference"] = {"source": EVIL, "sha256": EVIL, "accuracy": 0.9, "n": 10}
    snapshot["window"] = {"kind": EVIL, "size": 400}
    snapshot["rollout"] = {"state": EVIL, "challenger": EVIL, "fraction": 0.1, "decision": EVIL,
                           "difference": {"kind": EVIL, "value": 0.0, "ci": [-0.1, 0.1], "n": 5}}
    snapshot["alias_history"] = [{"time": T0, "alias": EVIL, "version": EVIL, "action": EVIL, "actor": EVIL}]
    snapshot["events"] = [{"time": EVIL, "kind": EVIL, "message": EVIL}]
    html = render_dashboard(snapshot)
    page = _parse(html)
    assert not [t for t, _ in page.tags if t in ("script", "img", "iframe", "object")]
    assert not [(t, a) for t, a in page.tags if any(k.startswith("on") for k in a)]
    assert "<script" not in html.lower()
    svgs = _svgs(html)
    assert len(svgs) >= 4
    titles = [t.text for svg in svgs for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert any(EVIL in (t or "") for t in titles), "the alarm ring's tooltip names the test, escaped"
    text = "".join(page.text)
    assert text.count(EVIL) >= 15  # model, reference, window, rollout, tests, alarms, history, events ...


def test_alarm_in_the_latest_window_is_shown_everywhere():
    snapshot = _planted_shift()
    alarmed = [w["index"] for w in snapshot["windows"] if any(t["alarm"] for t in w["tests"])]
    assert alarmed == list(range(16, 24)), "the planted shift (KS vs its reference threshold) alarms from 16 on"
    html = render_dashboard(snapshot)
    page = _parse(html)
    text = " ".join("".join(page.text).split())
    assert "ALARM: 1 alarm in the latest window (23)." in text
    items = re.findall(r'<li><span class="when">window (\d+) ', html)
    assert [int(i) for i in items] == alarmed[::-1]  # newest first
    # the drift panel of pixel_mean comes first (it has alarms) and rings exactly the alarmed windows
    first = next(svg for svg in _svgs(html) if "pixel_mean" in (svg.get("aria-label") or ""))
    rings = first.find(".//{http://www.w3.org/2000/svg}g[@id='d-test-0-alarms']")
    assert rings is not None and len(rings) == len(alarmed)
    assert re.search(r'<figure class="plot" id="f-test-0" data-alarms="8">', html)
    # the table of the latest window's tests: the alarmed one first, marked
    rows = re.findall(r'<tr( class="alarm")?><td class="mono">([^<]+)</td>', html)
    assert rows == [(' class="alarm"', "pixel_mean"), ("", "confidence")]
    # the rug along the top of every time plot marks the alarmed windows
    assert html.count('class="alarm-rug"') >= 5


def test_no_alarm_in_the_latest_window_mentions_the_earlier_ones():
    quiet = {"name": "f", "statistic": 0.01, "threshold": 0.1, "p_value": None, "p_adjusted": None,
             "method": "W1", "alarm": False}
    loud = {**quiet, "statistic": 0.3, "alarm": True}
    html = render_dashboard(_snapshot([_window(0, tests=[loud]), _window(1, tests=[quiet])]))
    assert "No alarm in the latest window (1); 1 earlier window had alarms." in html
    assert 'class="banner v-warn"' in html
    calm = render_dashboard(_snapshot([_window(0, tests=[quiet]), _window(1, tests=[quiet])]))
    assert "No alarm in the latest window (1)." in calm and 'class="banner v-pass"' in calm
    filling = _window(2, tests=[loud])
    filling["open"] = True  # the window still filling, evaluated as it stands
    html = render_dashboard(_snapshot([_window(0, tests=[quiet]), _window(1, tests=[quiet]), filling], fdr=0.05))
    assert "ALARM: 1 alarm in the latest window (2, still open)." in html
    assert "Latest window (2, still open)" in html and "0.05 per window (Benjamini–Hochberg)" in html


def test_a_real_monitor_snapshot_of_a_covariate_shift():
    """The monitor's own snapshot (assay.monitor) of a planted shift: every window with alarms is listed with
    every alarm message; a p-value test is drawn as -log10 of its BH-adjusted p-value against -log10(FDR),
    and each of its rings (the monitor's alarms) lies on or above that line: the drawing agrees with the
    Benjamini-Hochberg decision."""
    snapshot = _monitor_snapshot()
    windows = snapshot["windows"]
    assert len(windows) == 9 and all(w["alarms"] for w in windows[6:]), "the shifted windows alarm"
    html = render_dashboard(snapshot)
    text = " ".join("".join(_parse(html).text).split())
    assert f"ALARM: {len(windows[-1]['alarms'])} alarms in the latest window (8" in text
    listed = re.findall(r'<li><span class="when">window (\d+) ', html)
    assert [int(i) for i in listed] == [w["index"] for w in reversed(windows) if w["alarms"]]
    for w in windows:
        for message in w["alarms"]:
            assert " ".join(message.split()) in text
    name = "embedding[0]"
    alarmed = [w["index"] for w in windows for t in w["tests"] if t["name"] == name and t["alarm"]]
    assert alarmed
    svg = next(g for g in _svgs(html) if (g.get("aria-label") or "").startswith(name + " "))
    ns = "{http://www.w3.org/2000/svg}"
    assert any(t.text == "\u2212log10 adjusted p" for t in svg.iter(f"{ns}text"))
    rings = svg.find(f".//{ns}g[@class='alarms']")
    assert rings is not None and len(rings) == len(alarmed)
    line = svg.find(f".//{ns}path[@id='{rings.get('id', '').replace('alarms', 'series-1')}']")
    assert line is not None
    fdr_line = _path_points(line.get("d", ""))
    assert np.ptp(fdr_line[:, 1]) < 0.11  # a horizontal line at -log10(FDR)
    assert all(float(c.get("cy", "nan")) <= fdr_line[0, 1] + 0.1 for c in rings)  # SVG y grows downwards


def _path_points(d: str) -> np.ndarray:
    return np.array([[float(v) for v in pair.split(",")] for pair in re.findall(r"-?[\d.]+,-?[\d.]+", d)])


def test_accuracy_bands_enclose_their_estimates():
    """ATC, DoC and realized accuracy each get a CI band (a closed path) around its line: every vertex of the
    line lies inside the band's polygon (matplotlib's point-in-polygon test), none of a line without a CI."""
    from matplotlib.path import Path as Polygon

    rng = np.random.default_rng(3)
    windows = [_window(i, accuracy=float(0.9 - 0.004 * i + rng.normal(0, 0.01))) for i in range(40)]
    windows[5]["realized_accuracy"] = None  # labels missing for a window: the line joins across it
    svg = next(s for s in _svgs(render_dashboard(_snapshot(windows))) if "Accuracy" in (s.get("aria-label") or ""))
    ns = "{http://www.w3.org/2000/svg}"
    for i in range(3):
        band = svg.find(f".//{ns}path[@id='d-accuracy-band-{i}']")
        line = svg.find(f".//{ns}path[@id='d-accuracy-series-{i}']")
        assert band is not None and line is not None and band.get("d", "").endswith("Z")
        outline = _path_points(band.get("d", ""))
        polygon = Polygon(np.vstack([outline, outline[:1]]), closed=True)  # (closed: the last vertex is ignored)
        centre = _path_points(line.get("d", ""))
        assert len(centre) >= 10 and line.get("d", "").count("M") == 1  # one unbroken line
        centre[0, 0] += 0.3  # the line's ends lie on the band's vertical ends: nudged inside
        centre[-1, 0] -= 0.3
        assert all(polygon.contains_point(tuple(point)) for point in centre)
        shifted = centre + [0.0, 40.0]  # 40 px below: outside every band (they are about 20 px high)
        assert not any(polygon.contains_point(tuple(point)) for point in shifted)
    assert svg.find(f".//{ns}path[@id='d-accuracy-band-3']") is None  # the reference line has no band
    assert svg.find(f".//{ns}path[@id='d-accuracy-series-3']") is not None


def test_empty_and_partial_snapshots_render():
    empty = render_dashboard({})
    assert "No monitoring window yet" in empty and "Nothing to plot yet" in empty and "No rollout" in empty
    assert "assay.monitor.snapshot/1" in empty  # the note that the schema is missing
    assert not _svgs(empty)
    starting = render_dashboard(_snapshot([_window(0, insufficient=True), _window(1, insufficient=True)]))
    assert "The latest window (1) has too little data to test." in starting
    assert "No drift test has run yet: every window so far had too little data" in starting
    assert "d-traffic-insufficient-0" in starting and "d-traffic-insufficient-1" not in starting  # one merged span
    junk = {"schema": "assay.monitor.snapshot/1", "model": None, "reference": "x", "window": [1],
            "traffic": [None, {"start": "a"}, {"start": T0, "end": T0 + 60}], "rollout": None,
            "windows": [None, {"index": 0}, {"index": 1, "start": T0, "end": None, "tests": [None, {"name": None}],
                                             "estimated_accuracy": {"value": "high", "ci": "wide"},
                                             "ood_rate": {"value": math.nan}, "alarms": "not a list"}],
            "alias_history": {"not": "a list"}, "events": [{"time": 1e300, "message": None}]}
    html = render_dashboard(junk)
    assert "No rollout in progress" in html and "window 1" not in html.split('id="alarms"')[1].split("</section>")[0]
    for svg in _svgs(html):
        assert svg is not None
    with pytest.raises(TypeError):
        render_dashboard(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_refresh_meta_and_no_external_reference(tmp_path):
    html = render_dashboard(_planted_shift(), refresh_s=15)
    page = _parse(html)
    metas = {a.get("http-equiv"): a.get("content") for t, a in page.tags if t == "meta" and a.get("http-equiv")}
    assert metas["refresh"] == "15"
    assert "default-src 'none'" in (metas["Content-Security-Policy"] or "")
    links = [v for _, a in page.tags for k, v in a.items() if k in ("href", "src", "action") and v]
    assert all(v.startswith("#") for v in links), links
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) == {"http://www.w3.org/2000/svg"}
    still = render_dashboard(_planted_shift(), refresh_s=None)
    assert 'http-equiv="refresh"' not in still
    for bad in (0, -5, 2.5, True, "10"):
        with pytest.raises(OptionError):
            render_dashboard({}, refresh_s=bad)  # type: ignore[arg-type]
    out = write_dashboard(_planted_shift(), tmp_path / "sub" / "dashboard.html")
    assert out.read_text() == still


def test_five_hundred_windows_stay_small():
    """500 windows of 40 tests each (two with alarms) render to a few hundred KB: at most MAX_TEST_PANELS tests
    are drawn, those with alarms first; 2000 windows plot only the latest MAX_WINDOWS."""
    rng = np.random.default_rng(1)

    def tests(i: int) -> list[dict[str, Any]]:
        out = []
        for k in range(40):
            statistic = float(rng.normal(0.05, 0.01)) + (0.3 if k in (7, 31) and i > 450 else 0.0)
            out.append({"name": f"feature_{k:02d}", "statistic": statistic, "threshold": 0.1, "p_value": None,
                        "p_adjusted": None, "method": "normalised W1", "alarm": statistic > 0.1})
        return out

    windows = [_window(i, tests=tests(i), labelled=i % 7 == 0) for i in range(500)]
    html = render_dashboard(_snapshot(windows))
    assert len(html.encode()) < 400_000, len(html.encode())
    panels = re.findall(r'<figure class="plot" id="f-test-\d+" data-alarms="(\d+)">', html)
    assert len(panels) == MAX_TEST_PANELS and [int(p) for p in panels[:2]] == [49, 49]
    assert f"{40 - MAX_TEST_PANELS} more tests without alarms are not plotted" in html
    assert len(_parse(html).tags) > 0 and len(_svgs(html)) == MAX_TEST_PANELS + 4
    long = [_window(i, seconds=10.0) for i in range(2000)]
    html = render_dashboard(_snapshot(long, traffic=[]))
    assert f"The plots show the latest {MAX_WINDOWS} of 2000 windows." in html
    assert len(html.encode()) < 400_000


def test_time_ticks_follow_the_clock():
    hour = time_ticks(T0, T0 + 3600, 6)  # 10-minute steps, on the clock
    assert hour.labels == ["00:00", "00:10", "00:20", "00:30", "00:40", "00:50", "01:00"]
    seconds = time_ticks(T0 + 5, T0 + 65, 4)
    assert seconds.labels == ["00:00:15", "00:00:30", "00:00:45", "00:01:00"]
    days = time_ticks(T0, T0 + 3 * 86400, 4)
    assert days.labels == ["2025-12-01", "2025-12-02", "2025-12-03", "2025-12-04"]
    across = time_ticks(T0 + 20 * 3600, T0 + 44 * 3600, 4)  # over midnight: the date is kept; 6-hour steps
    assert across.labels == ["12-02 00:00", "12-02 06:00", "12-02 12:00", "12-02 18:00"]


# --------------------------------------------------------------------------------------------- browser


class _EventLog(list):
    """The browser's event queue that also keeps every event seen (``wait_event`` drops those it passes)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def append(self, event: dict[str, Any]) -> None:
        self.seen.append(event)
        super().append(event)


def _problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and log errors (CSP violations, failed loads) among CDP events."""
    out = []
    for e in events:
        params = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            out.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif e["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
        elif e["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(f"log: {params['entry'].get('text')}")
    return out


def _load(browser: Chromium, path: Path, width: int) -> tuple[Any, list[str]]:
    """Open ``path`` in a fresh tab with console and log reporting on; (page, problems seen while loading)."""
    log = _EventLog()
    browser._events = log
    page = browser.new_page(width=width)
    page.send("Runtime.enable")
    page.send("Log.enable")
    page.goto(path.resolve().as_uri())
    page.evaluate("new Promise(r => setTimeout(() => r(true), 200))")  # late errors arrive too
    browser.send("Browser.getVersion")  # drains events that came meanwhile
    return page, _problems([e for e in log.seen if e.get("sessionId") == page.session])


def _check_page(browser: Chromium, path: Path, name: str, alarmed_windows: int) -> list[str]:
    """At 1400 and 800 px: no console error, exception or fetch; the alarm banner, the alarm list and the
    visible rings of the first drift panel; a screenshot; and the layout problems found (test_pages' rules)."""
    from test_pages import layout_problems

    problems = []
    for width in (1400, 800):
        page, seen = _load(browser, path, width)
        assert not seen, seen
        assert page.evaluate("performance.getEntriesByType('resource').length") == 0  # nothing fetched
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        assert page.evaluate("document.querySelector('#verdict').innerText").startswith("ALARM")
        assert page.evaluate("document.querySelectorAll('#alarms li').length") == alarmed_windows
        rings = page.evaluate("[...document.querySelectorAll('#d-test-0-alarms circle')].map(c => {"
                              "const b = c.getBoundingClientRect(); return b.width > 0 && b.height > 0; })")
        assert rings and all(rings), "every alarm ring is drawn, visible"
        problems += layout_problems(page.evaluate(LAYOUT_PROBE), f"{name} at {width} px")
        shot = page.screenshot(ARTIFACTS / "dashboard" / f"{name}-{width}.png")
        assert shot.stat().st_size > 10_000
    return problems


@pytest.mark.skipif(not available(), reason="no headless browser: /usr/bin/chromium is not installed "
                                            "(apt-get install chromium; or set ASSAY_CHROMIUM)")
def test_dashboard_in_a_real_browser_shows_the_planted_shift(tmp_path):
    """The scipy-measured planted shift (every detail checked) and a real monitor's snapshot of a covariate
    shift, each at two widths; an empty snapshot; and a deliberately broken page, to show the console check
    catches errors."""
    snapshot = _planted_shift()
    snapshot["events"].append({"time": T0 + 999, "kind": "alarm", "message": EVIL})  # must stay text
    page_file = write_dashboard(snapshot, tmp_path / "dashboard.html", refresh_s=3600)
    monitored = _monitor_snapshot()
    monitor_file = write_dashboard(monitored, tmp_path / "monitor.html", refresh_s=3600)
    broken = tmp_path / "broken.html"  # the detector works: a page that logs an error and loads a missing file
    broken.write_text("<!DOCTYPE html><title>x</title><script>console.error('planted'); undefinedCall();</script>"
                      "<img src='missing.png'>")
    with Chromium() as browser:
        _, seen = _load(browser, broken, 800)
        assert any("planted" in p for p in seen) and any("exception" in p for p in seen), seen
        problems = _check_page(browser, page_file, "planted-shift", 8)
        page, _ = _load(browser, page_file, 1400)
        assert page.evaluate("document.querySelector('meta[http-equiv=refresh]').content") == "3600"
        banner = page.evaluate("document.querySelector('#verdict').innerText")
        assert "latest window (23)" in banner
        alarms = page.evaluate("[...document.querySelectorAll('#alarms li')].map(li => li.innerText)")
        assert all("pixel_mean: drift" in a for a in alarms)
        assert page.evaluate("document.querySelectorAll('#d-test-0-alarms circle').length") == 8
        assert EVIL in page.evaluate("document.querySelector('#events').innerText")
        problems += _check_page(browser, monitor_file, "monitor", sum(bool(w["alarms"]) for w in monitored["windows"]))
        empty, seen = _load(browser, write_dashboard({}, tmp_path / "empty.html"), 800)
        assert not seen, seen
        assert "No monitoring window yet" in empty.evaluate("document.body.innerText")
        empty.screenshot(ARTIFACTS / "dashboard" / "empty-800.png")
    assert not problems, "\n".join(problems)
