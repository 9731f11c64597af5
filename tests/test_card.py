"""Model cards end to end: Hugging Face front matter, every number equal to the evidence and citing its file's
sha256, TODOs for missing facts, card.yaml refused when malformed, output-folder safety, a self-contained
HTML page, several bundles, registry references.

The numbers are checked against evidence.json read as plain JSON (not through Assay's schema), the front
matter against huggingface_hub's own model-index parser, the hashes against hashlib over the file bytes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from assay.cli import main
from assay.evidence import output
from assay.evidence.output import read_manifest
from assay.govern import CARD_KIND, REQUIRED_FACTS, CardFacts, build_card
from assay.report.card import CardDocument, CardSection, Cell, Table, render_card_markdown
from test_crosswalk import full_bundle

FULL_FACTS = """\
name: digit-sorter
description: A small MLP that sorts 8x8 scans into three classes.
developers: [Assay test team]
contact: ml-team@example.org
license: apache-2.0
datasets: [synthetic-prototypes]
intended_use: |
  Sorting scanned 8x8 glyphs in the test fixture.
out_of_scope_use: Anything involving people.
monitoring: Drift is checked daily against reference.npz.
"""


@pytest.fixture(autouse=True)
def _card_output_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until evidence/output.py lists the ``card`` kind (see test_card_is_a_known_output_kind), let the rest of
    these tests exercise the card folder through the real output rules."""
    if CARD_KIND not in output.OUTPUT_KINDS:
        monkeypatch.setattr(output, "OUTPUT_KINDS", (*output.OUTPUT_KINDS, CARD_KIND))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_bundle(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small bundle of another model (blobs, performance and calibration only)."""
    import assay
    from conftest import make_blobs_dataset

    out = tmp_path_factory.mktemp("quick") / "bundle"
    data, model = make_blobs_dataset(n=200, seed=3)
    assay.evaluate(model, data, out=out, cache_dir=False, n_bootstrap=100)
    return out


@pytest.fixture
def facts_file(tmp_path: Path) -> Path:
    path = tmp_path / "card.yaml"
    path.write_text(FULL_FACTS)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _front_matter(markdown: str) -> dict[str, Any]:
    assert markdown.startswith("---\n")
    head, _, _ = markdown[4:].partition("\n---\n")
    return yaml.safe_load(head)


def _tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table as (header, rows of cells), pipes escaped as \\| kept inside cells."""
    tables, block = [], []
    for line in [*markdown.split("\n"), ""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            block.append([re.sub(r"\\([\\|<])", r"\1", c.strip()) for c in cells])
            continue
        if block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def _resolve(evidence: dict[str, Any], pointer: str) -> Any:
    """A pointer as the card writes it, resolved in evidence.json by hand (independent of Assay's code)."""
    m = re.fullmatch(r"(\w+)\.tables\.(.+)\[(\d+)\]", pointer)
    if m:
        return evidence["sections"][m[1]]["tables"][m[2]][int(m[3])]
    m = re.fullmatch(r"(\w+)\.metrics\.(.+)", pointer)
    if m:
        return evidence["sections"][m[1]]["metrics"][m[2]]
    m = re.fullmatch(r"(?:(\w+)\.)?findings\[(\d+)\]", pointer)
    if m:
        holder = evidence["sections"][m[1]] if m[1] else evidence
        return holder["findings"][int(m[2])]
    value: Any = evidence
    for part in pointer.split("."):
        value = value["sections"][part] if part in evidence.get("sections", {}) and value is evidence else value[part]
    return value


def _shown(text: str, value: float) -> bool:
    """Whether ``text`` (a number as printed) is ``value`` rounded to the digits shown."""
    t = text.strip().lower()
    mantissa, _, exponent = t.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    tolerance = 0.5 * 10.0 ** ((int(exponent) if exponent else 0) - decimals)
    return abs(float(t) - value) <= tolerance * (1 + 1e-9) + 1e-12


_ESTIMATE = re.compile(r"^([-+]?[0-9.]+(?:e[-+]?\d+)?)(?: \[([-+]?[0-9.e+-]+), ([-+]?[0-9.e+-]+)\])?$", re.I)


def test_front_matter_is_hugging_face_model_index(full: Path, facts_file: Path):
    from assay.govern import load_card_facts

    card = build_card([full], load_card_facts(facts_file))
    meta = _front_matter(card.markdown)
    evidence = json.loads((full / "evidence.json").read_text())
    assert meta == card.front_matter
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["synthetic-prototypes"]
    assert meta["pipeline_tag"] == "image-classification" and "accuracy" in meta["metrics"]
    (index,) = meta["model-index"]
    assert index["name"] == "digit-sorter"
    (result,) = index["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["revision"] == evidence["data"]["fingerprint"]
    values = {m["name"]: m["value"] for m in result["metrics"]}
    perf = evidence["sections"]["performance"]["metrics"]
    assert values["Accuracy"] == perf["accuracy"]["value"] and values["Macro F1"] == perf["macro_f1"]["value"]
    assert values["Robust accuracy"] == evidence["sections"]["adversarial"]["metrics"]["robust_accuracy"]["value"]
    # Hugging Face's own parser of model cards and model-index metadata (test-only reference).
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.repocard_data import model_index_to_eval_results

    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "digit-sorter" and len(results) == len(result["metrics"])
    assert {(r.metric_name, r.metric_value) for r in results} == set(values.items())
    parsed = hub.ModelCard(card.markdown)
    assert parsed.data.license == "apache-2.0" and parsed.data.model_name == "digit-sorter"
    assert [r.metric_value for r in parsed.data.eval_results] == [m["value"] for m in result["metrics"]]


def test_every_number_equals_the_evidence_and_names_its_file_by_sha256(full: Path, facts_file: Path):
    from assay.govern import load_card_facts

    card = build_card([full], load_card_facts(facts_file))
    evidence = json.loads((full / "evidence.json").read_text())
    tables = _tables(card.markdown)
    sources = {row[0]: row for header, rows in tables if header == ["id", "bundle", "file", "sha256"] for row in rows}
    assert sources["E1"][3] == f"`sha256:{_sha256(full / 'evidence.json')}`"
    for sid, name in (("P1", "predictions.npz"), ("R1", "reference.npz"), ("A1", "assay-manifest.json")):
        assert sources[sid][3] == f"`sha256:{_sha256(full / name)}`"
    assert sources["F"][3] == f"`sha256:{_sha256(facts_file)}`"
    checked = 0
    for header, rows in tables:
        for row in rows:
            found = re.fullmatch(r"(E\d+) `([^`]+)`", row[-1])
            if found is None:
                continue
            assert found[1] == "E1"
            target = _resolve(evidence, found[2])
            if header[:2] == ["metric", "value [CI]"]:  # a metric: value [CI] and n
                m = _ESTIMATE.match(row[1])
                assert m and _shown(m[1], target["value"]), (found[2], row[1])
                if m[2]:
                    assert _shown(m[2], target["ci_low"]) and _shown(m[3], target["ci_high"]), (found[2], row[1])
                else:
                    assert target["ci_low"] is None and target["ci_high"] is None
                assert int(row[2]) == target["n"]
                checked += 1
            elif header[0] == "":  # a fact: its value is the evidence's (alone, or within the text)
                if isinstance(target, (int, float)) and not isinstance(target, bool) and _ESTIMATE.match(row[1]):
                    assert _shown(row[1], target), (found[2], row[1])
                    checked += 1
                elif isinstance(target, (str, int)):
                    assert str(target) in row[1], (found[2], row[1])
            elif isinstance(target, dict) and "finding" in header:
                assert row[header.index("finding")] == target["message"].replace("\n", " ").strip()
            elif isinstance(target, dict):  # a table row: every numeric column is that row's value
                for column, cell in zip(header[:-1], row[:-1], strict=True):
                    value = target.get(column)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        m = _ESTIMATE.match(cell)
                        assert m and _shown(m[1], value), (found[2], column, cell)
                        if m[2]:
                            assert _shown(m[2], target[f"{column}_ci_low"]), (found[2], column, cell)
                            assert _shown(m[3], target[f"{column}_ci_high"]), (found[2], column, cell)
                        checked += 1
    assert checked > 100
    # The numbers outside tables (section summaries) are quoted from evidence.json, not computed here.
    for section in evidence["sections"].values():
        if section["summary"]:
            assert section["summary"] in card.markdown


def test_todos_are_listed_when_card_yaml_is_missing_and_never_when_it_is_given(full: Path, facts_file: Path):
    from assay.govern import load_card_facts

    bare = build_card([full], None)
    assert bare.todos == list(REQUIRED_FACTS)
    for key in REQUIRED_FACTS:
        assert f"card.yaml `{key}`" in bare.markdown and f"card.yaml <code>{key}</code>" in bare.html
        assert any(f.evidence == f"card.yaml:{key}" and f.severity == "warning" for f in bare.findings)
    assert "license" not in bare.front_matter and "datasets" not in bare.front_matter  # never invented
    given = build_card([full], load_card_facts(facts_file))
    assert given.todos == [] and "TODO" not in given.markdown and "TODO" not in given.html
    assert not any((f.evidence or "").startswith("card.yaml:") for f in given.findings)
    assert "Anything involving people." in given.markdown and "Sorting scanned 8x8 glyphs" in given.html
    partial = build_card([full], CardFacts(license="mit", contact="x@example.org"))
    assert partial.todos == ["developers", "intended_use", "out_of_scope_use", "datasets"]


def test_the_card_is_deterministic_and_the_html_self_contained_and_small(full: Path):
    first, second = build_card([full], None), build_card([full], None)
    assert first.markdown == second.markdown and first.html == second.html
    # An in-memory model is named without angle brackets; any '<' of ours outside code is escaped for Markdown.
    assert "# Model card: in-memory Sequential\n" in first.markdown
    body = first.markdown.partition("\n---\n")[2]
    assert not re.search(r"(?<!\\)<(?!/?code>)", re.sub(r"`[^`]*`", "", body))
    page = first.html
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"https?://", page, re.I), re.search(r".{40}https?://.{40}", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert not re.search(r"""\bsrc\s*=""", page, re.I)
    assert len(page.encode()) < 400_000
    # The provider's text is shown, never run: escaped in the page (Markdown keeps it as written, for the Hub).
    hostile = build_card([full], CardFacts(intended_use='<script>alert(1)</script><img src="x">')).html
    assert "<script" not in hostile and "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile and "<img" not in hostile
    for title in ("Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Quantitative analyses",
                  "Calibration, robustness and OOD", "Bias", "Risks and limitations", "Environmental impact",
                  "Technical specifications", "Monitoring and rollback", "Change log", "Governance crosswalk",
                  "Sources"):
        assert f"<h2>{title}</h2>" in page and f"## {title}" in first.markdown


def test_energy_is_labelled_an_estimate_only_when_it_is_one(full: Path, tmp_path: Path):
    card = build_card([full], None)
    evidence = json.loads((full / "evidence.json").read_text())
    energy = evidence["sections"]["efficiency"]["metrics"]["energy_j_per_1000"]
    estimated = "estimate" in energy["method"].lower()
    assert ("Energy per 1,000 inferences (estimate)" in card.markdown) == estimated
    measured = tmp_path / "measured"
    shutil.copytree(full, measured)
    energy.update(method="rapl: measured with the RAPL package counter", config={**energy["config"], "method": "rapl"})
    (measured / "evidence.json").write_text(json.dumps(evidence))
    card = build_card([measured], None)
    assert "Energy per 1,000 inferences (measured)" in card.markdown and "(ESTIMATE" not in card.markdown
    # The edited evidence.json no longer matches its manifest: the card says so.
    assert any("no longer matches the sha256 in its manifest" in f.message for f in card.findings)


def test_several_bundles_give_one_results_block_each_and_say_how_the_models_differ(full: Path, quick: Path):
    card = build_card([full, quick], None)
    index = card.front_matter["model-index"][0]["results"]
    assert len(index) == 2
    assert index[1]["dataset"]["revision"] == json.loads((quick / "evidence.json").read_text())["data"]["fingerprint"]
    assert "\n### Results: B1" in card.markdown
    assert "### Results: B2" in card.markdown and "Model sha256 (B2)" in card.markdown
    assert any("different model files" in f.message for f in card.findings)
    names = [m["name"] for r in index for m in r["metrics"]]
    assert "Accuracy (B1)" in names and "Accuracy (B2)" in names
    sources = {row[0] for header, rows in _tables(card.markdown) if header[:2] == ["id", "bundle"] for row in rows}
    assert {"E1", "E2"} <= sources


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_end_to_end_cli_writes_the_card_folder(full: Path, facts_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "card"
    code, stdout, stderr = _run(["card", str(full), "--out", str(out)], capsys)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "assay-manifest.json", "crosswalk.json",
                                                      "model_card.html"]
    assert read_manifest(out)["kind"] == "card"
    assert "TODO in the card: developers, contact, license, intended_use, out_of_scope_use, datasets" in stdout
    crosswalk = json.loads((out / "crosswalk.json").read_text())
    gaps = {g["id"] for g in crosswalk["gaps"]}
    assert "MEASURE 2.2" in gaps and "MEASURE 2.10" not in gaps  # the full bundle has a privacy section
    assert crosswalk == build_card([full], None).crosswalk
    # Again with card.yaml, into the same folder (an Assay card folder is replaced): no TODO left.
    code, stdout, stderr = _run(["card", str(full), "--card", str(facts_file), "--out", str(out)], capsys)
    assert code == 0 and "TODO" not in stdout and "TODO" not in (out / "MODEL_CARD.md").read_text()
    assert "license: apache-2.0" in (out / "MODEL_CARD.md").read_text()


BAD_FACTS = {
    "unknown key": ("licence: mit\nintended_use: x\n", "unknown key 'licence' (did you mean 'license'?)"),
    "two unknown keys": ("owner: me\nusage: x\n", "unknown keys 'owner', 'usage'"),
    "wrong type": ("developers: 3\n", "'developers'"),
    "list for text": ("intended_use: [a, b]\n", "'intended_use'"),
    "bad licence id": ("license: Apache 2.0 or whatever\n", "'license'"),
    "python object tag": ("intended_use: !!python/object/apply:os.system ['echo pwned']\n", "!!python/object"),
    "custom tag": ("intended_use: !note hello\n", "tag '!note'"),
    "anchor": ("contact: &a me\nlicense: *a\n", "anchor or alias"),
    "not yaml": ("intended_use: [unclosed\n", "not valid YAML"),
    "not a mapping": ("- license\n- mit\n", "must be a mapping"),
    "not utf-8": (b"license: \xff\xfe\n", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD_FACTS))
def test_a_bad_card_yaml_is_exit_2_with_what_where_and_fix(case: str, full: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]):
    text, expected = BAD_FACTS[case]
    path = tmp_path / "card.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "card"
    code, _, stderr = _run(["card", str(full), "--card", str(path), "--out", str(out)], capsys)
    assert code == 2, stderr
    assert stderr.startswith("Error:") and "Fix:" in stderr and "Traceback" not in stderr, stderr
    flat = " ".join(stderr.split())
    assert expected in flat and str(path) in flat.replace(" ", "").replace(str(path).replace(" ", ""), str(path))
    assert not out.exists()


def test_the_output_folder_rules_hold(full: Path, quick: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, stderr = _run(["card", str(full), "--out", str(mine)], capsys)
    assert code == 2 and stderr.startswith("Error:") and "not written by Assay" in " ".join(stderr.split())
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    # An input bundle is never the output, nor an evaluation bundle replaced by a card without --force.
    code, _, stderr = _run(["card", str(full), "--out", str(full)], capsys)
    assert code == 2 and "input" in stderr
    other = tmp_path / "other-bundle"
    shutil.copytree(quick, other)
    code, _, stderr = _run(["card", str(full), "--out", str(other)], capsys)
    assert code == 2 and "--force" in stderr and (other / "evidence.json").exists()
    code, _, stderr = _run(["card", str(full), "--out", str(other), "--force"], capsys)
    assert code == 0 and read_manifest(other)["kind"] == "card" and not (other / "evidence.json").exists()


def test_a_missing_bundle_or_unknown_registry_reference_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, _, stderr = _run(["card", str(tmp_path / "nope"), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and stderr.startswith("Error:") and "Fix:" in stderr and "Traceback" not in stderr
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    code, _, stderr = _run(["card", "digits@production", "--registry", url, "--artifacts", str(tmp_path / "art"),
                            "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and stderr.startswith("Error:") and "Traceback" not in stderr, stderr
    assert "no registry at" in " ".join(stderr.split())
    assert not (tmp_path / "c").exists() and not (tmp_path / "reg.db").exists()  # a card never creates a registry


def test_registry_references_resolve_to_the_versions_evidence_and_history(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]):
    torch = pytest.importorskip("torch")
    import assay
    from assay.models.export import export_onnx
    from assay.registry import open_registry
    from conftest import make_blobs_dataset

    data, _ = make_blobs_dataset(n=120, dim=4, seed=1)
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    model = export_onnx(net, torch.from_numpy(data.x[:2]), tmp_path / "m.onnx", class_names=data.class_names)
    assay.evaluate(str(model), data, out=tmp_path / "bundle", cache_dir=False, n_bootstrap=100)
    url, artifacts = f"sqlite:///{tmp_path / 'reg.db'}", tmp_path / "artifacts"
    reg = open_registry(url, artifacts=artifacts)
    try:
        version = reg.register("sorter", model, evidence=tmp_path / "bundle", message="first")
        reg.move_alias("sorter", "production", version.version, expected=None, action="promote", reason="first ship")
    finally:
        reg.close()
    out = tmp_path / "card"
    code, _, stderr = _run(["card", "sorter@production", str(tmp_path / "bundle"), "--registry", url, "--artifacts",
                            str(artifacts), "--out", str(out)], capsys)
    assert code == 0, stderr
    text = (out / "MODEL_CARD.md").read_text()
    assert "### Results: sorter@1" in text and "### Results: B2" in text
    assert "Model card: sorter" in text and "assay registry rollback sorter --alias production" in text
    log = [row for header, rows in _tables(text) if header[:3] == ["when", "alias", "action"] for row in rows]
    assert [(r[1], r[2], r[3], r[6]) for r in log] == [("production", "promote", "— -> 1", "first ship")]
    crosswalk = json.loads((out / "crosswalk.json").read_text())
    assert "GOVERN 1.7" not in {g["id"] for g in crosswalk["gaps"]}
    code, _, stderr = _run(["card", "sorter@staging", "--registry", url, "--artifacts", str(artifacts), "--out",
                            str(tmp_path / "card2")], capsys)
    assert code == 2 and stderr.startswith("Error:") and "staging" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "card2").exists()


def test_card_is_a_known_output_kind(monkeypatch: pytest.MonkeyPatch):
    """The card folder's kind must be one evidence/output.py knows (else `assay card` fails with an internal
    error): the one-line change `OUTPUT_KINDS = (..., "card")` in src/assay/evidence/output.py."""
    monkeypatch.undo()
    assert CARD_KIND in output.OUTPUT_KINDS, "add 'card' to OUTPUT_KINDS in src/assay/evidence/output.py"


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="`\n\r", blacklist_categories=("Cs",)),
                        max_size=30), min_size=1, max_size=4))
def test_table_cells_survive_markdown_escaping(texts: list[str]):
    """Any cell text (pipes, backslashes, '<', Markdown characters) reads back from the Markdown table."""
    doc = CardDocument("t", "s", [CardSection("S", "s", [Table([f"c{i}" for i in range(len(texts))],
                                                              [[Cell(t) for t in texts]])])])
    (header, rows), = _tables(render_card_markdown(doc, "a: 1"))
    assert rows == [[t.strip() for t in texts]]

