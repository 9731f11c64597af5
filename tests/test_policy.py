"""Gate policy parsing: the documented form, defaults, and errors that name the line."""

from __future__ import annotations

import pytest

from assay.compare.policy import (
    DEFAULT_POLICY,
    KNOWN_METRICS,
    load_policy,
    parse_policy,
)
from assay.compare.select import parse_constraint
from assay.errors import UserError

ISSUE_EXAMPLE = """\
confidence: 0.95
accuracy: {max_drop: 0.005}
negative_flip_rate: {max: 0.01}
per_class_accuracy: {max_drop: 0.03}
ece: {max_increase: 0.01}
latency_p95_ms: {max_increase_pct: 10}
"""


def test_the_documented_example_parses():
    policy = parse_policy(ISSUE_EXAMPLE, "gate.yaml")
    assert policy.confidence == 0.95 and policy.correction == "holm"
    assert {(r.metric, r.kind, r.limit) for r in policy.rules} == {
        ("accuracy", "max_drop", 0.005), ("negative_flip_rate", "max", 0.01),
        ("per_class_accuracy", "max_drop", 0.03), ("ece", "max_increase", 0.01),
        ("latency_p95_ms", "max_increase_pct", 10.0)}
    nested = parse_policy("confidence: 0.9\ncorrection: bh\nrules:\n  accuracy: {max_drop: 0.01}\n")
    assert nested.confidence == 0.9 and nested.correction == "bh" and nested.rules[0].metric == "accuracy"


def test_default_policy_without_a_file():
    assert load_policy(None) is DEFAULT_POLICY
    assert {r.metric for r in DEFAULT_POLICY.rules} >= {"accuracy", "per_class_accuracy", "ece"}
    assert all(r.metric in KNOWN_METRICS for r in DEFAULT_POLICY.rules)


@pytest.mark.parametrize(("text", "line", "match"), [
    ("accuracy: {max_drop: 0.01}\naccurcy: {max_drop: 0.01}\n", 2, "unknown metric 'accurcy'.*"),
    ("accuracy: {max_drop: 0.01}\n\nece: {max_drop: 0.01}\n", 3, "does not accept the limit 'max_drop'"),
    ("accuracy: {max_drop: lots}\n", 1, "must be a number"),
    ("accuracy: {max_drop: 1.5}\n", 1, "out of range"),
    ("accuracy: {max_drop: -0.01}\n", 1, "out of range"),
    ("confidence: 1.2\naccuracy: {max_drop: 0.01}\n", 1, "confidence must lie"),
    ("accuracy: {max_drop: 0.01}\ncorrection: bonferroni\n", 2, "correction must be one of"),
    ("accuracy: 0.01\n", 1, "must be a mapping with exactly one limit"),
    ("accuracy: {max_drop: 0.01, max: 0.2}\n", 1, "exactly one limit"),
    ("accuracy: {max_drop: 0.01}\naccuracy: {max_drop: 0.02}\n", 2, "appears twice"),
    ("accuracy: {max_drop: 0.01\nece: 3\n", 2, "not valid YAML"),
    ("- accuracy\n", 1, "must be a mapping of rules"),
])
def test_policy_errors_name_the_line(text, line, match):
    with pytest.raises(UserError, match=match) as info:
        parse_policy(text, "gate.yaml")
    assert info.value.where == f"gate.yaml:{line}"
    assert info.value.fix


def test_unknown_metric_lists_the_known_ones_and_empty_policies_are_refused(tmp_path):
    with pytest.raises(UserError) as info:
        parse_policy("f1: {max_drop: 0.01}\n")
    assert all(name in info.value.fix for name in KNOWN_METRICS)
    for text in ("", "confidence: 0.9\n"):
        with pytest.raises(UserError, match="empty|no rules"):
            parse_policy(text)
    with pytest.raises(UserError, match="no policy file"):
        load_policy(tmp_path / "missing.yaml")


def test_constraint_grammar():
    c = parse_constraint(" latency_p95_ms <= 5 ")
    assert (c.metric, c.op, c.value) == ("latency_p95_ms", "<=", 5.0)
    assert c.holds(5.0) and not c.holds(5.01) and not c.holds(None)
    assert parse_constraint("accuracy>0.9").holds(0.95)
    assert parse_constraint("model_size_mb<1e1").value == 10.0
    for bad in ("latency_p95_ms <= __import__('os')", "accuracy >> 1", "accuracy", "5 >= accuracy",
                "accuracy>=0.9; rm -rf /"):
        with pytest.raises(UserError, match="cannot parse"):
            parse_constraint(bad)
    with pytest.raises(UserError, match="unknown metric 'speed'"):
        parse_constraint("speed<=3")
