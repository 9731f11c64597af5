"""datasheet.yaml -> DATASHEET.md, licence obligations, and the model card's links to the datasheet and the audit.

References: the SPDX licence list as license-expression ships it (every CC-BY* id's name says what it asks:
NC, SA, ND), huggingface_hub's own DatasetCard parser for the front matter, yaml.safe_load of the datasheet for
"every fact traceable", hashlib over the file bytes for the crosswalk rows, and a hand-made audit evidence.json
built with the schema classes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.errors import OptionError, UserError
from assay.evidence import output
from assay.evidence.schema import DataInfo, EnvironmentInfo, Evidence, Finding, Metric, ModelInfo, Section
from assay.govern import build_card
from assay.govern.bundles import AUDIT_SECTIONS, load_audit
from assay.govern.datasheet import (
    REQUIRED_DATASHEET_FACTS,
    Datasheet,
    datasheet_document,
    datasheet_front_matter,
    gaps,
    licence_obligations,
    load_datasheet,
    parse_datasheet,
    render_datasheet,
    validate_licence,
)
from assay.report.card import CardSection, Facts, Link, Paragraph
from cli_helpers import assert_user_error, run_cli

FULL = """\
name: Scanned glyphs
description: 8x8 grey-level scans of hand-written glyphs.
motivation: Built to test small classifiers on a known task.
creators: [Glyph lab]
source: Forms scanned at the lab, 2019 (internal archive ref G-17).
license: CC-BY-SA-4.0 AND CC-BY-4.0
composition: 1,797 images of 10 classes, one split file per class.
instances: 1797
collection: Forms filled in by 43 volunteers, scanned at 300 dpi.
consent: Volunteers signed a written consent for research use.
preprocessing: Cropped, downsampled to 8x8, grey levels 0-16.
labeling: Each form states the glyph it holds; labels copied from the form.
intended_uses: Teaching and testing image classifiers.
task_categories: [image-classification]
distribution: Public download from the lab's site.
maintenance: The glyph lab answers issues on its tracker.
contact: glyphs@example.org
"""

SPARSE = "source: A public web crawl.\nlicense: MIT\n"


def _write(tmp_path: Path, text: str, name: str = "datasheet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- SPDX


@pytest.mark.parametrize(("expression", "normalised", "keys"), [
    ("MIT", "MIT", ["MIT"]),
    ("mit", "MIT", ["MIT"]),
    ("MIT OR Apache-2.0", "MIT OR Apache-2.0", ["MIT", "Apache-2.0"]),
    ("CC-BY-SA-4.0 AND CC-BY-4.0", "CC-BY-SA-4.0 AND CC-BY-4.0", ["CC-BY-SA-4.0", "CC-BY-4.0"]),
    ("(CC-BY-4.0 OR MIT) AND ODbL-1.0", "(CC-BY-4.0 OR MIT) AND ODbL-1.0", ["CC-BY-4.0", "MIT", "ODbL-1.0"]),
    ("GPL-2.0+", "GPL-2.0-or-later", ["GPL-2.0-or-later"]),
    ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception", ["Apache-2.0", "LLVM-exception"]),
    ("LicenseRef-internal-use", "LicenseRef-internal-use", ["LicenseRef-internal-use"]),
])
def test_valid_and_compound_spdx_expressions_are_normalised(expression: str, normalised: str, keys: list[str]):
    assert validate_licence(expression) == normalised
    found = re.findall(r"[A-Za-z0-9.+:-]+", normalised)
    assert [k for k in found if k not in ("AND", "OR", "WITH")] == keys


@pytest.mark.parametrize(("expression", "fragments"), [
    ("CC-BY-SA-40", ["'CC-BY-SA-40'", "did you mean 'CC-BY-SA-4.0'?"]),
    ("MIT AND Apache2", ["'MIT AND Apache2'", "'Apache2'"]),
    ("Foo-1.0 OR Bar-2", ["'Foo-1.0'", "'Bar-2'", "unknown licence ids"]),
    ("(MIT", ["'(MIT'", "not valid SPDX"]),
    ("MIT AND OR Apache-2.0", ["not valid SPDX"]),
    ("MIT WITH MIT", ["'MIT WITH MIT'", "cannot be used as an exception"]),  # known id in the wrong place
    ("Classpath-exception-2.0", ["can only be used as an exception"]),
    ("MIT AND Apache2", ["'Apache2' (did you mean 'Apache-2.0'?)"]),
    (" AND ".join(["MIT"] * 200), ["at most 1000"]),
])
def test_an_invalid_expression_names_it_its_unknown_ids_and_the_fix(expression: str, fragments: list[str]):
    with pytest.raises(OptionError) as info:
        validate_licence(expression)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.fix and "SPDX" in info.value.fix and "LicenseRef-" in info.value.fix


def _kinds(expression: str) -> set[str]:
    return {line.split(":", 1)[0] for line in licence_obligations(expression)}


def test_obligations_of_cc_by_nc_sa_and_friends():
    assert {"attribution", "share-alike", "non-commercial"} <= _kinds("CC-BY-NC-SA-4.0")
    assert "no-derivatives" not in _kinds("CC-BY-NC-SA-4.0")
    assert _kinds("CC0-1.0") == {"none"}
    assert {"attribution", "share-alike"} <= _kinds("ODbL-1.0")
    apache = _kinds("Apache-2.0")
    assert {"notice", "state-changes", "patent-grant"} <= apache and "share-alike" not in apache
    assert "share-alike" in _kinds("GPL-3.0-only") and "network-use" in _kinds("AGPL-3.0-or-later")
    # AND: both licences' obligations, each naming its licence; OR: a choice, said first.
    both = licence_obligations("CC-BY-SA-4.0 AND MIT")
    assert any(line.startswith("share-alike") and "(CC-BY-SA-4.0)" in line for line in both)
    assert any(line.startswith("notice") and "(MIT)" in line for line in both)
    either = licence_obligations("MIT OR Apache-2.0")
    assert either[0].startswith("choice:")


@pytest.mark.parametrize("expression", ["Zed", "Beerware", "LicenseRef-internal-use"])
def test_a_licence_outside_the_table_says_check_the_text_and_guesses_nothing(expression: str):
    lines = licence_obligations(expression)
    assert len(lines) == 1 and lines[0].startswith("unknown:") and "check the licence text" in lines[0]


def _cc_ids() -> list[str]:
    from license_expression import get_spdx_licensing

    return sorted(k for k in get_spdx_licensing().known_symbols if k.startswith("CC-BY"))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_cc_ids()))
def test_every_cc_by_licence_asks_what_its_name_says(key: str):
    kinds = _kinds(key)
    tokens = set(key.split("-"))
    assert "attribution" in kinds
    assert ("non-commercial" in kinds) == ("NC" in tokens)
    assert ("share-alike" in kinds) == ("SA" in tokens)
    assert ("no-derivatives" in kinds) == ("ND" in tokens)


# --------------------------------------------------------------------------------------------- loading


def test_a_full_datasheet_loads_with_no_gaps(tmp_path: Path):
    path = _write(tmp_path, FULL)
    sheet = load_datasheet(path)
    assert gaps(sheet) == []
    assert sheet.license == "CC-BY-SA-4.0 AND CC-BY-4.0"
    assert sheet.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and sheet.source_file == str(path)


def test_a_sparse_datasheet_lists_its_gaps_and_invents_nothing(tmp_path: Path):
    sheet = load_datasheet(_write(tmp_path, SPARSE))
    expected = [k for k in REQUIRED_DATASHEET_FACTS if k not in ("source", "license")]
    assert [g.split(":", 1)[0] for g in gaps(sheet)] == expected
    markdown = render_datasheet(sheet)
    for key in expected:
        assert f"(datasheet.yaml `{key}`)" in markdown and "TODO" in markdown
    assert "size_categories" not in markdown and "pretty_name" not in markdown  # no instance count, no name given


def _provider_facts(blocks: list) -> list[tuple[str, str]]:
    """(text, source) of every provider fact in a document: prose paragraphs (the note after them names the key)
    and facts rows."""
    found = []
    for i, block in enumerate(blocks):
        if isinstance(block, CardSection):
            found += _provider_facts(list(block.blocks))
        elif isinstance(block, Paragraph) and block.kind == "provider":
            note = blocks[i + 1]
            assert isinstance(note, Paragraph) and note.kind == "note", block
            found.append((block.text, note.text))
        elif isinstance(block, Facts):
            found += [(value if isinstance(value, str) else "", source) for _, value, source in block.rows
                      if not isinstance(value, Link) and "datasheet.yaml:" in source]
    return found


@pytest.mark.parametrize("text", [FULL, SPARSE, "license: CC0-1.0\ninstances: 12\n"])
def test_every_rendered_fact_is_traceable_to_the_yaml(text: str, tmp_path: Path):
    raw = yaml.safe_load(text)
    sheet = load_datasheet(_write(tmp_path, text))
    facts = _provider_facts(list(datasheet_document(sheet).sections))
    assert facts
    for shown, source in facts:
        key = re.search(r"datasheet\.yaml:([a-z_]+)", source)
        assert key is not None, source
        value = raw[key.group(1)]
        expected = ", ".join(map(str, value)) if isinstance(value, list) else str(value).strip()
        if key.group(1) == "license":
            expected = f"`{validate_licence(str(value))}`"
        assert shown == expected, (key.group(1), shown)
    assert {re.search(r"datasheet\.yaml:([a-z_]+)", s).group(1) for _, s in facts} == set(raw)  # type: ignore[union-attr]


BAD = {
    "python tag": ("source: !!python/object/apply:os.system ['echo pwned']\n", "!!python/object"),
    "custom tag": ("source: !note hello\n", "tag '!note'"),
    "anchor": ("source: &a x\ncollection: *a\n", "anchor or alias"),
    "unknown key": ("licence: MIT\n", "unknown key 'licence' (did you mean 'license'?)"),
    "bad spdx": ("source: x\nlicense: CC-BY-SA-40\n", "did you mean 'CC-BY-SA-4.0'?"),
    "wrong type": ("instances: many\n", "'instances'"),
    "not a mapping": ("- MIT\n", "must be a mapping"),
    "too large": ("source: " + "x" * (300 * 1024) + "\n", "larger than 256 KiB"),
    "nul bytes": ("source: a\x00b\n", "NUL bytes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_datasheet_is_refused_with_where_and_fix(case: str, tmp_path: Path):
    text, expected = BAD[case]
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_datasheet(path)
    flat = " ".join(str(info.value).split())
    assert expected in flat and str(path) in (info.value.where or "") and info.value.fix


def test_the_bad_licence_error_names_its_line(tmp_path: Path):
    path = _write(tmp_path, "source: x\n\nlicense: MTI OR Apache-2.0\n")
    with pytest.raises(OptionError) as info:
        load_datasheet(path)
    assert info.value.where == f"{path}:3" and "'MTI'" in str(info.value)


# --------------------------------------------------------------------------------------------- front matter


def test_front_matter_parses_as_a_hugging_face_dataset_card(tmp_path: Path):
    hub = pytest.importorskip("huggingface_hub")
    card = hub.DatasetCard(render_datasheet(load_datasheet(_write(tmp_path, FULL))))
    data = card.data
    assert data.license == ["cc-by-sa-4.0", "cc-by-4.0"]
    assert data.task_categories == ["image-classification"] and data.size_categories == ["1K<n<10K"]
    assert data.pretty_name == "Scanned glyphs"
    assert "## Motivation" in card.text and "## Maintenance" in card.text


@pytest.mark.parametrize(("expression", "hub_license"), [
    ("ODbL-1.0", "odbl"), ("GPL-3.0-or-later", "gpl-3.0"), ("cc0-1.0", "cc0-1.0"),
    ("MIT OR Apache-2.0", ["mit", "apache-2.0"]),
    ("Apache-2.0 WITH LLVM-exception", "other"), ("LicenseRef-internal", "other"),
])
def test_hub_licence_ids(expression: str, hub_license):
    meta = datasheet_front_matter(Datasheet(license=expression))
    assert meta["license"] == hub_license
    if hub_license == "other":
        assert meta["license_details"] == validate_licence(expression)


@pytest.mark.parametrize(("n", "bucket"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (1797, "1K<n<10K"),
                                           (99_999, "10K<n<100K"), (1_000_000, "1M<n<10M"), (10**13, "n>1T")])
def test_size_categories_follow_the_hub_buckets(n: int, bucket: str):
    assert datasheet_front_matter(Datasheet(instances=n))["size_categories"] == [bucket]


# --------------------------------------------------------------------------------------------- audit


def _audit_evidence(sections: list[str]) -> Evidence:
    """A minimal audit evidence as `assay audit` writes it: one section per name, each with a count metric and
    an interval, built with the schema classes."""
    built = {}
    for i, name in enumerate(sections):
        built[name] = Section(name=name, title=name.capitalize(), verdict="warn", summary=f"{name} summary {i}.",
                              metrics={f"{name}_share": Metric(value=0.0312 + i / 100, ci_low=0.021,
                                                               ci_high=0.0456 + i / 100, n=360,
                                                               method="clopper-pearson(0.95)"),
                                       f"{name}_count": Metric(value=11 + i, n=360, method="count")},
                              findings=[Finding(severity="warning", message=f"{name} found {11 + i} items")])
    return Evidence(
        created_at="2026-12-03T09:00:00Z",
        model=ModelInfo(path="<no model: model-free embeddings>", format="none", sha256="0" * 64,
                        input_shape=[None, 64],
                        input_dtype="float32", num_classes=10, class_names=[str(c) for c in range(10)]),
        data=DataInfo(name="digits:train", source="digits", modality="image", fingerprint="f" * 64, n=1437,
                      num_classes=10, class_names=[str(c) for c in range(10)], input_shape=[1, 8, 8]),
        environment=EnvironmentInfo(assay="test", python="3.11", platform="linux", numpy="2"),
        seed=0, config={"kind": "audit"}, sections=built)


def _audit_bundle(base: Path, sections: list[str]) -> Path:
    folder = base / "audit"
    folder.mkdir()
    (folder / "evidence.json").write_text(_audit_evidence(sections).model_dump_json(indent=2), encoding="utf-8")
    (folder / "report.html").write_text("<html>audit</html>\n", encoding="utf-8")
    return folder


def test_the_audit_is_quoted_with_its_intervals_and_a_partial_one_states_its_gaps(tmp_path: Path):
    sheet = load_datasheet(_write(tmp_path, FULL))
    audit = load_audit(_audit_bundle(tmp_path, ["duplicates", "leakage", "integrity"]))
    assert audit.missing == ("labels",) and any("labels" in f.message for f in audit.findings)
    markdown = render_datasheet(sheet, audit)
    body = markdown.split("## Audit", 1)[1]
    assert "| `leakage_share` | 0.0412 [0.0210, 0.0556] | 360 | clopper-pearson(0.95) |" in body
    for name in ("duplicates", "leakage", "integrity"):
        assert f"AU `{name}.metrics.{name}_share`" in body and f"{name} found" in body
    assert "Gap: the audit has no labels section" in body
    assert f"sha256:{hashlib.sha256((audit.folder / 'evidence.json').read_bytes()).hexdigest()}" in markdown


def test_a_bundle_without_audit_sections_is_not_an_audit(tmp_path: Path):
    folder = _audit_bundle(tmp_path, [])
    with pytest.raises(UserError) as info:
        load_audit(folder)
    assert "not an audit bundle" in str(info.value) and "assay audit" in (info.value.fix or "")


# --------------------------------------------------------------------------------------------- card


@pytest.fixture(autouse=True)
def _card_output_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    if "card" not in output.OUTPUT_KINDS:
        monkeypatch.setattr(output, "OUTPUT_KINDS", (*output.OUTPUT_KINDS, "card"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import assay
    from conftest import make_blobs_dataset

    out = tmp_path_factory.mktemp("ds") / "bundle"
    data, model = make_blobs_dataset(n=150, seed=5)
    assay.evaluate(model, data, out=out, cache_dir=False, n_bootstrap=100)
    return out


DATA_ENTRIES = ("MAP 2.3", "MEASURE 2.1", "Annex IV 2(d)")


def test_the_card_links_the_datasheet_and_audit_and_the_crosswalk_rows_are_filled(bundle: Path, tmp_path: Path):
    ds_path = _write(tmp_path, FULL)
    audit_dir = _audit_bundle(tmp_path, list(AUDIT_SECTIONS))
    plain = build_card([bundle], None)
    card = build_card([bundle], None, datasheet=load_datasheet(ds_path), audit=audit_dir)
    training = card.markdown.split("### Training data", 1)[1].split("\n## ", 1)[0]
    assert "[DATASHEET.md](DATASHEET.md)" in training
    assert f"[{audit_dir.resolve() / 'report.html'}]" in training and "`CC-BY-SA-4.0 AND CC-BY-4.0`" in training
    assert "share-alike:" in training and "leakage_share" in training
    assert card.datasheet is not None and card.datasheet.startswith("---\n") and plain.datasheet is None
    assert '<a href="DATASHEET.md">DATASHEET.md</a>' in card.html and "DATASHEET.md" not in plain.markdown
    ds_sha = hashlib.sha256(ds_path.read_bytes()).hexdigest()
    au_sha = hashlib.sha256((audit_dir / "evidence.json").read_bytes()).hexdigest()
    for entry in DATA_ENTRIES:
        rows = [r for r in card.crosswalk["rows"] if r["id"] == entry]
        kinds = {r["kind"] for r in rows}
        assert {"datasheet", "audit"} <= kinds, (entry, kinds)
        for r in rows:
            if r["kind"] == "datasheet":
                assert r["sha256"] == ds_sha and r["source_id"] == "DS"
                assert all(p.startswith("datasheet.yaml:") for p in r["pointers"])
            if r["kind"] == "audit":
                assert r["sha256"] == au_sha and r["source_id"] == "AU" and r["path"].endswith("evidence.json")
        assert not {"datasheet", "audit"} & {r["kind"] for r in plain.crosswalk["rows"] if r["id"] == entry}
    assert json.dumps(card.crosswalk["datasheet"]) and card.crosswalk["audit"]["missing_sections"] == []
    sources = card.markdown.split("## Sources", 1)[1]
    assert f"sha256:{ds_sha}" in sources and f"sha256:{au_sha}" in sources


def test_a_partial_audit_fills_only_what_it_has(bundle: Path, tmp_path: Path):
    audit_dir = _audit_bundle(tmp_path, ["integrity"])
    (audit_dir / "DATASHEET.md").write_text(render_datasheet(Datasheet(source="x")), encoding="utf-8")
    card = build_card([bundle], None, audit=audit_dir)
    assert f"[{audit_dir.resolve() / 'DATASHEET.md'}]({audit_dir.resolve() / 'DATASHEET.md'})" in card.markdown
    audit_rows = [r for r in card.crosswalk["rows"] if r["kind"] == "audit"]
    assert audit_rows and {p.split(".")[0] for r in audit_rows for p in r["pointers"]} == {"integrity"}
    assert "Partial audit: no duplicates, leakage, labels sections;" in card.markdown
    assert any("partial" in f.message for f in card.findings)


def test_the_api_writes_the_datasheet_into_the_card_folder_and_refuses_an_audit_as_output(bundle: Path,
                                                                                          tmp_path: Path):
    from assay.api import card
    from assay.errors import OutputError

    audit_dir = _audit_bundle(tmp_path, ["leakage"])
    out = tmp_path / "card"
    card([bundle], datasheet=_write(tmp_path, SPARSE), audit=audit_dir, out=out)
    written = (out / "DATASHEET.md").read_text()
    assert "TODO" in written and "Gap: the audit has no labels section" in written
    assert "DATASHEET.md" in json.loads((out / "assay-manifest.json").read_text())["files"]
    with pytest.raises(OutputError):  # the audit folder is an input: a card never overwrites it
        card([bundle], audit=audit_dir, out=audit_dir, force=True)


def test_cli_writes_the_datasheet_next_to_the_card(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "card"
    code, stdout, stderr = run_cli(["card", str(bundle), "--datasheet", str(_write(tmp_path, FULL)), "--audit",
                                    str(_audit_bundle(tmp_path, list(AUDIT_SECTIONS))), "--out", str(out)], capsys)
    assert code == 0, stderr
    assert (out / "DATASHEET.md").is_file() and "DATASHEET.md" in stdout
    assert "## Audit" in (out / "DATASHEET.md").read_text()
    assert "DATASHEET.md" in json.loads((out / "assay-manifest.json").read_text())["files"]


@pytest.mark.parametrize("case", ["bad spdx", "python tag", "not an audit", "missing datasheet"])
def test_cli_bad_datasheet_or_audit_is_exit_2(case: str, bundle: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "card"
    args = ["card", str(bundle), "--out", str(out)]
    if case == "not an audit":
        args += ["--audit", str(bundle)]
        expected = "not an audit bundle"
    elif case == "missing datasheet":
        args += ["--datasheet", str(tmp_path / "nope.yaml")]
        expected = "no datasheet.yaml at"
    else:
        text, expected = BAD[case]
        args += ["--datasheet", str(_write(tmp_path, text))]
    code, _, stderr = run_cli(args, capsys)
    assert_user_error(code, stderr, expected)
    assert not out.exists()


def test_parse_datasheet_accepts_an_empty_file():
    sheet = parse_datasheet("")
    assert [g.split(":", 1)[0] for g in gaps(sheet)] == list(REQUIRED_DATASHEET_FACTS)


_TOKENS = st.sampled_from(["MIT", "mit", "Apache-2.0", "CC-BY-4.0", "AND", "OR", "WITH", "(", ")", "and", "or",
                           "Classpath-exception-2.0", "LicenseRef-x", "Foo", "+", "GPL-2.0", "", "DocumentRef-a:b"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_TOKENS, max_size=12).map(" ".join), st.text(max_size=80)))
def test_any_text_is_a_licence_or_an_option_error(text: str):
    """Whatever a datasheet says, the licence check answers with a normalised expression or a user error, never
    an internal one; a normalised expression validates again to itself (idempotent)."""
    try:
        normalised = validate_licence(text)
    except OptionError as exc:
        assert exc.fix
        return
    assert validate_licence(normalised) == normalised
    assert isinstance(licence_obligations(normalised), list) and licence_obligations(normalised)
