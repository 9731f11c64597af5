"""Report: size of the demo's report.html and time to render it, next to the evaluation it reports on
(measured in the same run, so the ratio is what matters on a noisy machine)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _common import machine, timed
from assay.demo import run_demo
from assay.report import render_html, render_markdown


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = run_demo(Path(tmp) / "demo", progress=False, cache_dir=Path(tmp) / "cache")
        demo_seconds = time.perf_counter() - t
        html_path = Path(tmp) / "demo" / "report.html"
        size = html_path.stat().st_size
        html = html_path.read_text()
    t_html, runs = timed(lambda: render_html(run.evidence))
    t_md, _ = timed(lambda: render_markdown(run.evidence))
    evaluate_seconds = run.evidence.timings["total"]
    print(f"# report: demo (digits test split, {run.evidence.data.n} samples) — {machine()}")
    external = html.count('src="http') + html.count('href="http')
    print(f"report.html: {size / 1024:.0f} KiB, {html.count('<svg')} inline SVG plots, external URLs: {external}")
    print(f"render_html: {t_html:.2f} s (runs {', '.join(f'{r:.2f}' for r in runs)}); render_markdown: {t_md * 1000:.1f} ms")
    print(f"evaluate (load + inference + checks): {evaluate_seconds:.2f} s; whole demo incl. training: {demo_seconds:.1f} s")
    print(f"render_html / evaluate: {t_html / evaluate_seconds:.2f}")


if __name__ == "__main__":
    sys.exit(main())
