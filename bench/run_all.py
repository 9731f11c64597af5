"""Run every benchmark and record their output in bench/RESULTS.md (with the command that made it)."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = ["bench_startup.py", "bench_engine.py", "bench_bootstrap.py", "bench_report.py", "bench_suite.py",
           "bench_corruptions.py", "bench_attacks.py", "bench_ood.py", "bench_slices.py", "bench_compare_stats.py",
           "bench_compare.py", "bench_latency.py", "bench_quantization.py", "bench_compress.py",
           "bench_fairness_coverage.py --reps 100", "bench_registry.py", "bench_prediction_log.py",
           "bench_serve.py", "bench_monitor.py", "bench_labeling.py", "bench_audit.py",
           "bench_scan.py", "bench_backdoor.py --seeds 5", "bench_ray.py",
           "bench_budget.py --images 3000 --seeds 5", "bench_active_testing.py"]


def main() -> int:
    sections = []
    for bench in BENCHES:
        print(f"== {bench}", flush=True)
        proc = subprocess.run([sys.executable, *bench.split()], cwd=HERE, capture_output=True, text=True)
        output = (proc.stdout + (proc.stderr if proc.returncode else "")).strip()
        print(output, flush=True)
        sections.append(f"## {bench}\n\n```\n{output}\n```\n")
        if proc.returncode:
            return proc.returncode
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (HERE / "RESULTS.md").write_text(
        "# Benchmark results\n\n"
        f"Produced by `make bench` (= `.venv/bin/python bench/run_all.py`) on {stamp}. Each benchmark measures\n"
        "its baseline in the same run; read the ratios, not the absolute seconds (shared, noisy machines).\n\n"
        + "\n".join(sections)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
