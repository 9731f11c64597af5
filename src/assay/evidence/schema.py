"""The evidence bundle schema: the contract between Assay commands.

``evidence.json`` is an :class:`Evidence`; it is versioned by ``schema_version`` (bump the major part
on breaking changes). ``assay schema`` prints the JSON Schema generated from these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SCHEMA_VERSION",
    "VERDICT_SEVERITY",
    "DataInfo",
    "EnvironmentInfo",
    "Evidence",
    "Finding",
    "Metric",
    "ModelInfo",
    "Section",
    "Severity",
    "Verdict",
]

# 1.1: run-level findings (Evidence.findings); 1.2: Finding.sets_verdict, Section.lead_tables (both optional)
SCHEMA_VERSION = "1.2"

Severity = Literal["info", "warning", "critical"]
Verdict = Literal["pass", "warn", "fail", "info"]

#: The finding severity that explains each judging verdict (pass and info need no cause).
VERDICT_SEVERITY: dict[str, Severity] = {"warn": "warning", "fail": "critical"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Metric(_Strict):
    """One scalar with its uncertainty and the exact configuration that produced it."""

    value: float | None = Field(description="Point estimate on the full evaluation set (None if undefined).")
    ci_low: float | None = Field(default=None, description="Lower end of the confidence interval.")
    ci_high: float | None = Field(default=None, description="Upper end of the confidence interval.")
    n: int = Field(description="Number of samples the metric was computed on.")
    method: str = Field(description="How the CI was obtained, e.g. 'bootstrap-percentile(B=1000, seed=0)'.")
    config: dict[str, Any] = Field(default_factory=dict, description="Exact metric configuration (bins, norm, ...).")


class Finding(_Strict):
    """Something a person should know: a problem, a caveat, or how a number was obtained."""

    severity: Severity
    message: str
    evidence: str | None = Field(default=None, description="Pointer to the metric or plot backing the finding.")
    sets_verdict: bool = Field(default=False, description="This finding is why its section has the verdict it has; "
                                                          "reports show it next to the verdict.")


class Section(_Strict):
    """The output of one check (trust dimension)."""

    name: str
    title: str
    verdict: Verdict
    summary: str = ""
    metrics: dict[str, Metric] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="Row-oriented tables, e.g. per-class metrics."
    )
    plots: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Data behind plots (reliability diagram, confusion matrix, ...)."
    )
    config: dict[str, Any] = Field(default_factory=dict)
    lead_tables: list[str] = Field(
        default_factory=list, description="Names of tables that summarise the section (e.g. one per OOD set): "
                                          "reports show them first and fold the full metric list, kept whole here.")

    def verdict_reasons(self) -> list[Finding]:
        """The findings that explain a ``warn``/``fail`` verdict, most severe first; ``[]`` for pass and info.

        The warning/critical findings the check marked ``sets_verdict``; failing that (older bundles, checks
        that mark none), those whose severity matches the verdict (warning for warn, critical for fail), then
        any warning or critical ones; failing that, a finding made from the summary, so a verdict is never
        shown without a stated cause.
        """
        wanted = VERDICT_SEVERITY.get(self.verdict)
        if wanted is None:
            return []
        rank = {"critical": 0, "warning": 1, "info": 2}
        for candidates in ([f for f in self.findings if f.sets_verdict and f.severity != "info"],
                           [f for f in self.findings if f.severity == wanted],
                           [f for f in self.findings if f.severity != "info"]):
            if candidates:
                return sorted(candidates, key=lambda f: rank[f.severity])
        message = self.summary or f"the check gave '{self.verdict}' without naming a finding"
        return [Finding(severity=wanted, message=message, evidence=self.name, sets_verdict=True)]


class ModelInfo(_Strict):
    """What was evaluated.

    ``format`` is a key of the model format registry (:data:`assay.models.formats.FORMATS`: ``onnx``,
    ``torchscript``, ``torch-export``, ``factory``, ...); the schema checks only its spelling, so a bundle
    written with a format this installation lacks still reads. ``path`` is the model file or the factory
    (``package.module:callable``); a factory's weights file is ``weights``. Bundles written before
    ``weights`` existed stored ``"SPEC --weights FILE"`` in ``path``: they are read back split.
    """

    path: str = Field(description="The model file, or the factory 'package.module:callable'.")
    weights: str | None = Field(default=None, description="The weights file a factory was loaded with.")
    format: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$",
                        description="Key of the model format registry: onnx, torchscript, torch-export, factory, ...")
    sha256: str
    input_shape: list[int | None] = Field(description="Input shape; None marks a free (batch) dimension.")
    input_dtype: str
    num_classes: int
    class_names: list[str]
    outputs: Literal["logits", "probabilities"] = "logits"
    feature_source: str | None = Field(default=None, description="Layer/output whose embedding `features` returns.")
    declared_class_names: list[str] | None = Field(
        default=None, description="Class names the model file itself declares (ONNX metadata), in output order; "
                                  "the data's labels are aligned to them by name.")
    untrained: bool = Field(default=False, description="A factory built without weights (random initial weights), "
                                                        "evaluated on purpose (--untrained).")

    @model_validator(mode="before")
    @classmethod
    def _split_joined_weights(cls, data: Any) -> Any:
        """Old bundles: ``path="SPEC --weights FILE"`` (format ``factory``) -> ``path=SPEC, weights=FILE``."""
        if isinstance(data, dict) and data.get("format") == "factory" and data.get("weights") is None:
            path = data.get("path")
            if isinstance(path, str) and " --weights " in path:
                spec, weights = path.split(" --weights ", 1)
                data = {**data, "path": spec, "weights": weights}
        return data


class DataInfo(_Strict):
    """What it was evaluated on."""

    name: str
    source: str
    modality: Literal["image", "tabular", "text"]
    fingerprint: str
    n: int
    num_classes: int
    class_names: list[str]
    input_shape: list[int]
    metadata_columns: list[str] = Field(default_factory=list)


class EnvironmentInfo(_Strict):
    """Where it ran."""

    assay: str
    python: str
    platform: str
    numpy: str
    torch: str | None = None
    onnxruntime: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    isa_flags: list[str] = Field(default_factory=list)


class Evidence(_Strict):
    """Root of ``evidence.json``."""

    schema_version: str = SCHEMA_VERSION
    created_at: str
    model: ModelInfo
    data: DataInfo
    environment: EnvironmentInfo
    seed: int
    config: dict[str, Any]
    timings: dict[str, float] = Field(default_factory=dict, description="Wall-clock seconds per stage.")
    sections: dict[str, Section] = Field(default_factory=dict)
    findings: list[Finding] = Field(
        default_factory=list,
        description="Run-level findings every report shows in its header, whatever the section: how the data "
                    "was read (scaling, class order, value range), the model's provenance, cache problems.")

    def metric(self, section: str, key: str) -> Metric | None:
        """``sections[section].metrics[key]`` when present and measured (value not None), else None."""
        sec = self.sections.get(section)
        found = sec.metrics.get(key) if sec is not None else None
        return found if found is not None and found.value is not None else None

    @property
    def verdict(self) -> Verdict:
        """Worst section verdict (fail > warn > pass > info); run-level warnings make it at least warn."""
        order = {"info": 0, "pass": 1, "warn": 2, "fail": 3}
        verdicts = [s.verdict for s in self.sections.values()]
        if any(f.severity != "info" for f in self.findings):
            verdicts.append("warn")  # a run-level warning (e.g. images outside [0, 1]) is never "all clear"
        return max(verdicts, key=order.__getitem__) if verdicts else "info"
