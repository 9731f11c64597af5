"""The check protocol (:class:`Check`, its settings model, its :class:`Preparation`), the run configuration,
what every check receives (:class:`CheckContext`), and the helpers checks share to turn bootstrap samples into
Metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assay.data.dataset import Dataset
from assay.engine.cache import ViewOutput
from assay.engine.run import Outputs
from assay.engine.views import View
from assay.errors import OptionError
from assay.evidence.schema import Metric, Section
from assay.models.base import Model
from assay.stats.bootstrap import SharedWeights, clopper_pearson, percentile_ci, spawn_seed

__all__ = ["Check", "CheckConfig", "CheckContext", "EvaluateConfig", "PlanContext", "Preparation",
           "exact_interval_if_collapsed", "make_metric"]


class CheckConfig(BaseModel):
    """A check's own settings, nested in the run configuration (``EvaluateConfig.check(name)``).

    Field names are unique across checks (a test enforces it), so the flat keywords of
    ``assay.evaluate(..., severities=[1, 3])`` and the CLI's options map to exactly one check."""

    model_config = ConfigDict(extra="forbid")


class EvaluateConfig(BaseModel):
    """Settings of an evaluation run: the statistics every check shares, the training data (carried to
    every check), and each check's own settings nested under ``settings[name]``. Recorded in
    ``evidence.json`` as one flat mapping (``record()``), the layout earlier bundles have.

    Flat keywords are accepted and routed to the check that declares them:
    ``EvaluateConfig(seed=1, severities=[1, 3])`` sets ``check("corruption").severities``."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed for every randomized step (bootstrap, splits).")
    n_bootstrap: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples per CI.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of every interval.")
    ece_bins: int = Field(15, ge=2, le=1000, description="Bins for the ECE family (Guo et al. 2017 use 15).")
    batch_size: int = Field(256, ge=1, description="Inference batch size.")
    train_data: str | None = Field(None, description="Training data (labelled): carried to every check; fits the "
                                   "feature-based OOD detectors.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Each check's own settings, by check name.")
    budget: str | None = Field(None, description="Budget of a budgeted evaluation: 5m, 90s, 1h, 20000passes or 10% "
                               "(of the full run's passes); corruption, attack and OOD views are sampled within it "
                               "(assay.checks.budget).")
    budget_objective: Literal["widest", "total"] = Field(
        "widest", description="What the budget minimises: the widest interval, or the total variance.")

    if TYPE_CHECKING:
        # Flat check options (``severities=...``) are routed by the validator below from the check registry,
        # which a type checker cannot see: for it, the constructor takes any keyword.
        def __init__(self, **data: Any) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _nest_check_options(cls, data: Any) -> Any:
        """Route flat check options (``severities=...``) into ``settings[check]`` and build every check's
        config model (defaults for checks not mentioned); an unknown option names the known ones."""
        if not isinstance(data, dict):
            return data
        from assay.checks.registry import config_models, option_owners

        data = dict(data)
        given = data.pop("settings", None) or {}
        nested: dict[str, dict[str, Any]] = {}
        for name, value in given.items():
            nested[name] = value.model_dump() if isinstance(value, BaseModel) else dict(value)
        owners = option_owners()
        for key in [k for k in data if k not in cls.model_fields]:
            if key not in owners:
                known = sorted({*cls.model_fields, *owners} - {"settings"})
                raise OptionError(f"unknown evaluation option {key!r}", where=key,
                                  fix=f"use one of: {', '.join(known)}")
            nested.setdefault(owners[key], {})[key] = data.pop(key)
        models = config_models()
        unknown = sorted(set(nested) - set(models))
        if unknown:
            raise OptionError(f"no check is called {unknown[0]!r}", where="settings",
                              fix=f"choose from {', '.join(sorted(models))}")
        settings = {}
        for name, model in models.items():
            try:
                settings[name] = model.model_validate(nested.get(name, {}))
            except ValidationError as exc:
                first = exc.errors()[0]
                field = str(first["loc"][0]) if first["loc"] else name
                raise OptionError(f"invalid {field} ({name} check): {first['msg']}", where=field,
                                  fix=f"see the {name} check's options (assay evaluate --help)") from None
        data["settings"] = settings
        return data

    @field_validator("budget")
    @classmethod
    def _parse_budget(cls, value: str | None) -> str | None:
        """A budget that does not parse is an OptionError before any inference (the text is kept as given)."""
        if value is not None:
            from assay.engine.budget import parse_budget

            parse_budget(value)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _as_option_error(cls, data: Any, handler: Any) -> Any:
        """A shared setting out of range is an OptionError naming the parameter (``n_bootstrap``), like a
        check's; the CLI maps the name to its flag."""
        try:
            return handler(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "config"
            raise OptionError(f"invalid {field}: {first['msg']}", where=field,
                              fix=f"give {field} a value in its documented range") from None

    def check(self, name: str) -> Any:
        """The settings of check ``name`` (its :class:`CheckConfig` subclass)."""
        return self.settings[name]

    def __getattr__(self, name: str) -> Any:
        # Read access to a check's option by its flat name (``config.severities``), for callers written
        # before the options were nested. Checks read their own settings through ``check(name)``.
        settings = self.__dict__.get("settings") or {}
        for values in settings.values():
            if name in type(values).model_fields:
                return getattr(values, name)
        return super().__getattr__(name)  # type: ignore[misc]

    def record(self) -> dict[str, Any]:
        """One flat mapping of every setting (shared and per check), as ``evidence.json`` records it."""
        flat = self.model_dump(exclude={"settings"})
        for values in self.settings.values():
            flat.update(values.model_dump())
        return flat


@dataclass
class CheckContext:
    """Inputs of a check: cached outputs of every view, the evaluation data (labels, metadata), the training
    data when given, the run's config, and each check's prepared facts (``facts[check name]``).

    ``calibration`` holds (logits, labels) of separate calibration data when the user gave some.
    """

    outputs: Outputs
    dataset: Dataset
    config: EvaluateConfig
    calibration: tuple[np.ndarray, np.ndarray] | None = None
    views: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    baseline: Any = None  # Evidence of a baseline model, when given
    train: Dataset | None = None  # the training data, when given (labelled)
    _weights: SharedWeights | None = None

    def resample_weights(self) -> SharedWeights:
        """Bootstrap weights over the evaluation set, shared by all checks of the run (same resamples)."""
        if self._weights is None:
            self._weights = SharedWeights(len(self.dataset), self.config.n_bootstrap,
                                          spawn_seed(self.config.seed, "evaluation-set"))
        return self._weights

    @property
    def logits(self) -> np.ndarray:
        return self.outputs.clean.logits

    @property
    def labels(self) -> np.ndarray:
        assert self.dataset.y is not None, "checks over labels need a labelled dataset"
        return self.dataset.y


@dataclass
class PlanContext:
    """What a check may use to plan its forward passes, before any is run: the loaded model and data, the
    training data when given, and the pipeline's loader for further input sets (OOD, unlabeled), which
    loads them like ``--data`` and checks their shape against the model."""

    model: Model
    dataset: Dataset
    config: EvaluateConfig
    train: Dataset | None = None
    load_inputs: Callable[[str, str], Dataset] | None = None


@dataclass
class Preparation:
    """What a check asks the pipeline for. ``views``: its forward passes, planned before any runs (cached like
    the clean view); ``after_clean(clean) -> (views, facts)``: forward passes that depend on the clean outputs
    (attacks start from clean-correct points) and facts computed from them; ``measure() -> facts``: work after
    inference (latency timing); ``facts``: the check's own inputs (``ctx.facts[name]``); ``features``: it
    reads the clean view's (N, D) features; ``train_outputs``: it reads the model's outputs on the training
    data (then in ``ctx.facts["train_outputs"]``)."""

    views: list[View] = field(default_factory=list)
    after_clean: Callable[[ViewOutput], tuple[list[View], Any]] | None = None
    measure: Callable[[], Any] | None = None
    facts: Any = None
    features: bool = False
    train_outputs: bool = False


class Check:
    """One trust dimension: its name, its settings model, the input that turns it on, how it plans its
    forward passes (``prepare``, before any is run) and ``run(ctx) -> Section`` over cached outputs.

    Adding a check = one module with a subclass + one entry in ``assay.checks.registry`` (+ its CLI options).
    """

    name: ClassVar[str]
    Config: ClassVar[type[CheckConfig]] = CheckConfig
    #: The option that gives this check something to evaluate (None: it always has something). When set, the
    #: check runs whenever ``wanted`` says the option was given, and asking for it without is an error.
    needs: ClassVar[str | None] = None

    def wanted(self, settings: Any) -> bool:
        """True when the user gave this check's input (it then runs without being listed in ``checks``)."""
        return False

    def prepare(self, plan: PlanContext, settings: Any) -> Preparation:
        """Validate the check's options and inputs and plan its forward passes; a UserError here comes before
        any inference."""
        return Preparation()

    def run(self, ctx: CheckContext) -> Section:
        raise NotImplementedError


def make_metric(
    value: float,
    samples: np.ndarray | None,
    *,
    n: int,
    config: EvaluateConfig,
    method: str | None = None,
    metric_config: dict[str, Any] | None = None,
) -> Metric:
    """A Metric with a percentile CI from bootstrap ``samples`` (or no CI when samples is None)."""
    value_f = float(value) if value is not None and np.isfinite(value) else None
    if samples is None:
        lo = hi = None
        method = method or "point estimate (no interval)"
    else:
        lo, hi = percentile_ci(samples, config.confidence)
        lo = None if not np.isfinite(lo) else lo
        hi = None if not np.isfinite(hi) else hi
        method = method or (
            f"bootstrap percentile, {int(config.confidence * 100)}% (B={config.n_bootstrap}, seed={config.seed})"
        )
    return Metric(value=value_f, ci_low=lo, ci_high=hi, n=int(n), method=method, config=metric_config or {})


def exact_interval_if_collapsed(metric: Metric, successes: int, n: int, confidence: float) -> None:
    """Replace a collapsed bootstrap interval of a proportion (all or none right: every resample is
    identical) by the exact Clopper-Pearson interval, and say so in ``method``."""
    if metric.ci_low != metric.ci_high:
        return
    metric.ci_low, metric.ci_high = clopper_pearson(successes, n, confidence)
    metric.method = (f"Clopper-Pearson exact, {int(confidence * 100)}% (the bootstrap interval collapses "
                     f"when {successes} of {n} are right)")
