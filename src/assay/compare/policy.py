"""Gate policies: which regressions fail a comparison, read from YAML with line-numbered errors.

A policy is a mapping of rules plus global settings::

    confidence: 0.95          # two-sided CI level; a rule fails only when its whole CI is past the limit
    correction: holm          # per-class / per-slice family: holm (FWER) or bh (FDR) over the exact p-values
    accuracy: {max_drop: 0.005}
    negative_flip_rate: {max: 0.01}
    per_class_accuracy: {max_drop: 0.03}
    ece: {max_increase: 0.01}
    latency_p95_ms: {max_increase_pct: 10}

Rules may also sit under a ``rules:`` key. Each rule is one of three kinds: a *drop* limit on a
higher-is-better delta (candidate minus baseline), an *increase* limit on a lower-is-better delta, or a
*max* on a rate of the pair (negative flips). ``*_pct`` limits are relative to the baseline's value.

A policy file is untrusted input, so reading it is bounded before any parsing: at most
:data:`MAX_POLICY_BYTES` (checked with ``stat``), UTF-8 only, at most :data:`MAX_POLICY_NODES` YAML nodes
nested at most :data:`MAX_POLICY_DEPTH` deep. Anchors, aliases and tags are refused outright: a policy needs
none, aliases are how a small "billion laughs" document grows exponentially, and tags
(``!!python/object``...) are how YAML asks for objects to be constructed. The checks run on the parser's
event stream, before the composer builds a node; no node is ever constructed into Python objects. Numbers are plain
decimals (``0.01``, ``1e-3``), parsed by a regular expression, never by YAML's 1.1 rules (``0x10``, ``1:30``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assay.errors import PolicyError

__all__ = ["DEFAULT_POLICY", "KNOWN_METRICS", "MAX_POLICY_BYTES", "MAX_POLICY_DEPTH", "MAX_POLICY_NODES", "Policy",
           "Rule", "load_policy", "parse_policy"]

#: A policy is a few hundred bytes; 1 MiB leaves room for comments and refuses huge files before reading.
MAX_POLICY_BYTES = 2**20
#: Deepest legitimate nesting: root > rules > metric > {limit: value} is 4 levels.
MAX_POLICY_DEPTH = 8
#: A policy of every known metric plus the globals is under 100 nodes.
MAX_POLICY_NODES = 2000
#: A plain decimal number, ASCII digits only (YAML 1.1 would also read 0x10, 0o17, 1_000 and 1:30).
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_SHOWN_CHARS = 60

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
    "per_class_accuracy": MetricSpec("accuracy delta of every class (paired, exact per class, family-corrected)",
                                     ("max_drop",)),
    "per_slice_accuracy": MetricSpec("accuracy delta of every slice of every --slice-by column (paired, exact per "
                                     "slice, family-corrected)", ("max_drop",)),
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
_CORRECTIONS: tuple[Literal["holm", "bh"], ...] = ("holm", "bh")


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


def _error(what: str, source: str, node: Any, fix: str) -> PolicyError:
    line = f":{node.start_mark.line + 1}" if node is not None and getattr(node, "start_mark", None) else ""
    return PolicyError(what, where=f"{source}{line}", fix=fix)


def _shown(node: Any) -> str:
    """A node as the user wrote it, for messages: a scalar's text (cut short), else its kind. Never the
    repr of a collection node, which expands every alias beneath it."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        text = node.value
        return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _scalar_text(node: Any, source: str, what: str, fix: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise _error(f"{what} must be a plain word or number, got {_shown(node)}", source, node, fix=fix)
    return str(node.value)


def _number(node: Any, source: str, what: str) -> float:
    import yaml

    # Plain scalars only (style None in PyYAML, "" in libyaml): a quoted '0.01' is a string in YAML, and a number
    # written as text is a typo to report.
    quoted = isinstance(node, yaml.ScalarNode) and node.style not in (None, "")
    if not isinstance(node, yaml.ScalarNode) or quoted or not _DECIMAL.fullmatch(node.value):
        got = f"the quoted text {_shown(node)}" if quoted else _shown(node)
        raise _error(f"{what} must be a number, got {got}", source, node,
                     fix="write a number such as 0.01 or 1e-3 (not quoted, not true/false, not hex)")
    value = float(node.value)
    if not math.isfinite(value):
        raise _error(f"{what} must be finite, got {_shown(node)}", source, node, fix="write a finite number")
    return value


def _rule(metric_node: Any, body: Any, source: str) -> Rule:
    import yaml

    metric = _scalar_text(metric_node, source, "a metric name", fix=f"use one of: {', '.join(KNOWN_METRICS)}")
    if metric not in KNOWN_METRICS:
        raise _error(f"unknown metric {_shown(metric_node)} in the policy", source, metric_node,
                     fix=f"use one of: {', '.join(KNOWN_METRICS)}")
    spec = KNOWN_METRICS[metric]
    if not isinstance(body, yaml.MappingNode) or len(body.value) != 1:
        raise _error(f"rule {metric!r} must be a mapping with exactly one limit", source, body,
                     fix=f"e.g. {metric}: {{{spec.limits[0]}: 0.01}}")
    key_node, value_node = body.value[0]
    limit_name = _scalar_text(key_node, source, f"the limit of {metric!r}", fix=f"use {' or '.join(spec.limits)}")
    if limit_name not in spec.limits:
        raise _error(f"{metric!r} does not accept the limit {_shown(key_node)}", source, key_node,
                     fix=f"use {' or '.join(spec.limits)}")
    limit = _number(value_node, source, f"{metric}.{key_node.value}")
    kind: RuleKind = limit_name
    upper = 1.0 if spec.fraction and kind != "max_increase_pct" else math.inf
    if not 0.0 <= limit <= upper:
        raise _error(f"{metric}.{kind} = {limit:g} is out of range [0, {upper:g}]", source, value_node,
                     fix="rates and accuracies are fractions in [0, 1] (0.01 = one point); percentages are >= 0")
    return Rule(metric, kind, limit)


class _RefusedError(Exception):
    """Raised while checking a policy's YAML events; carries the position for ``file:line``."""

    def __init__(self, what: str, fix: str, mark: Any) -> None:
        super().__init__(what)
        self.what, self.fix, self.mark = what, fix, mark


def _check_events(events: Any) -> None:
    """Refuse, as their events stream in and before any node is built: anchors, aliases, explicit tags,
    more than MAX_POLICY_NODES nodes and nesting deeper than MAX_POLICY_DEPTH."""
    import yaml

    nodes = depth = 0
    for event in events:
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            continue
        if not isinstance(event, (yaml.NodeEvent, yaml.CollectionStartEvent)):
            continue  # stream / document markers
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _RefusedError("the policy uses a YAML anchor or alias (&name / *name)",
                           "write every rule out in full; a policy needs no anchors or aliases", event.start_mark)
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = str(tag).replace("tag:yaml.org,2002:", "!!")[:_SHOWN_CHARS]
            raise _RefusedError(f"the policy uses the YAML tag {shown!r}",
                           "remove the tag: a policy holds only plain words and numbers", event.start_mark)
        nodes += 1
        if nodes > MAX_POLICY_NODES:
            raise _RefusedError(f"the policy has more than {MAX_POLICY_NODES:,} YAML nodes",
                           "a policy lists at most one rule per metric; remove the rest", event.start_mark)
        if depth + 1 > MAX_POLICY_DEPTH:
            raise _RefusedError(f"the policy is nested more than {MAX_POLICY_DEPTH} levels deep",
                           "use the form `metric: {limit: value}` (optionally under `rules:`)", event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1


def _compose(text: str, source: str) -> Any:
    """The root node of ``text`` (None for an empty document), every parse error a PolicyError at its line.
    The events are checked first (libyaml's parser when installed: a 1 MiB file takes well under a second),
    so the composer only ever sees a small tree without aliases; nothing is ever constructed."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_events(yaml.parse(text, Loader=loader))
        return yaml.compose(text, Loader=loader)
    except _RefusedError as exc:
        raise PolicyError(exc.what, where=f"{source}:{exc.mark.line + 1}", fix=exc.fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(f"the policy is not valid YAML: {problem}", where=where,
                          fix="check indentation and the `key: {limit: value}` form") from None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate policy YAML; every error names the line (``source:line``)."""
    import yaml

    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is {len(text):,} characters long (at most {MAX_POLICY_BYTES:,})", where=source,
                          fix="a policy is a few lines: one `metric: {limit: value}` per rule")
    root = _compose(text, source)
    if root is None:
        raise PolicyError("the policy file is empty", where=source,
                          fix="add at least one rule, e.g. accuracy: {max_drop: 0.01}")
    if not isinstance(root, yaml.MappingNode):
        raise _error(f"the policy must be a mapping of rules, got {_shown(root)}", source, root,
                     fix="e.g. accuracy: {max_drop: 0.01}")
    confidence = 0.95
    correction: Literal["holm", "bh"] = "holm"
    rule_entries: list[tuple[Any, Any]] = []
    seen: set[str] = set()
    key_fix = f"keys are metric names ({', '.join(KNOWN_METRICS)}) or {', '.join(sorted(_GLOBALS))}"
    for key_node, value_node in root.value:
        key = _scalar_text(key_node, source, "a policy key", fix=key_fix)
        if key in seen:
            raise _error(f"{key!r} appears twice in the policy", source, key_node, fix="keep one entry per key")
        seen.add(key)
        if key == "confidence":
            confidence = _number(value_node, source, "confidence")
            if not 0.5 <= confidence < 1.0:
                raise _error(f"confidence must lie in [0.5, 1), got {confidence:g}", source, value_node,
                             fix="use e.g. 0.95")
        elif key == "correction":
            word = getattr(value_node, "value", None) if isinstance(value_node, yaml.ScalarNode) else None
            if word not in _CORRECTIONS:
                raise _error(f"correction must be one of {', '.join(_CORRECTIONS)}, got {_shown(value_node)}", source,
                             value_node, fix="holm controls the family-wise error; bh the false discovery rate")
            correction = word
        elif key == "rules":
            if not isinstance(value_node, yaml.MappingNode):
                raise _error("'rules' must be a mapping of metric: {limit: value}", source, value_node,
                             fix="e.g. rules: {accuracy: {max_drop: 0.01}}")
            rule_entries.extend(value_node.value)
        else:
            rule_entries.append((key_node, value_node))
    rules, names = [], set()
    for key_node, value_node in rule_entries:
        name = _scalar_text(key_node, source, "a metric name", fix=key_fix)
        if name in names:
            raise _error(f"{name!r} appears twice in the policy", source, key_node, fix="keep one rule per metric")
        names.add(name)
        rules.append(_rule(key_node, value_node, source))
    if not rules:
        raise PolicyError("the policy has no rules", where=source,
                          fix="add at least one, e.g. accuracy: {max_drop: 0.01}")
    return Policy(rules=tuple(rules), confidence=confidence, correction=correction, source=source)


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); binary and other encodings are PolicyErrors."""
    fix = "save the policy as UTF-8 text (YAML), e.g. accuracy: {max_drop: 0.01}"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PolicyError("the policy is UTF-16 or UTF-32 text (it starts with that byte-order mark)", where=source,
                          fix=fix)
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise PolicyError("the policy holds NUL bytes: it is a binary file, not YAML text", where=f"{source}:{line}",
                          fix=fix)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PolicyError(f"the policy is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                          where=f"{source}:{line}", fix=fix) from None


def load_policy(path: str | os.PathLike[str] | None) -> Policy:
    """The policy in ``path``, or :data:`DEFAULT_POLICY` when None. The size is checked before reading."""
    if path is None:
        return DEFAULT_POLICY
    p = Path(path)
    where = f"--policy {p}"
    try:
        st = p.stat()
    except OSError as exc:
        raise PolicyError(f"no policy file at {p} ({exc.strerror or exc})", where=where,
                          fix="give the path of a YAML policy") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise PolicyError(f"the policy path {p} is {kind}", where=where, fix="give the path of a YAML policy file")
    if st.st_size > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy file is {st.st_size:,} bytes (at most {MAX_POLICY_BYTES:,})", where=where,
                          fix="a policy is a few lines: one `metric: {limit: value}` per rule")
    try:
        with p.open("rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)  # a file growing after stat still cannot be read whole
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file ({exc.strerror or exc})", where=where,
                          fix="check the file's permissions") from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy file is over {MAX_POLICY_BYTES:,} bytes", where=where,
                          fix="a policy is a few lines: one `metric: {limit: value}` per rule")
    return parse_policy(_decode(data, str(p)), source=str(p))
