"""Writing an evaluation's evidence bundle: evidence.json, predictions.npz, reference.npz, the reports, and
the manifest, into a folder Assay may write (see :mod:`assay.evidence.output`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from assay.evaluation.pipeline import EvaluationRun

__all__ = ["write_evaluation"]


def write_evaluation(run: EvaluationRun, out: str | os.PathLike[str],
                     extra_files: dict[str, str | os.PathLike[str]] | None = None, *,
                     inputs: Sequence[Path] = (), force: bool = False) -> Path:
    """Write the bundle: evidence.json, predictions.npz, reference.npz, report.html, report.md (plus copies of
    ``extra_files``, e.g. the model). ``out`` may replace only an Assay evaluation bundle (any Assay output
    with ``force``), and may not be, contain or lie inside any of ``inputs``."""
    from assay.evidence.bundle import write_bundle
    from assay.report import render_html, render_markdown

    return write_bundle(out, run.evidence, run.predictions(),
                        renderers={"report.html": render_html, "report.md": render_markdown},
                        extra_arrays={"reference.npz": run.reference().to_arrays()}, extra_files=extra_files,
                        inputs=inputs, force=force)
