"""The governance crosswalk data file (assay/govern/crosswalk.yaml) and its application to real bundles.

Every section, metric, table, field and file the mapping names must exist in what Assay produces: checked
against a real bundle that runs every registered check (built once per session, ~20 s), the evidence schema,
the registry's AliasMove, the compare gate's Comparison and CardFacts. The official texts are spot-checked
against the published wording (NIST AI 100-1, Jan 2023; Regulation (EU) 2024/1689, Annex IV), and the gaps of
today's evidence are listed (MEASURE 2.2 human subjects: Assay has no evidence of it)."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tomllib
from hypothesis import given
from hypothesis import strategies as st

from assay.checks.registry import CHECKS
from assay.compare.gate import Comparison
from assay.evidence.schema import Evidence
from assay.govern.bundles import AUDIT_SECTIONS, load_bundles
from assay.govern.crosswalk import build_crosswalk, load_crosswalk, metric_pattern
from assay.govern.datasheet import Datasheet
from assay.govern.facts import CardFacts
from assay.registry._types import ACTIONS, AliasMove

ROOT = Path(__file__).parents[1]
#: The subcategories issue 13 names.
NIST_IDS = {*(f"MEASURE 2.{i}" for i in range(1, 14)), "MANAGE 2.3", "MANAGE 2.4", "MANAGE 4.1", "GOVERN 1.7",
            "MAP 2.3"}


def full_bundle(base: Path) -> Path:
    """An evaluation bundle with every registered check (performance, calibration, efficiency, corruption,
    adversarial, OOD, slices, fairness, label-free) of a small MLP on 8x8 images; built once under ``base``."""
    out = base / "govern-full-bundle"
    if (out / "evidence.json").exists():
        return out
    import torch

    import assay
    from assay.data.dataset import Dataset

    rng = np.random.default_rng(0)
    n, k = 240, 3
    protos = rng.random((k, 1, 8, 8))
    y = rng.integers(0, k, size=n)
    x = np.clip(protos[y] + rng.normal(0, 0.25, size=(n, 1, 8, 8)), 0, 1).astype(np.float32)
    meta = {"group": np.where(rng.random(n) < 0.5, "a", "b"), "band": np.where(x.mean((1, 2, 3)) > 0.5, "hi", "lo")}
    data = Dataset.from_arrays(x, y, class_names=["c0", "c1", "c2"], meta=meta)
    # The net's training data: other samples of the same prototypes (members of the privacy check's audit, the
    # backdoor check's training features; the evaluation data are the privacy check's non-members).
    train_rng = np.random.default_rng(1)
    y_train = train_rng.integers(0, k, size=n)
    x_train = np.clip(protos[y_train] + train_rng.normal(0, 0.25, size=(n, 1, 8, 8)), 0, 1).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, k))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.from_numpy(x_train)), torch.from_numpy(y_train)).backward()
        opt.step()
    ood = rng.random((80, 1, 8, 8)).astype(np.float32)
    assay.evaluate(net, data, out=out, cache_dir=False, n_bootstrap=200, checks=list(CHECKS), slice_by=["band"],
                   sensitive=["group"], ood=[ood], unlabeled=[x[:100]], corruptions=["gaussian_noise", "contrast"],
                   severities=[1, 3], adversarial="quick", latency_budget=0.2, train_data=(x_train, y_train))
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_bundle(tmp_path_factory.getbasetemp())


def test_the_data_file_loads_with_every_citation_and_the_subcategories_the_issue_names():
    mapping = load_crosswalk()
    assert set(mapping.frameworks) == {"nist_ai_rmf", "eu_ai_act_annex_iv"}
    nist, eu = mapping.frameworks["nist_ai_rmf"], mapping.frameworks["eu_ai_act_annex_iv"]
    assert nist.document == "NIST AI 100-1" and nist.date == "January 2023"
    assert "10.6028/NIST.AI.100-1" in nist.identifier
    assert "Playbook" in nist.companion
    assert eu.document == "Regulation (EU) 2024/1689, Annex IV" and "2024/1689" in eu.identifier
    assert {e.id for e in nist.entries} == NIST_IDS
    for _, fw, entry in mapping.entries():
        expected = "NIST AI 100-1, Table" if fw is nist else "Regulation (EU) 2024/1689, Annex IV"
        assert entry.citation.startswith(expected)
        assert entry.id.split()[-1] in entry.citation  # the citation names the entry it cites
        assert entry.text and entry.label and entry.gap
        for item in entry.evidence:
            assert item.why.strip()
    points = {e.id for e in eu.entries}
    assert {"Annex IV 2(g)", "Annex IV 3", "Annex IV 9"} <= points
    assert all(p.startswith("Annex IV ") for p in points)
    assert len(mapping.sha256) == 64


# Published wording, copied from the sources (NIST AI 100-1 Table 3 and 4; OJ L 2024/1689 Annex IV).
OFFICIAL = {
    "MEASURE 2.10": "Privacy risk of the AI system – as identified in the MAP function – is examined and documented.",
    "MEASURE 2.11": "Fairness and bias – as identified in the MAP function – are evaluated and results are documented.",
    "MEASURE 2.1": "Test sets, metrics, and details about the tools used during TEVV are documented.",
    "MANAGE 2.3": "Procedures are followed to respond to and recover from a previously unknown risk when it is "
                  "identified.",
    "Annex IV 8": "A copy of the EU declaration of conformity referred to in Article 47;",
    "Annex IV 4": "A description of the appropriateness of the performance metrics for the specific AI system;",
}


def test_official_texts_are_quoted_verbatim():
    texts = {e.id: e.text for _, _, e in load_crosswalk().entries()}
    for key, text in OFFICIAL.items():
        assert texts[key] == text, key
    assert texts["MEASURE 2.6"].endswith("Safety metrics reflect system reliability and robustness, real-time "
                                         "monitoring, and response times for AI system failures.")
    assert texts["Annex IV 2(g)"].startswith("the validation and testing procedures used, including information "
                                             "about the validation and testing data used")


def test_every_section_metric_table_field_and_file_the_mapping_names_exists(full: Path, tmp_path: Path):
    import torch

    from assay.security.scan import scan_model

    evidence = json.loads((full / "evidence.json").read_text())
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    scan = scan_model(tmp_path / "w.pt").to_section()
    files = {p.name for p in full.iterdir()}
    move_fields = {f.name for f in dataclasses.fields(AliasMove)}
    named = 0
    for _, _, entry in load_crosswalk().entries():
        for item in entry.evidence:
            where = f"{entry.id}: {item.kind}"
            if item.kind == "section":
                assert item.section in CHECKS, where
                section = evidence["sections"][item.section]
                for pattern in item.metrics:
                    rx = metric_pattern(pattern)
                    assert any(rx.fullmatch(k) for k in section["metrics"]), f"{where}: metric {pattern}"
                    named += 1
                for table in item.tables:
                    assert section["tables"].get(table), f"{where}: table {table}"
            elif item.kind == "evidence":
                assert set(item.fields) <= set(Evidence.model_fields), where
            elif item.kind == "file":
                assert item.file in files, where
            elif item.kind == "change_log":
                assert set(item.fields) <= move_fields and set(item.actions) <= set(ACTIONS), where
            elif item.kind == "comparison":
                assert set(item.fields) <= set(Comparison.model_fields), where
            elif item.kind == "datasheet":
                assert set(item.fields) <= set(Datasheet.model_fields), where
            elif item.kind == "audit":
                assert item.section in AUDIT_SECTIONS, where
            elif item.kind == "scan":
                assert set(item.metrics) <= set(scan.metrics) and set(item.tables) <= set(scan.tables), where
            else:
                assert set(item.fields) <= set(CardFacts.model_fields), where
    assert named > 20


def test_the_data_file_ships_with_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["assay"]
    assert any(fnmatch.fnmatch("govern/crosswalk.yaml", p) for p in patterns), patterns
    assert (ROOT / "src" / "assay" / "govern" / "crosswalk.yaml").is_file()


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_rows_carry_the_sha256_of_the_file_and_pointers_that_resolve(full: Path):
    bundles = load_bundles([full])
    cw = build_crosswalk(bundles)
    evidence = json.loads((full / "evidence.json").read_text())
    assert cw["rows"] and cw["mapping"]["sha256"] == load_crosswalk().sha256
    for row in cw["rows"]:
        assert row["sha256"] == _sha256(row["path"]), row
        if row["kind"] == "section":
            for pointer in row["pointers"]:
                section, _, rest = pointer.partition(".")
                kind, _, key = rest.partition(".")
                assert key in evidence["sections"][section][kind] if kind else section in evidence["sections"]
    summary = cw["summary"]
    assert summary["full"] + summary["partial"] + summary["gap"] == len(load_crosswalk().entries())


def test_gaps_are_what_no_evidence_speaks_to(full: Path):
    cw = build_crosswalk(load_bundles([full]))
    gaps = {g["id"] for g in cw["gaps"]}
    status = {e["id"]: e["status"] for e in cw["entries"]}
    # Human subjects and organisational Annex IV points never have Assay evidence.
    assert {"MEASURE 2.2", "Annex IV 5", "Annex IV 7", "Annex IV 8"} <= gaps
    # Without a registry history or card.yaml, the lifecycle entries are gaps too.
    assert {"GOVERN 1.7", "MANAGE 2.3", "MANAGE 2.4", "Annex IV 6"} <= gaps
    # This bundle has fairness, adversarial, backdoor, privacy, efficiency and label-free sections: those entries
    # are evidenced.
    assert status["MEASURE 2.11"] == "full" and status["MEASURE 2.7"] == "partial"
    assert status["MEASURE 2.10"] == "partial"
    pointers = {p for row in cw["rows"] if row["id"] in ("MEASURE 2.7", "MEASURE 2.10") for p in row["pointers"]}
    assert {"privacy.metrics.membership_auroc", "privacy.tables.attacks",
            "backdoor.tables.training_classes"} <= pointers
    assert status["MEASURE 2.12"] == "partial" and status["MEASURE 2.13"] == "partial"
    assert all(g["missing"] for g in cw["gaps"])


def test_a_performance_only_bundle_leaves_fairness_robustness_and_energy_as_gaps(tmp_path: Path):
    import assay
    from conftest import make_blobs_dataset

    data, model = make_blobs_dataset(n=150)
    assay.evaluate(model, data, out=tmp_path / "b", cache_dir=False, n_bootstrap=100)
    gaps = {g["id"] for g in build_crosswalk(load_bundles([tmp_path / "b"]))["gaps"]}
    assert {"MEASURE 2.7", "MEASURE 2.11", "MEASURE 2.12", "MEASURE 2.10"} <= gaps
    assert "MEASURE 2.1" not in gaps and "MEASURE 2.3" not in gaps


def test_registry_history_and_card_facts_close_the_lifecycle_gaps(full: Path):
    comparison = "ab" * 32
    log = [
        {"id": 1, "alias": "production", "from_version": None, "to_version": 1, "action": "promote",
         "gate_verdict": None, "comparison_sha256": None, "actor": "ana", "created_at": "2026-01-01T00:00:00Z",
         "reason": "first"},
        {"id": 2, "alias": "production", "from_version": 1, "to_version": 2, "action": "promote",
         "gate_verdict": "pass", "comparison_sha256": comparison, "actor": "ana", "created_at": "2026-01-02T00:00:00Z",
         "reason": "better"},
        {"id": 3, "alias": "production", "from_version": 2, "to_version": 1, "action": "rollback",
         "gate_verdict": None, "comparison_sha256": None, "actor": "bo", "created_at": "2026-01-03T00:00:00Z",
         "reason": "drift"},
    ]
    facts = CardFacts(monitoring="On-call ML team watches drift daily.", intended_use="Sorting scanned digits.")
    cw = build_crosswalk(load_bundles([full]), facts, log)
    status = {e["id"]: e["status"] for e in cw["entries"]}
    assert status["GOVERN 1.7"] != "gap" and status["MANAGE 2.3"] != "gap" and status["MANAGE 2.4"] == "full"
    rollback = [r for r in cw["rows"] if r["id"] == "MANAGE 2.3"]
    assert [r["pointers"] for r in rollback] == [["change_log[2]"]]
    gate = [r for r in cw["rows"] if r["kind"] == "comparison" and r["id"] == "MANAGE 2.4"]
    assert [r["sha256"] for r in gate] == [comparison]
    facts_rows = [r for r in cw["rows"] if r["kind"] == "card_facts"]
    assert facts_rows and all(r["sha256"] == facts.sha256 for r in facts_rows)
    assert {"card.yaml:monitoring"} <= {p for r in facts_rows for p in r["pointers"]}


@given(st.text(alphabet=st.characters(blacklist_characters="*"), max_size=20),
       st.text(alphabet=st.characters(blacklist_characters="*"), max_size=20))
def test_metric_patterns_match_literally_except_the_star(a: str, b: str):
    assert metric_pattern(a).fullmatch(a)
    assert bool(metric_pattern(a).fullmatch(b)) == (a == b)
    assert metric_pattern(f"{a}*").fullmatch(a + b)
    assert metric_pattern("auroc[*]").fullmatch("auroc[msp,set]") and not metric_pattern("auroc[*]").fullmatch("aurocm")
