"""Gate policies: which regressions fail a comparison, read from YAML with line-numbered errors.

A policy is a mapping of rules plus global settings::

    confidence: 0.95          # two-sided CI level; a rule fails only when its whole CI is past the limit
    correction: holm          # per-class / per-slice family: holm (FWER) or bh (FDR)
    accuracy: {max_drop: 0.005}
    negative_flip_rate: {max: 0.01}
    per_class_accuracy: {max_drop: 0.03}
    ece: {max_increase: 0.01}
    latency_p95_ms: {max_increase_pct: 10}

Rules may also sit under a ``rules:`` key. Each rule is one of three kinds: a *drop* limit on a
higher-is-better delta (candidate minus baseline), an *increase* limit on a lower-is-better delta, or a
*max* on a rate of the pair (negative flips). ``*_pct`` limits are relative to the baseline's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assay.errors import UserError

__all__ = ["DEFAULT_POLICY", "KNOWN_METRICS", "Policy", "Rule", "load_policy", "parse_policy"]

RuleKind = Literal["max_drop", "max_increase", "max", "max_increase_pct"]


@dataclass(frozen=True)
class MetricSpec:
    """What a metric name means in a policy: the limits it accepts and where its numbers come from."""

    description: str
    limits: tuple[RuleKind, ...]
    fraction: bool = True  # a value in [0, 1] (limits too); False for NLL, milliseconds, megabytes


#: Every metric a policy may name. Paired metrics come from the two bundles' predictions.npz; the rest from
#: their evidence sections (compared unpaired, as the bundles hold no per-sample results for them).
KNOWN_METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec("top-1 accuracy delta (paired bootstrap)", ("max_drop",)),
    "macro_f1": MetricSpec("macro-F1 delta (paired bootstrap)", ("max_drop",)),
    "negative_flip_rate": MetricSpec("share of samples the baseline got right and the candidate wrong", ("max",)),
    "per_class_accuracy": MetricSpec("accuracy delta of every class (paired, family-corrected)", ("max_drop",)),
    "per_slice_accuracy": MetricSpec("accuracy delta of every slice of every --slice-by column (paired, "
                                     "family-corrected)", ("max_drop",)),
    "ece": MetricSpec("expected calibration error delta (paired bootstrap)", ("max_increase",)),
    "nll": MetricSpec("mean negative log-likelihood delta (paired bootstrap)", ("max_increase",), fraction=False),
    "robust_accuracy": MetricSpec("adversarial robust accuracy delta (unpaired, from the adversarial sections)",
                                  ("max_drop",)),
    "mean_corruption_accuracy": MetricSpec("mean corruption accuracy delta (unpaired, from the corruption "
                                           "sections)", ("max_drop",)),
    "latency_p95_ms": MetricSpec("p95 latency at batch 1 (from the efficiency sections)",
                                 ("max_increase_pct", "max_increase"), fraction=False),
    "model_size_mb": MetricSpec("model file size (from the efficiency sections)", ("max_increase_pct", "max_increase"),
                                fraction=False),
}

_GLOBALS = {"confidence", "correction", "rules"}
_CORRECTIONS = ("holm", "bh")


@dataclass(frozen=True)
class Rule:
    metric: str
    kind: RuleKind
    limit: float

    def describe(self) -> str:
        unit = "%" if self.kind == "max_increase_pct" else ""
        words = {"max_drop": "drop at most", "max_increase": "increase at most", "max": "at most",
                 "max_increase_pct": "increase at most"}[self.kind]
        return f"{self.metric}: {words} {self.limit:g}{unit}"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    confidence: float = 0.95
    correction: Literal["holm", "bh"] = "holm"
    source: str = "default policy"
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "confidence": self.confidence, "correction": self.correction,
                "rules": {r.metric: {r.kind: r.limit} for r in self.rules}}


#: Applied without --policy. Chosen so that noise alone never fails it (a rule fails only when its whole CI
#: is past the limit) while a real drop of one class or of calibration does. No negative-flip limit by
#: default: the tolerable share of flips depends on the application, so flips are reported, not gated.
DEFAULT_POLICY = Policy(
    rules=(Rule("accuracy", "max_drop", 0.01), Rule("per_class_accuracy", "max_drop", 0.05),
           Rule("ece", "max_increase", 0.02), Rule("latency_p95_ms", "max_increase_pct", 20.0)),
)


def _error(what: str, source: str, node: Any, fix: str) -> UserError:
    line = f":{node.start_mark.line + 1}" if node is not None and getattr(node, "start_mark", None) else ""
    return UserError(what, where=f"{source}{line}", fix=fix)


def _number(node: Any, source: str, what: str) -> float:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        raise _error(f"{what} must be a number, got {getattr(node, 'value', node)!r}", source, node,
                     fix="write a plain number, e.g. 0.01")
    value = float(yaml.safe_load(yaml.serialize(node)))
    if not math.isfinite(value):
        raise _error(f"{what} must be finite, got {node.value}", source, node, fix="write a finite number")
    return value


def _rule(metric_node: Any, body: Any, source: str) -> Rule:
    import yaml

    metric = metric_node.value
    if metric not in KNOWN_METRICS:
        raise _error(f"unknown metric {metric!r} in the policy", source, metric_node,
                     fix=f"use one of: {', '.join(KNOWN_METRICS)}")
    spec = KNOWN_METRICS[metric]
    if not isinstance(body, yaml.MappingNode) or len(body.value) != 1:
        raise _error(f"rule {metric!r} must be a mapping with exactly one limit", source, body,
                     fix=f"e.g. {metric}: {{{spec.limits[0]}: 0.01}}")
    key_node, value_node = body.value[0]
    if key_node.value not in spec.limits:
        raise _error(f"{metric!r} does not accept the limit {key_node.value!r}", source, key_node,
                     fix=f"use {' or '.join(spec.limits)}")
    limit = _number(value_node, source, f"{metric}.{key_node.value}")
    kind: RuleKind = key_node.value
    upper = 1.0 if spec.fraction and kind != "max_increase_pct" else math.inf
    if not 0.0 <= limit <= upper:
        raise _error(f"{metric}.{kind} = {limit:g} is out of range [0, {upper:g}]", source, value_node,
                     fix="rates and accuracies are fractions in [0, 1] (0.01 = one point); percentages are >= 0")
    return Rule(metric, kind, limit)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate policy YAML; every error names the line (``source:line``)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise UserError(f"the policy is not valid YAML: {getattr(exc, 'problem', None) or exc}", where=where,
                        fix="check indentation and the `key: {limit: value}` form") from None
    if root is None:
        raise UserError("the policy file is empty", where=source, fix="add at least one rule, e.g. accuracy: {max_drop: 0.01}")
    if not isinstance(root, yaml.MappingNode):
        raise _error("the policy must be a mapping of rules", source, root, fix="e.g. accuracy: {max_drop: 0.01}")
    entries = list(root.value)
    confidence, correction = 0.95, "holm"
    rule_entries: list[tuple[Any, Any]] = []
    seen: set[str] = set()
    for key_node, value_node in entries:
        key = key_node.value
        if key in seen:
            raise _error(f"{key!r} appears twice in the policy", source, key_node, fix="keep one entry per key")
        seen.add(key)
        if key == "confidence":
            confidence = _number(value_node, source, "confidence")
            if not 0.5 <= confidence < 1.0:
                raise _error(f"confidence must lie in [0.5, 1), got {confidence:g}", source, value_node,
                             fix="use e.g. 0.95")
        elif key == "correction":
            correction = getattr(value_node, "value", None)
            if correction not in _CORRECTIONS:
                raise _error(f"correction must be one of {', '.join(_CORRECTIONS)}, got {correction!r}", source,
                             value_node, fix="holm controls the family-wise error; bh the false discovery rate")
        elif key == "rules":
            if not isinstance(value_node, yaml.MappingNode):
                raise _error("'rules' must be a mapping of metric: {limit: value}", source, value_node,
                             fix="e.g. rules: {accuracy: {max_drop: 0.01}}")
            rule_entries.extend(value_node.value)
        else:
            rule_entries.append((key_node, value_node))
    rules, names = [], set()
    for key_node, value_node in rule_entries:
        if key_node.value in names:
            raise _error(f"{key_node.value!r} appears twice in the policy", source, key_node,
                         fix="keep one rule per metric")
        names.add(key_node.value)
        rules.append(_rule(key_node, value_node, source))
    if not rules:
        raise UserError("the policy has no rules", where=source, fix="add at least one, e.g. accuracy: {max_drop: 0.01}")
    return Policy(rules=tuple(rules), confidence=confidence, correction=correction, source=source)  # type: ignore[arg-type]


def load_policy(path: str | Path | None) -> Policy:
    """The policy in ``path``, or :data:`DEFAULT_POLICY` when None."""
    if path is None:
        return DEFAULT_POLICY
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no policy file at {p}", where="--policy", fix="give the path of a YAML policy")
    return parse_policy(p.read_text(encoding="utf-8"), source=str(p))
