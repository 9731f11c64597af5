"""Report: size of the demo's report.html and time to render it, next to the evaluation it reports on
(measured in the same run, so the ratio is what matters on a noisy machine).

The plots used to be drawn with matplotlib; they are now written as SVG directly (assay.report.svg). The
matplotlib renderer is no longer in the package, so it is loaded from the git history (the last commit
that had it) and swapped in for the same ``render_html`` call: both paths render the same evidence in
this run, interleaved. Without git, the number recorded for it in bench/RESULTS.md is quoted instead.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

from _common import machine, timed
from assay.demo import run_demo
from assay.report import html as html_module
from assay.report import render_html, render_markdown

MATPLOTLIB_PLOTS_COMMIT = "e58411a6e373"  # last commit whose src/assay/report/plots.py drew with matplotlib
RECORDED_MATPLOTLIB_SECONDS = 1.88  # bench/RESULTS.md, render_html of the demo before the change
TARGET_SECONDS = 0.3
ROUNDS = 5


def _matplotlib_renderer() -> Callable[..., str] | None:
    """``render_plot`` of the matplotlib implementation, from git history (None without git/matplotlib)."""
    root = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(["git", "show", f"{MATPLOTLIB_PLOTS_COMMIT}:src/assay/report/plots.py"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
        import matplotlib  # noqa: F401
    except (OSError, subprocess.CalledProcessError, ImportError):
        return None
    module = types.ModuleType("assay_report_plots_matplotlib")
    exec(compile(source, "plots_matplotlib.py", "exec"), module.__dict__)  # our own file from our history
    return module.render_plot


def _render_with(render_plot: Callable[..., str], evidence) -> str:
    original = html_module.render_plot
    html_module.render_plot = render_plot
    try:
        return render_html(evidence)
    finally:
        html_module.render_plot = original


def _fresh_process_seconds(code: str, repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = run_demo(Path(tmp) / "demo", progress=False, cache_dir=Path(tmp) / "cache")
        demo_seconds = time.perf_counter() - t
        bundle = Path(tmp) / "demo"
        html_path = bundle / "report.html"
        size = html_path.stat().st_size
        html = html_path.read_text()
        evidence = run.evidence
        render_html(evidence)  # warm: template compiled
        old_render = _matplotlib_renderer()
        new_runs, old_runs = [], []
        old_html = None
        if old_render is not None:
            old_html = _render_with(old_render, evidence)  # warm: matplotlib imported, font cache read
        for _ in range(ROUNDS):  # interleaved, so both paths see the same machine load
            new_runs.append(timed(lambda: render_html(evidence), repeats=1)[0])
            if old_render is not None:
                old_runs.append(timed(lambda: _render_with(old_render, evidence), repeats=1)[0])
        # what a command pays for the report in a new process: imports + template + plots
        cold = _fresh_process_seconds(
            "from assay.evidence.bundle import read_evidence; from assay.report import render_html; "
            f"render_html(read_evidence({str(bundle)!r}))")
        read_only = _fresh_process_seconds(
            f"from assay.evidence.bundle import read_evidence; read_evidence({str(bundle)!r})")
    t_html = statistics.median(new_runs)
    t_md, _ = timed(lambda: render_markdown(evidence))
    evaluate_seconds = evidence.timings["total"]
    print(f"# report: demo (digits test split, {evidence.data.n} samples) — {machine()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    external = html.count('src="http') + html.count('href="http')
    print(f"report.html: {size / 1024:.0f} KiB, {html.count('<svg')} inline SVG plots, external URLs: {external}")
    print(f"render_html, SVG written directly: {t_html:.3f} s (runs {', '.join(f'{r:.3f}' for r in new_runs)}); "
          f"render_markdown: {t_md * 1000:.1f} ms")
    if old_runs:
        t_old = statistics.median(old_runs)
        assert old_html is not None
        print(f"render_html, matplotlib plots (commit {MATPLOTLIB_PLOTS_COMMIT}, same run, interleaved, matplotlib "
              f"already imported): {t_old:.3f} s (runs {', '.join(f'{r:.3f}' for r in old_runs)}); "
              f"its report.html: {len(old_html.encode()) / 1024:.0f} KiB")
        print(f"speed-up: {t_old / t_html:.1f}x")
    else:
        print(f"matplotlib path unavailable here (no git history or matplotlib); recorded before the change: "
              f"{RECORDED_MATPLOTLIB_SECONDS:.2f} s, speed-up {RECORDED_MATPLOTLIB_SECONDS / t_html:.1f}x")
    print(f"new process, read evidence.json + render_html: {cold:.2f} s (reading alone {read_only:.2f} s)")
    print(f"evaluate (load + inference + checks): {evaluate_seconds:.2f} s; "
          f"whole demo incl. training: {demo_seconds:.1f} s")
    print(f"render_html / evaluate: {t_html / evaluate_seconds:.3f}")
    print(f"target render_html <= {TARGET_SECONDS} s: {'met' if t_html <= TARGET_SECONDS else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
