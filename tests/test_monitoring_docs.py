"""docs/monitoring.md and examples/prometheus-alerts.yml stay true to what ``assay serve`` exposes.

The metrics are read from a real app (``assay.serve.create_app`` on a tiny in-memory model, in process with
starlette's TestClient) and parsed with prometheus_client's own parser: every metric family it exposes is in
the documentation's table with the same type and labels, and the table names nothing it does not expose.
The alert rules parse as a Prometheus rule file (groups, rules with alert, expr, for, labels, annotations),
and every metric an expression uses is documented and exposed, with label matchers the metric has.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "monitoring.md"
RULES = ROOT / "examples" / "prometheus-alerts.yml"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")  # Prometheus duration syntax
SEVERITIES = {"page", "warning", "info"}
GLOBAL_LABELS = {"instance", "job", "le"}  # added by the scrape (instance, job) or by histograms (le)


def _documented() -> dict[str, tuple[str, frozenset[str]]]:
    """The metrics table of docs/monitoring.md: name -> (type, labels)."""
    table: dict[str, tuple[str, frozenset[str]]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `assay_"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name, kind, labels = cells[0].strip("`"), cells[1], cells[2]
        assert name not in table, f"{name} is in the table twice"
        table[name] = (kind, frozenset(re.findall(r"`([a-z_][a-z0-9_]*)`", labels)))
    assert len(table) >= 10, "the metrics table of docs/monitoring.md was not found"
    return table


@pytest.fixture(scope="module")
def exposed() -> dict[str, tuple[str, frozenset[str] | None]]:
    """What a real app exposes after a good and a refused prediction: documented name -> (type, labels or
    None when the family has no sample yet). Counters are named as in PromQL (``..._total``); the
    ``*_created`` gauges prometheus_client adds next to counters and histograms are left out."""
    from fastapi.testclient import TestClient

    from assay.serve import create_app
    from conftest import LinearModel

    app = create_app(LinearModel(np.eye(4, 3), np.zeros(3), (4,)))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.post("/v1/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 200
        assert client.post("/v1/predict", json={"inputs": "not rows"}).status_code in (400, 422)
        text = client.get("/metrics").text
    families = list(text_string_to_metric_families(text))
    kinds = {f.name: f.type for f in families}
    out: dict[str, tuple[str, frozenset[str] | None]] = {}
    for family in families:
        base = family.name.removesuffix("_created")
        if family.name != base and kinds.get(base) in ("counter", "histogram"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        out[name] = (family.type, frozenset(labels) if family.samples else None)
    return out


def _promql_names(name: str, kind: str) -> set[str]:
    return {name + suffix for suffix in HISTOGRAM_SERIES} if kind == "histogram" else {name}


def test_every_exposed_metric_is_documented_with_its_type_and_labels(exposed):
    documented = _documented()
    assert set(exposed) == set(documented), (
        f"exposed but not in docs/monitoring.md: {sorted(set(exposed) - set(documented))}; "
        f"documented but not exposed: {sorted(set(documented) - set(exposed))}")
    for name, (kind, labels) in exposed.items():
        doc_kind, doc_labels = documented[name]
        assert doc_kind == kind, f"{name}: documented as {doc_kind}, exposed as {kind}"
        if labels is not None:  # a labelled family shows its labels once it has a sample
            assert doc_labels == labels, f"{name}: documented labels {sorted(doc_labels)}, exposed {sorted(labels)}"
    assert exposed["assay_requests_total"][1] == {"endpoint"}  # the requests made above did get counted


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and set(data) == {"groups"}
    groups = data["groups"]
    assert isinstance(groups, list) and groups
    names = [g["name"] for g in groups]
    assert len(set(names)) == len(names), "group names are unique"
    rules = []
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"} and isinstance(group["name"], str)
        assert isinstance(group["rules"], list) and group["rules"], group["name"]
        rules += group["rules"]
    return rules


def _balanced(text: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', text):  # brackets inside label values do not count
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_alert_rules_have_the_structure_prometheus_reads():
    rules = _rules()
    alerts = [r["alert"] for r in rules]
    assert len(set(alerts)) == len(alerts), "alert names are unique"
    for rule in rules:
        where = rule.get("alert")
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, where
        assert isinstance(where, str) and re.fullmatch(r"Assay[A-Z][A-Za-z0-9]+", where), where
        assert isinstance(rule["expr"], str) and rule["expr"].strip() and _balanced(rule["expr"]), where
        if "for" in rule:
            assert isinstance(rule["for"], str) and DURATION.fullmatch(rule["for"]), where
        assert isinstance(rule["labels"], dict) and rule["labels"].get("severity") in SEVERITIES, where
        annotations = rule["annotations"]
        assert isinstance(annotations, dict) and {"summary", "description"} <= set(annotations), where
        for text in annotations.values():
            assert isinstance(text, str) and text.count("{{") == text.count("}}"), where
    assert {"AssayHighErrorRate", "AssayHighP99Latency", "AssayPredictionLogDropping", "AssayLowConfidenceShare",
            "AssayModelVersionChanged"} <= set(alerts)
    assert not DURATION.fullmatch("5 minutes") and not _balanced("rate(x[5m]") and _balanced('a{b="("}')


def test_every_metric_in_an_alert_is_documented_and_exposed(exposed):
    documented = _documented()
    known = {promql: (name, kind) for name, (kind, _) in documented.items() for promql in _promql_names(name, kind)}
    live = {promql for name, (kind, _) in exposed.items() for promql in _promql_names(name, kind)}
    used = set()
    for rule in _rules():
        expr = rule["expr"]
        names = set(re.findall(r"\bassay_[a-z0-9_]+", expr))
        used |= names
        for name in names:
            assert name in known, f"{rule['alert']}: {name} is not documented in docs/monitoring.md"
            assert name in live, f"{rule['alert']}: {name} is not exposed by assay serve's /metrics"
        for name, matchers in re.findall(r"\b(assay_[a-z0-9_]+)\{([^}]*)\}", expr):
            base, kind = known[name]
            allowed = set(documented[base][1]) | ({"le"} if name.endswith("_bucket") else set()) | GLOBAL_LABELS
            labels = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers))
            assert labels <= allowed, f"{rule['alert']}: {name} has no label {sorted(labels - allowed)}"
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            allowed = {lab for n in names for lab in documented[known[n][0]][1]} | GLOBAL_LABELS
            assert labels <= allowed, f"{rule['alert']}: grouped by unknown labels {sorted(labels - allowed)}"
    assert len(used) >= 8, sorted(used)  # errors, requests, both latencies, log, confidence, swaps, reloads
