"""The evaluation pipeline (layer 6): what ``assay evaluate`` does, as library calls that compare, select and
compress build on. ``assay.api`` is the thin public facade over it."""

from assay.evaluation.inputs import (
    align_classes,
    as_dataset,
    as_model,
    check_shapes,
    evaluation_inputs,
    input_findings,
    labelled,
)
from assay.evaluation.pipeline import EvaluationRun, resolve_checks, run_evaluation
from assay.evaluation.writing import write_evaluation

__all__ = [
    "EvaluationRun",
    "align_classes",
    "as_dataset",
    "as_model",
    "check_shapes",
    "evaluation_inputs",
    "input_findings",
    "labelled",
    "resolve_checks",
    "run_evaluation",
    "write_evaluation",
]
