"""The model card: MODEL_CARD.md (Hugging Face front matter + body), model_card.html and crosswalk.json.

Sections follow Mitchell et al. 2019 ("Model Cards for Model Reporting", FAT* 2019) and the Hugging Face model
card template: model details, intended use, factors, metrics, evaluation data, quantitative analyses (overall,
per class, per slice, fairness), calibration / robustness / OOD, bias, risks and limitations, environmental
impact, technical specifications, monitoring and rollback, change log, the governance crosswalk, sources.

Every number comes from an evaluation bundle and names where: a source id (``E1`` = the first bundle's
evidence.json) and a pointer into the file (``performance.metrics.accuracy``, ``performance.tables.per_class[3]``);
the Sources table gives each id's sha256. Facts no evaluation can know come from ``card.yaml``
(:mod:`assay.govern.facts`); a missing one is marked TODO and listed in :attr:`ModelCard.findings`.

:func:`build_card` is pure (it reads the bundles and returns text); :func:`write_card` writes the output folder
atomically (kind ``card``; only an Assay card folder is ever replaced, see :mod:`assay.evidence.output`). The same
inputs give the same bytes: nothing in a card depends on the clock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.evidence.schema import Finding, Metric, Section
from assay.govern.bundles import LoadedAudit, LoadedBundle, LoadedScan, load_audit, load_bundles, load_scan
from assay.govern.crosswalk import build_crosswalk, metric_pattern
from assay.govern.datasheet import (
    DATASHEET_FILE,
    REQUIRED_DATASHEET_FACTS,
    Datasheet,
    licence_obligations,
    render_datasheet,
)
from assay.govern.facts import REQUIRED_FACTS, CardFacts
from assay.report.card import (
    CardDocument,
    CardSection,
    Cell,
    Facts,
    Items,
    Link,
    Paragraph,
    Table,
    Todo,
    render_card_html,
    render_card_markdown,
)
from assay.report.formatting import MISSING, format_number, metric_parts, short_hash, table_cells

__all__ = ["CARD_FILES", "CARD_KIND", "ModelCard", "build_card", "write_card"]

#: The output kind of a card folder (its manifest's ``kind``).
CARD_KIND = "card"
#: What a card folder holds.
CARD_FILES = ("MODEL_CARD.md", "model_card.html", "crosswalk.json")

#: What the card shows of each section: metric names or patterns (``*``), then tables; None = the section's
#: lead tables. The full lists stay in evidence.json, one pointer away.
SHOWN: dict[str, tuple[list[str], list[str] | None]] = {
    "performance": (["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top5_accuracy", "nll", "brier"],
                    ["per_class"]),
    "calibration": (["ece", "ece_adaptive", "mce", "classwise_ece", "ece_debiased", "temperature",
                     "ece_before_temperature", "ece_after_temperature"], []),
    "corruption": (["clean_accuracy", "mean_corruption_accuracy", "worst_corruption_accuracy", "mce", "relative_mce",
                    "flip_rate", "mean_ece_under_corruption"], ["per_corruption"]),
    "adversarial": (["clean_accuracy", "robust_accuracy", "robust_accuracy_*"], ["robust_vs_eps"]),
    "ood": (["aurc"], None),
    "budget": (["clean_accuracy", "mean_corruption_accuracy", "worst_corruption_accuracy", "relative_drop",
                "robust_accuracy", "auroc_msp[*]", "widest_interval", "passes_used"], ["larger_budget"]),
    "label_free": (["mae_on_corruptions[*]"], None),
    "slices": (["worst_slice_gap[*]"], ["*"]),
    "fairness": (["*"], ["*"]),
    "efficiency": (["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_per_s", "model_size_mb",
                    "parameters", "flops", "peak_rss_mb", "energy_j_per_1000", "cost_per_million"], []),
}
#: Rows of a table the card shows before pointing to evidence.json for the rest.
MAX_TABLE_ROWS = 40
#: Columns of a table the card shows (the first ones; the rest stay in evidence.json).
MAX_TABLE_COLUMNS = 9

#: Hugging Face model-index metrics: (section, metric, Hub metric type, display name, metric args).
HF_METRICS: tuple[tuple[str, str, str, str, dict[str, Any] | None], ...] = (
    ("performance", "accuracy", "accuracy", "Accuracy", None),
    ("performance", "balanced_accuracy", "balanced_accuracy", "Balanced accuracy", None),
    ("performance", "macro_f1", "f1", "Macro F1", {"average": "macro"}),
    ("performance", "weighted_f1", "f1", "Weighted F1", {"average": "weighted"}),
    ("calibration", "ece", "ece", "Expected calibration error", None),
    ("corruption", "mean_corruption_accuracy", "accuracy", "Mean corruption accuracy", None),
    ("adversarial", "robust_accuracy", "accuracy", "Robust accuracy", None),
)
_PIPELINE_TAGS = {"image": "image-classification", "tabular": "tabular-classification",
                  "text": "text-classification"}
_LIBRARIES = {"onnx": "onnx", "torchscript": "pytorch", "torch-export": "pytorch", "factory": "pytorch"}


@dataclass(frozen=True)
class ModelCard:
    """A built card: ``markdown`` (MODEL_CARD.md), ``html`` (model_card.html), ``crosswalk`` (crosswalk.json),
    ``front_matter`` (the parsed metadata), ``todos`` (card.yaml keys marked TODO) and ``findings`` (TODOs,
    bundles changed after Assay wrote them, bundles of different models, datasheet gaps, a partial audit).
    ``inputs``: the files it was built from (an output folder must not touch them). ``datasheet``: DATASHEET.md,
    written next to the card (which links it) when a datasheet was given."""

    name: str
    markdown: str
    html: str
    crosswalk: dict[str, Any]
    front_matter: dict[str, Any]
    todos: list[str]
    findings: list[Finding]
    inputs: tuple[Path, ...] = field(default_factory=tuple)
    datasheet: str | None = None


# --------------------------------------------------------------------------------------------- helpers


def _src(bundle: LoadedBundle | LoadedScan, pointer: str) -> Cell:
    return Cell(f"{bundle.source_id} `{pointer}`")


def _matches(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    names = list(names)
    out: dict[str, None] = {}
    for pattern in patterns:
        rx = metric_pattern(pattern)
        out.update(dict.fromkeys(n for n in names if rx.fullmatch(n)))
    return list(out)


def _metric_table(bundle: LoadedBundle | LoadedScan, section: Section, names: list[str], caption: str = ""
                  ) -> Table | None:
    """Metric | value [CI] | n | interval method | source, for the named metrics the section holds."""
    rows = []
    for name in names:
        metric = section.metrics.get(name)
        if metric is None or metric.value is None:
            continue
        value, ci = metric_parts(metric)
        rows.append([Cell(name, code=True), Cell(value, ci, numeric=True), Cell(format_number(metric.n), numeric=True),
                     Cell(metric.method), _src(bundle, f"{section.name}.metrics.{name}")])
    if not rows:
        return None
    return Table(["metric", "value [CI]", "n", "interval method", "source"], rows, caption)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _row_table(bundle: LoadedBundle | LoadedScan, section: Section, name: str) -> Table | None:
    """A section table, row by row, each row with its pointer (numbers formatted as the report does)."""
    rows = section.tables.get(name) or []
    if not rows:
        return None
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    columns = list(seen)
    merged = {c: (f"{c}_ci_low", f"{c}_ci_high") for c in columns
              if f"{c}_ci_low" in seen and f"{c}_ci_high" in seen}
    companions = {x for pair in merged.values() for x in pair}
    shown = [c for c in columns if c not in companions][:MAX_TABLE_COLUMNS]
    head = rows[:MAX_TABLE_ROWS]
    cells = table_cells(head, shown, {c: p for c, p in merged.items() if c in shown})
    body = []
    for i, (row, texts) in enumerate(zip(head, cells, strict=True)):
        body.append([Cell(text, ci, numeric=_is_number(row.get(c))) for c, (text, ci) in zip(shown, texts, strict=True)]
                    + [_src(bundle, f"{section.name}.tables.{name}[{i}]")])
    more = []
    if len(rows) > len(head):
        more.append(f"{len(rows) - len(head)} more rows")
    if len(shown) < len(columns) - len(companions):
        more.append(f"{len(columns) - len(companions) - len(shown)} more columns")
    caption = f"{section.name}.tables.{name}" + (f" ({', '.join(more)} in evidence.json)" if more else "")
    return Table([*shown, "source"], body, caption)


def _section_blocks(bundle: LoadedBundle, name: str) -> list[Any]:
    """The metrics and tables the card shows of one section (see :data:`SHOWN`), or [] when it is absent."""
    section = bundle.evidence.sections.get(name)
    if section is None:
        return []
    patterns, tables = SHOWN.get(name, (list(section.config.get("key_metrics") or []), None))
    names = _matches(patterns, section.metrics)
    blocks: list[Any] = []
    if section.summary:
        blocks.append(Paragraph(f"{section.title} ({bundle.label}): verdict {section.verdict}. {section.summary} "
                                f"({bundle.source_id} `{name}.summary`)"))
    table = _metric_table(bundle, section, names)
    if table is not None:
        blocks.append(table)
    rest = len([m for m in section.metrics if m not in names])
    if rest:
        blocks.append(Paragraph(f"{rest} more metric(s) of this section are in {bundle.source_id} "
                                f"`{name}.metrics`.", "note"))
    table_names = section.lead_tables if tables is None else _matches(tables, section.tables)
    for t in table_names:
        shown = _row_table(bundle, section, t)
        if shown is not None:
            blocks.append(shown)
    return blocks


def _facts_value(facts: CardFacts | None, key: str) -> str | None:
    value = getattr(facts, key, None) if facts is not None else None
    if value in (None, []):
        return None
    return ", ".join(value) if isinstance(value, list) else str(value)


def _fact_or_todo(facts: CardFacts | None, key: str) -> str | Todo:
    value = _facts_value(facts, key)
    return value if value is not None else Todo(key, REQUIRED_FACTS[key])


def _fact_source(facts: CardFacts | None, key: str) -> str:
    """The source note of a fact: F (the card.yaml the Sources table hashes) and its key; '' when not given."""
    return f"F `card.yaml:{key}`" if _facts_value(facts, key) is not None else ""


def _provider(facts: CardFacts | None, key: str) -> list[Any]:
    """A free-text fact as the provider wrote it (optional facts: nothing when absent)."""
    value = _facts_value(facts, key)
    return [Paragraph(value, "provider")] if value is not None else []


def _required(facts: CardFacts | None, key: str) -> list[Any]:
    """A required free-text fact, or its TODO mark."""
    value = _facts_value(facts, key)
    return [Paragraph(value, "provider")] if value is not None else [Todo(key, REQUIRED_FACTS[key])]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def _model_name(bundles: list[LoadedBundle], facts: CardFacts | None, name: str | None) -> str:
    if facts is not None and facts.name:
        return facts.name
    if name:
        return name
    path = bundles[0].evidence.model.path.strip("<>")  # "<in-memory Net>" names no file
    return Path(path).stem if "/" in path or "." in Path(path).name else path


# --------------------------------------------------------------------------------------------- sections


def _details(bundles: list[LoadedBundle], facts: CardFacts | None, name: str) -> CardSection:
    first = bundles[0]
    model = first.evidence.model
    rows: list[tuple[str, str | Todo, str]] = [("Name", name, "")]
    rows.append(("Developed by", _fact_or_todo(facts, "developers"), _fact_source(facts, "developers")))
    rows.append(("License", _fact_or_todo(facts, "license"), _fact_source(facts, "license")))
    rows.append(("Contact", _fact_or_todo(facts, "contact"), _fact_source(facts, "contact")))
    if facts is not None and facts.base_model:
        rows.append(("Fine-tuned from", facts.base_model, _fact_source(facts, "base_model")))
    rows.append(("Model type", f"{first.evidence.data.modality} classifier, {_plural(model.num_classes, 'class')}",
                 f"{first.source_id} `model.num_classes`"))
    rows.append(("Format", model.format, f"{first.source_id} `model.format`"))
    shas = list(dict.fromkeys(b.evidence.model.sha256 for b in bundles))
    for b in bundles:
        if len(shas) == 1 and b is not first:
            continue
        label = "Model sha256" if len(shas) == 1 else f"Model sha256 ({b.label})"
        rows.append((label, f"`{b.evidence.model.sha256}`", f"{b.source_id} `model.sha256`"))
    rows.append(("Model file", f"`{model.path}`" + (f" + weights `{model.weights}`" if model.weights else ""),
                 f"{first.source_id} `model.path`"))
    shape = ", ".join("N" if d is None else str(d) for d in model.input_shape)
    rows.append(("Input", f"{model.input_dtype} ({shape})", f"{first.source_id} `model.input_shape`"))
    rows.append(("Output", f"{model.outputs} over {_plural(model.num_classes, 'class')}",
                 f"{first.source_id} `model.outputs`"))
    names = model.class_names
    shown = ", ".join(names[:20]) + (f", ... (+{len(names) - 20} more)" if len(names) > 20 else "")
    rows.append(("Classes", shown or MISSING, f"{first.source_id} `model.class_names`"))
    rows.append(("Evidence", ", ".join(f"{b.label}: evaluated {b.evidence.created_at}" for b in bundles),
                 ", ".join(f"{b.source_id} `created_at`" for b in bundles)))
    blocks: list[Any] = [*_provider(facts, "description"), Facts(rows)]
    if len(shas) > 1:
        blocks.append(Paragraph(
            f"The {len(bundles)} bundles evaluate {len(shas)} different model files (sha256 above): each results "
            "block below is labelled with its bundle; read them as separate models (e.g. versions).", "note"))
    if model.untrained:
        blocks.append(Paragraph("The evaluated model is an untrained factory (random initial weights).", "note"))
    return CardSection("Model details", "model-details", blocks)


def _uses(facts: CardFacts | None) -> CardSection:
    return CardSection("Intended use", "intended-use", [
        CardSection("Primary intended uses and users", "intended-uses", _required(facts, "intended_use")),
        CardSection("Out-of-scope uses", "out-of-scope-uses", _required(facts, "out_of_scope_use")),
    ])


def _factors(bundles: list[LoadedBundle], facts: CardFacts | None) -> CardSection:
    items: list[str | Todo] = []
    for b in bundles:
        ev, sid = b.evidence, b.source_id
        items.append(f"{b.label}: per class ({_plural(ev.model.num_classes, 'class')}; {sid} "
                     "`performance.tables.per_class`)")
        if "slices" in ev.sections:
            cols = ev.sections["slices"].config.get("slice_by") or []
            items.append(f"{b.label}: slices of the data by {', '.join(map(str, cols))} ({sid} `slices.config`)")
        if "fairness" in ev.sections:
            cols = ev.sections["fairness"].config.get("sensitive") or []
            items.append(f"{b.label}: sensitive attributes {', '.join(map(str, cols))} ({sid} `fairness.config`)")
        if "corruption" in ev.sections:
            cfg = ev.sections["corruption"].config
            items.append(f"{b.label}: input corruptions {', '.join(map(str, cfg.get('corruptions') or []))} at "
                         f"severities {', '.join(map(str, cfg.get('severities') or []))} ({sid} `corruption.config`)")
        if "adversarial" in ev.sections:
            items.append(f"{b.label}: adversarial perturbations ({sid} `adversarial.config`)")
        if "ood" in ev.sections:
            sets = sorted({str(r.get("ood_set")) for r in ev.sections["ood"].tables.get("detectors", [])})
            items.append(f"{b.label}: out-of-distribution sets {', '.join(sets) or MISSING} "
                         f"({sid} `ood.tables.detectors`)")
        if "fairness" not in ev.sections:
            items.append(f"{b.label}: no sensitive attribute was evaluated (`assay evaluate --sensitive COLUMN`)")
    return CardSection("Factors", "factors", [
        Paragraph("Factors the evidence disaggregates the results by:"), Items(items),
        *_provider(facts, "factors")])


def _metrics(bundles: list[LoadedBundle]) -> CardSection:
    """Which metrics the card reports, their definitions and how their intervals were computed."""
    rows = []
    for b in bundles:
        for section in b.evidence.sections.values():
            patterns, _ = SHOWN.get(section.name, (list(section.config.get("key_metrics") or []), None))
            for name in _matches(patterns, section.metrics):
                m = section.metrics[name]
                if m.value is None:
                    continue
                definition = m.config.get("definition") if isinstance(m.config.get("definition"), str) else ""
                rows.append([Cell(name, code=True), Cell(section.name), Cell(definition or MISSING), Cell(m.method),
                             _src(b, f"{section.name}.metrics.{name}")])
        if len(bundles) > 1:
            break  # the bundles share metric definitions; the first one's list stands for all
    blocks: list[Any] = [Paragraph(
        "Every metric carries its uncertainty: a confidence interval and the method that produced it (bootstrap "
        "percentile unless a closed form or an exact method is better), with the exact configuration in "
        "evidence.json.")]
    if rows:
        blocks.append(Table(["metric", "section", "definition", "interval method", "source"], rows))
    return CardSection("Metrics", "metrics", blocks)


def _datasheet_blocks(sheet: Datasheet) -> list[Any]:
    """The datasheet's link, licence, licence obligations and gaps (the datasheet itself is DATASHEET.md)."""
    rows: list[tuple[str, str | Todo | Link, str]] = [
        ("Datasheet", Link(DATASHEET_FILE, DATASHEET_FILE),
         f"DS `datasheet.yaml` (sha256 `{short_hash(sheet.sha256)}`)")]
    if sheet.name:
        rows.append(("Data set", sheet.name, "DS `datasheet.yaml:name`"))
    rows.append(("Data licence (SPDX)", f"`{sheet.license}`" if sheet.license else
                 Todo("license", REQUIRED_DATASHEET_FACTS["license"], "datasheet.yaml"),
                 "DS `datasheet.yaml:license`" if sheet.license else ""))
    blocks: list[Any] = [Facts(rows)]
    if sheet.license:
        blocks += [Paragraph("Obligations of the data licence (a summary from Assay's table, not legal advice; the "
                             "licence text governs):"), Items(licence_obligations(sheet.license))]
    missing = [key for key in REQUIRED_DATASHEET_FACTS if getattr(sheet, key) in (None, [])]
    if missing:
        blocks += [Paragraph("Gaps of the datasheet (facts datasheet.yaml does not give):"),
                   Items([Todo(key, REQUIRED_DATASHEET_FACTS[key], "datasheet.yaml") for key in missing])]
    return [CardSection("Datasheet", "datasheet", blocks)]


def _audit_blocks(audit: LoadedAudit) -> list[Any]:
    """The data audit: links to its report and evidence, and each audit section's numbers with their intervals."""
    rows: list[tuple[str, str | Todo | Link, str]] = []
    if "report.html" in audit.files:
        rows.append(("Audit report", Link(str(audit.folder / "report.html"), str(audit.folder / "report.html")),
                     f"{audit.file_id('report.html')} (sha256 `{short_hash(audit.files['report.html'])}`)"))
    if "DATASHEET.md" in audit.files:
        rows.append(("Datasheet written with the audit", Link(str(audit.folder / DATASHEET_FILE),
                                                              str(audit.folder / DATASHEET_FILE)),
                     f"{audit.file_id(DATASHEET_FILE)} (sha256 `{short_hash(audit.files[DATASHEET_FILE])}`)"))
    rows.append(("Audit evidence", f"`{audit.folder / 'evidence.json'}`",
                 f"AU (sha256 `{short_hash(audit.files['evidence.json'])}`)"))
    rows.append(("Audited data", f"{audit.evidence.data.name} ({format_number(audit.evidence.data.n)} items)",
                 "AU `data`"))
    blocks: list[Any] = [Facts(rows)]
    if audit.missing:
        blocks.append(Paragraph(f"Partial audit: no {', '.join(audit.missing)} section"
                                f"{'s' if len(audit.missing) > 1 else ''}; what "
                                f"{'they measure' if len(audit.missing) > 1 else 'it measures'} is not known.",
                                "note"))
    for name, section in audit.evidence.sections.items():
        if name not in ("duplicates", "leakage", "labels", "integrity"):
            continue
        sub: list[Any] = [Paragraph(f"{section.title}: verdict {section.verdict}. {section.summary} "
                                    f"(AU `{name}.summary`)")]
        table = _metric_table(audit, section, list(section.metrics)[:MAX_TABLE_ROWS])
        if table is not None:
            sub.append(table)
        blocks.append(CardSection(section.title, f"audit-{name}", sub))
    return [CardSection("Data audit", "data-audit", blocks)]


def _data(bundles: list[LoadedBundle], facts: CardFacts | None, sheet: Datasheet | None = None,
          audit: LoadedAudit | None = None) -> CardSection:
    blocks: list[Any] = []
    for b in bundles:
        d, sid = b.evidence.data, b.source_id
        rows: list[tuple[str, str | Todo, str]] = [
            ("Name", d.name, f"{sid} `data.name`"), ("Source", f"`{d.source}`", f"{sid} `data.source`"),
            ("Modality", d.modality, f"{sid} `data.modality`"), ("Samples", format_number(d.n), f"{sid} `data.n`"),
            ("Classes", format_number(d.num_classes), f"{sid} `data.num_classes`"),
            ("Input shape", " x ".join(map(str, d.input_shape)), f"{sid} `data.input_shape`"),
            ("Fingerprint (sha256 of the content)", f"`{d.fingerprint}`", f"{sid} `data.fingerprint`"),
        ]
        if d.metadata_columns:
            rows.append(("Metadata columns", ", ".join(d.metadata_columns), f"{sid} `data.metadata_columns`"))
        for name in ("datasheet.md", "DATASHEET.md"):
            if (b.folder / name).is_file():
                rows.append(("Datasheet", f"`{b.folder / name}`", ""))
        blocks += [CardSection(f"Evaluation data: {b.label}", f"evaluation-data-{b.index}", [Facts(rows)])]
    if len({b.evidence.data.fingerprint for b in bundles}) > 1:
        blocks.append(Paragraph("The bundles were evaluated on different data (different fingerprints): their "
                                "numbers are not paired and compare only loosely.", "note"))
    training: list[Any] = [Facts([("Training data sets", _fact_or_todo(facts, "datasets"),
                                   _fact_source(facts, "datasets"))])]
    if facts is not None and facts.datasheet:
        training.append(Facts([("Datasheet", f"`{facts.datasheet}`", _fact_source(facts, "datasheet"))]))
    training += _provider(facts, "training_data")
    if sheet is not None:
        training += _datasheet_blocks(sheet)
    if audit is not None:
        training += _audit_blocks(audit)
    blocks.append(CardSection("Training data", "training-data", training))
    return CardSection("Evaluation data", "evaluation-data", blocks)


def _results(bundles: list[LoadedBundle]) -> CardSection:
    blocks: list[Any] = []
    for b in bundles:
        sub: list[Any] = []
        overall = _section_blocks(b, "performance")
        sub.append(CardSection("Overall and per class", f"results-overall-{b.index}", overall or [
            Paragraph("No performance section in this bundle.", "note")]))
        for name, title in (("slices", "Per slice"), ("fairness", "Fairness: per group")):
            shown = _section_blocks(b, name)
            if shown:
                sub.append(CardSection(title, f"results-{name}-{b.index}", shown))
        ev = b.evidence
        blocks.append(CardSection(f"Results: {b.label} ({ev.data.name})", f"results-{b.index}", sub))
    return CardSection("Quantitative analyses", "quantitative-analyses", blocks)


def _bundle_sections(bundles: list[LoadedBundle], titles: dict[str, str], anchor: str, how: str = ""
                     ) -> list[Any]:
    """One block per bundle with a sub-section for each of ``titles``' sections it has, and a note naming the
    ones it lacks (followed by ``how`` to get them)."""
    blocks: list[Any] = []
    for b in bundles:
        sub: list[Any] = [CardSection(title, f"{name}-{b.index}", _section_blocks(b, name))
                          for name, title in titles.items() if name in b.evidence.sections]
        absent = [title for name, title in titles.items() if name not in b.evidence.sections]
        if absent:
            sub.append(Paragraph(f"Not evaluated in {b.label}: {', '.join(absent)}{how}.", "note"))
        blocks.append(CardSection(f"{b.label}", f"{anchor}-{b.index}", sub))
    return blocks


def _reliability(bundles: list[LoadedBundle]) -> CardSection:
    titles = {"calibration": "Calibration", "corruption": "Corruption robustness", "adversarial": "Adversarial "
              "robustness", "ood": "Out-of-distribution detection", "label_free": "Label-free accuracy estimates"}
    return CardSection("Calibration, robustness and OOD", "calibration-robustness-ood",
                       _bundle_sections(bundles, titles, "reliability"))


def _scan_blocks(scan: LoadedScan) -> list[Any]:
    """The model-file scan: the file (by sha256), the verdict, its counts and findings, and any mismatch with the
    evaluated model."""
    section = scan.section
    verdict = section.config.get("scan_verdict", section.verdict)
    blocks: list[Any] = [Paragraph(f"Model file scan: verdict {verdict}. {section.summary} (SC `model_scan.summary`; "
                                   f"file `{section.config.get('path')}`, sha256 "
                                   f"`{short_hash(scan.model_sha256 or '')}`)")]
    blocks += [Paragraph(f.message, "note") for f in scan.findings if f.severity == "warning"]
    table = _metric_table(scan, section, list(section.metrics))
    if table is not None:
        blocks.append(table)
    findings = _row_table(scan, section, "findings")
    if findings is not None:
        blocks.append(findings)
    return [CardSection("Model file scan", "model-scan", blocks)]


def _security(bundles: list[LoadedBundle], scan: LoadedScan | None = None) -> CardSection:
    """Privacy (membership inference) and backdoor scans of each bundle, or a note that they were not run, and the
    model-file scan when given."""
    titles = {"privacy": "Privacy: membership inference", "backdoor": "Backdoor and data poisoning"}
    blocks = _bundle_sections(bundles, titles, "security",
                              " (`assay evaluate --checks privacy,backdoor --train-data TRAIN`)")
    if scan is not None:
        blocks += _scan_blocks(scan)
    else:
        blocks.append(Paragraph("No model-file scan given: whether the model file would run code when loaded is "
                                "checked by `assay scan MODEL --out DIR` (`assay card --scan DIR`).", "note"))
    return CardSection("Security and privacy", "security-privacy", blocks)


def _findings_rows(bundles: list[LoadedBundle], sections: set[str] | None, severities: set[str]) -> list[list[Cell]]:
    rows = []
    for b in bundles:
        for i, f in enumerate(b.evidence.findings):
            if sections is None and f.severity in severities:
                rows.append([Cell(b.label), Cell("run"), Cell(f.severity), Cell(f.message), _src(b, f"findings[{i}]")])
        for name, section in b.evidence.sections.items():
            if sections is not None and name not in sections:
                continue
            for i, f in enumerate(section.findings):
                if f.severity in severities:
                    rows.append([Cell(b.label), Cell(name), Cell(f.severity + (" (verdict)" if f.sets_verdict else "")),
                                 Cell(f.message), _src(b, f"{name}.findings[{i}]")])
    return rows


def _bias(bundles: list[LoadedBundle], facts: CardFacts | None) -> CardSection:
    blocks: list[Any] = []
    rows = _findings_rows(bundles, {"fairness", "slices"}, {"warning", "critical"})
    evaluated = [b for b in bundles if "fairness" in b.evidence.sections]
    if rows:
        blocks.append(Table(["bundle", "section", "severity", "finding", "source"], rows))
    elif evaluated or any("slices" in b.evidence.sections for b in bundles):
        blocks.append(Paragraph("No fairness or slice finding above info level (the group tables are under "
                                "Quantitative analyses)."))
    if not evaluated:
        blocks.append(Paragraph(
            "No sensitive attribute was evaluated, so the evidence says nothing about disparities between groups "
            "of people. Evaluate with `assay evaluate ... --sensitive COLUMN` (metadata column).", "note"))
    blocks += _provider(facts, "ethical_considerations")
    return CardSection("Bias", "bias", blocks)


def _risks(bundles: list[LoadedBundle], facts: CardFacts | None) -> CardSection:
    blocks: list[Any] = [Paragraph("Every warning and critical finding of the evidence, with the verdict each one "
                                   "explains; the info-level findings are in evidence.json.")]
    rows = _findings_rows(bundles, None, {"warning", "critical"})
    if rows:
        blocks.append(Table(["bundle", "section", "severity", "finding", "source"], rows))
    else:
        blocks.append(Paragraph("The evidence holds no warning or critical finding."))
    verdicts = [[Cell(b.label), Cell(name), Cell(s.verdict), _src(b, f"{name}.verdict")]
                for b in bundles for name, s in b.evidence.sections.items()]
    blocks.append(Table(["bundle", "section", "verdict", "source"], verdicts, "Verdict of each section"))
    if facts is not None and facts.limitations:
        blocks.append(CardSection("Known limitations (provider)", "limitations", _provider(facts, "limitations")))
    if facts is not None and facts.recommendations:
        blocks.append(CardSection("Recommendations", "recommendations", _provider(facts, "recommendations")))
    return CardSection("Risks and limitations", "risks-and-limitations", blocks)


def _is_estimate(metric: Metric) -> bool:
    method = str(metric.config.get("method", "")) + " " + metric.method
    return "estimate" in method.lower()


def _environment(bundles: list[LoadedBundle]) -> CardSection:
    blocks: list[Any] = [Paragraph(
        "Inference cost as measured on the evaluation machine. Training energy and emissions are not recorded in "
        "the evidence.")]
    for b in bundles:
        section = b.evidence.sections.get("efficiency")
        if section is None:
            blocks.append(Paragraph(f"{b.label}: no efficiency section (`assay evaluate --checks efficiency`).",
                                    "note"))
            continue
        energy = section.metrics.get("energy_j_per_1000")
        rows: list[tuple[str, str | Todo, str]] = []
        if energy is not None and energy.value is not None:
            label = "Energy per 1,000 inferences (estimate)" if _is_estimate(energy) else \
                "Energy per 1,000 inferences (measured)"
            rows.append((label, f"{format_number(energy.value)} J" + (
                " (ESTIMATE, not measured)" if _is_estimate(energy) else ""),
                f"{b.source_id} `efficiency.metrics.energy_j_per_1000`"))
        env = b.evidence.environment
        hardware = f"{env.cpu_model or 'CPU'} ({_plural(env.cpu_count or 0, 'logical core')})"
        rows.append(("Hardware", hardware, f"{b.source_id} `environment`"))
        sub: list[Any] = [Paragraph(f"{section.title} ({b.label}): {section.summary} ({b.source_id} "
                                    "`efficiency.summary`)")] if section.summary else []
        sub.append(Facts(rows))
        if energy is not None and energy.value is not None:
            sub.append(Paragraph(f"Energy method: {energy.method}", "note"))
        table = _metric_table(b, section, _matches(["energy_j_per_1000", "flops", "parameters", "throughput_per_s",
                                                     "latency_p50_ms", "latency_p95_ms"], section.metrics))
        if table is not None:
            sub.append(table)
        blocks.append(CardSection(b.label, f"environment-{b.index}", sub))
    return CardSection("Environmental impact", "environmental-impact", blocks)


def _technical(bundles: list[LoadedBundle]) -> CardSection:
    blocks: list[Any] = []
    for b in bundles:
        model, env, sid = b.evidence.model, b.evidence.environment, b.source_id
        shape = ", ".join("N" if d is None else str(d) for d in model.input_shape)
        rows: list[tuple[str, str | Todo, str]] = [
            ("Format", model.format, f"{sid} `model.format`"),
            ("Input", f"{model.input_dtype}, shape ({shape})", f"{sid} `model.input_shape`"),
            ("Feature source", model.feature_source or MISSING, f"{sid} `model.feature_source`"),
        ]
        eff = b.evidence.sections.get("efficiency")
        for key, label in (("parameters", "Parameters"), ("flops", "FLOPs per input sample"),
                           ("model_size_mb", "Size on disk (MB)")):
            m = eff.metrics.get(key) if eff is not None else None
            if m is not None and m.value is not None:
                rows.append((label, format_number(m.value), f"{sid} `efficiency.metrics.{key}`"))
        software = ", ".join(f"{k} {v}" for k, v in (("assay", env.assay), ("python", env.python),
                                                        ("numpy", env.numpy), ("torch", env.torch),
                                                        ("onnxruntime", env.onnxruntime)) if v)
        rows += [("Software", software, f"{sid} `environment`"),
                 ("Platform", env.platform, f"{sid} `environment.platform`"),
                 ("CPU", f"{env.cpu_model or MISSING}; ISA: {', '.join(env.isa_flags) or MISSING}",
                  f"{sid} `environment.isa_flags`"),
                 ("Seed", str(b.evidence.seed), f"{sid} `seed`")]
        blocks.append(CardSection(b.label, f"technical-{b.index}", [Facts(rows)]))
    return CardSection("Technical specifications", "technical-specifications", blocks)


def _monitoring(bundles: list[LoadedBundle], facts: CardFacts | None, name: str, registry_name: str | None,
                change_log: list[dict[str, Any]]) -> CardSection:
    blocks: list[Any] = []
    refs = [b for b in bundles if "reference.npz" in b.files]
    if refs:
        items: list[str | Todo] = [
            f"{b.label}: monitoring reference reference.npz ({b.file_id('reference.npz')}, sha256 "
            f"`{short_hash(b.files['reference.npz'])}`): the confidence, entropy, class and prediction distributions "
            "and feature bins that live traffic is compared with" for b in refs]
        blocks += [Paragraph("Monitoring compares live traffic with the evaluation's reference:"), Items(items)]
    else:
        blocks.append(Paragraph("No bundle holds a monitoring reference (reference.npz); re-run `assay evaluate` to "
                                "write one.", "note"))
    for b in bundles:
        lf = b.evidence.sections.get("label_free")
        if lf is not None:
            blocks.append(Paragraph(f"{b.label}: label-free accuracy estimators were evaluated against true accuracy "
                                    f"under shift ({b.source_id} `label_free.metrics`); see Calibration, robustness "
                                    "and OOD."))
    blocks += _provider(facts, "monitoring")
    ref = registry_name or name
    if registry_name:
        aliases = sorted({str(m.get("alias")) for m in change_log if m.get("alias")}) or ["production"]
        blocks.append(CardSection("Rollback", "rollback", [Items([
            f"Move an alias back to its previous holder: `assay registry rollback {ref} --alias {a} --reason "
            "\"...\"` (or `--to VERSION`); every move is recorded in the registry's history." for a in aliases]
            + [f"Promote a new version only through the paired gate: `assay registry promote {ref} VERSION --alias "
               f"{aliases[0]}`."])]))
    else:
        blocks.append(CardSection("Rollback", "rollback", [Paragraph(
            "This card was built from bundle folders, not from the registry: no versions or aliases record what is "
            f"deployed. Register the model (`assay registry register {ref} MODEL --evidence BUNDLE`) to promote it "
            f"through the gate and roll back in one command (`assay registry rollback {ref} --alias production "
            "--reason ...`).", "note")]))
    return CardSection("Monitoring and rollback", "monitoring-and-rollback", blocks)


def _change_log(change_log: list[dict[str, Any]]) -> CardSection:
    if not change_log:
        return CardSection("Change log", "change-log", [Paragraph(
            "No registry history was given (the card was built from bundle folders).", "note")])
    rows = []
    for i, m in enumerate(change_log):
        before = "—" if m.get("from_version") is None else str(m.get("from_version"))
        rows.append([Cell(str(m.get("created_at", MISSING))), Cell(str(m.get("alias", MISSING))),
                     Cell(str(m.get("action", MISSING)) + (" (forced)" if m.get("forced") else "")),
                     Cell(f"{before} -> {m.get('to_version', MISSING)}"), Cell(str(m.get("actor", MISSING))),
                     Cell(str(m.get("gate_verdict") or MISSING)), Cell(str(m.get("reason") or MISSING)),
                     Cell(short_hash(m.get("comparison_sha256")) if m.get("comparison_sha256") else MISSING,
                          code=bool(m.get("comparison_sha256"))),
                     Cell(f"L `change_log[{i}]`")])
    return CardSection("Change log", "change-log", [
        Paragraph("Every move of an alias between versions, from the registry's append-only history (gate verdict "
                  "and the sha256 of the comparison behind it)."),
        Table(["when", "alias", "action", "versions", "actor", "gate", "reason", "comparison sha256", "source"],
              rows)])


def _crosswalk_section(crosswalk: dict[str, Any]) -> CardSection:
    sources = crosswalk["sources"]
    blocks: list[Any] = [Paragraph(
        "Each piece of evidence mapped to NIST AI RMF 1.0 subcategories and EU AI Act Annex IV points, with the "
        "sha256 of the file behind it (also in crosswalk.json). The mapping and the official texts are the data "
        f"file {crosswalk['mapping']['file']} (sha256 `{short_hash(crosswalk['mapping']['sha256'])}`). Coverage "
        "'partial' means the evidence speaks to part of the text; the rest is the provider's to document."),
        Items([f"{s['document']}: {s['title']} ({s['publisher']}, {s['date']}); {s['identifier']}"
               for s in sources.values()])]
    summary = crosswalk["summary"]
    blocks.append(Paragraph(f"{summary['full']} entries evidenced in full, {summary['partial']} in part, "
                            f"{summary['gap']} gaps."))
    titles = {"nist_ai_rmf": "NIST AI RMF 1.0", "eu_ai_act_annex_iv": "EU AI Act, Annex IV"}
    for key in sources:
        rows = [[Cell(r["id"]), Cell(r["label"]), Cell(r["coverage"]),
                 Cell(f"{r['bundle'] + ': ' if r['bundle'] else ''}{', '.join(r['pointers'][:4])}"
                      + (f" (+{len(r['pointers']) - 4} more)" if len(r["pointers"]) > 4 else "")),
                 Cell(f"{r['source_id']} {r['file']}"), Cell(short_hash(r["sha256"], 16), code=True)]
                for r in crosswalk["rows"] if r["framework"] == key]
        blocks.append(CardSection(titles.get(key, key), f"crosswalk-{key.replace('_', '-')}", [
            Table(["id", "entry", "coverage", "evidence", "file", "sha256"], rows) if rows else
            Paragraph("No evidence maps to this framework.", "note")]))
    gaps = [[Cell(titles.get(g["framework"], g["framework"])), Cell(g["id"]), Cell(g["label"]), Cell(g["missing"])]
            for g in crosswalk["gaps"]]
    blocks.append(CardSection("Gaps", "crosswalk-gaps", [
        Paragraph("Entries no evidence speaks to yet, and what would close them:"),
        Table(["framework", "id", "entry", "missing"], gaps) if gaps else Paragraph("None.")]))
    return CardSection("Governance crosswalk", "governance-crosswalk", blocks)


def _sources(bundles: list[LoadedBundle], facts: CardFacts | None, change_log: list[dict[str, Any]],
             crosswalk: dict[str, Any], sheet: Datasheet | None = None,
             audit: LoadedAudit | None = None, scan: LoadedScan | None = None) -> CardSection:
    rows = []
    for b in [*bundles, *([audit] if audit is not None else [])]:
        for name, digest in b.files.items():
            rows.append([Cell(b.file_id(name)), Cell(b.label), Cell(str(b.folder / name), code=True),
                         Cell(f"sha256:{digest}", code=True)])
    for name, digest in (scan.files if scan is not None else {}).items():
        assert scan is not None
        rows.append([Cell(scan.file_id(name)), Cell("scan"), Cell(str(scan.folder / name), code=True),
                     Cell(f"sha256:{digest}", code=True)])
    if facts is not None:
        rows.append([Cell("F"), Cell("facts"), Cell(facts.source or "card facts (built in Python)", code=True),
                     Cell(f"sha256:{facts.sha256}", code=True)])
    if sheet is not None:
        rows.append([Cell("DS"), Cell("datasheet"), Cell(sheet.source_file or "datasheet (built in Python)", code=True),
                     Cell(f"sha256:{sheet.sha256}", code=True)])
    if change_log:
        log_rows = [r for r in crosswalk["rows"] if r["source_id"] == "L" and r["file"].startswith("registry")]
        digest = log_rows[0]["sha256"] if log_rows else ""
        rows.append([Cell("L"), Cell("registry"), Cell("registry history (canonical JSON of the moves)"),
                     Cell(f"sha256:{digest}" if digest else MISSING, code=bool(digest))])
    return CardSection("Sources", "sources", [
        Paragraph("Every number in this card names its source: an id below and a pointer into that file "
                  "(`performance.metrics.accuracy` is evidence.json's sections.performance.metrics.accuracy; "
                  "`tables.per_class[3]` is the fourth row of that table). Check a number by hashing the file."),
        Table(["id", "bundle", "file", "sha256"], rows)])


def _todo_section(todos: list[str]) -> CardSection:
    return CardSection("TODO", "todo", [
        Paragraph("Facts an evaluation cannot know and card.yaml does not give (`assay card ... --card card.yaml`):"),
        Items([Todo(key, REQUIRED_FACTS[key]) for key in todos])])


# --------------------------------------------------------------------------------------------- front matter


def _front_matter(bundles: list[LoadedBundle], facts: CardFacts | None, name: str) -> dict[str, Any]:
    """Hugging Face model card metadata (huggingface/hub-docs modelcard.md): license, datasets and metrics when
    known, and model-index with one results block per bundle; CIs are in the body (model-index has no place for
    them)."""
    first = bundles[0].evidence
    meta: dict[str, Any] = {}
    if facts is not None and facts.license:
        meta["license"] = facts.license
    if facts is not None and facts.language:
        meta["language"] = list(facts.language)
    library = _LIBRARIES.get(first.model.format)
    if library:
        meta["library_name"] = library
    pipeline = _PIPELINE_TAGS[first.data.modality]
    meta["pipeline_tag"] = pipeline
    meta["tags"] = list(dict.fromkeys(["assay", pipeline, *(facts.tags or [] if facts is not None else [])]))
    if facts is not None and facts.datasets:
        meta["datasets"] = list(facts.datasets)
    if facts is not None and facts.base_model:
        meta["base_model"] = facts.base_model
    results = []
    types: dict[str, None] = {}
    for b in bundles:
        ev = b.evidence
        metrics = []
        for section, key, mtype, label, args in HF_METRICS:
            metric = ev.metric(section, key)
            if metric is None or metric.value is None:
                continue
            entry: dict[str, Any] = {"type": mtype, "value": float(metric.value),
                                     "name": label if len(bundles) == 1 else f"{label} ({b.label})"}
            if args:
                entry["args"] = dict(args)
            metrics.append(entry)
            types[mtype] = None
        if not metrics:
            continue
        results.append({"task": {"type": _PIPELINE_TAGS[ev.data.modality],
                                 "name": _PIPELINE_TAGS[ev.data.modality].replace("-", " ").title()},
                        "dataset": {"type": ev.data.name, "name": ev.data.name, "revision": ev.data.fingerprint},
                        "metrics": metrics})
    if types:
        meta["metrics"] = list(types)
    if results:
        meta["model-index"] = [{"name": name, "results": results}]
    return meta


def _yaml(meta: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)


# --------------------------------------------------------------------------------------------- build / write


def _card_findings(bundles: list[LoadedBundle], todos: list[str]) -> list[Finding]:
    findings = [Finding(severity="warning", evidence=f"card.yaml:{key}", message=(
        f"card.yaml does not give `{key}` ({REQUIRED_FACTS[key]}): the card marks it TODO")) for key in todos]
    for b in bundles:
        findings += b.findings
    shas = {b.evidence.model.sha256 for b in bundles}
    if len(shas) > 1:
        findings.append(Finding(severity="info", evidence="model.sha256", message=(
            f"the {len(bundles)} bundles evaluate {len(shas)} different model files: the card gives one results block "
            "per bundle, labelled, and lists each model's sha256")))
    return findings


def build_card(bundles: list[Path], facts: CardFacts | None, change_log: list[dict[str, Any]] | None = None, *,
               labels: list[str] | None = None, name: str | None = None, datasheet: Datasheet | None = None,
               audit: str | os.PathLike[str] | LoadedAudit | None = None,
               scan: str | os.PathLike[str] | LoadedScan | None = None) -> ModelCard:
    """The card of the model evaluated in ``bundles`` (evaluation bundle folders), with the provider's ``facts``
    (None: every fact TODO) and the registry ``change_log`` (alias moves as dicts: actor, created_at, alias,
    from_version, to_version, action, reason, gate_verdict, comparison_sha256). ``labels`` name the bundles
    (e.g. registry refs ``digits@3``; default B1, B2, ...); ``name`` is the registry name, when there is one.
    ``datasheet`` (datasheet.yaml) and ``audit`` (a folder `assay audit` wrote) are linked from Training data
    and fill the crosswalk's data entries; the datasheet is rendered as DATASHEET.md (with the audit quoted).
    ``scan`` (a folder `assay scan MODEL --out` wrote) is quoted under Security and privacy and fills MEASURE 2.7; a
    scan of another file than the evaluated model is a warning.
    Pure: reads the files, returns the texts."""
    loaded = load_bundles([Path(b) for b in bundles], labels)
    audited = audit if isinstance(audit, LoadedAudit) or audit is None else load_audit(audit)
    scanned = scan if isinstance(scan, LoadedScan) or scan is None else load_scan(scan, loaded)
    log = [dict(m) for m in (change_log or [])]
    title_name = _model_name(loaded, facts, name)
    todos = facts.missing() if facts is not None else list(REQUIRED_FACTS)
    crosswalk = build_crosswalk(loaded, facts, log, datasheet=datasheet, audit=audited, scan=scanned)
    front = _front_matter(loaded, facts, title_name)
    sections = [
        _details(loaded, facts, title_name), _uses(facts), _factors(loaded, facts), _metrics(loaded),
        _data(loaded, facts, datasheet, audited), _results(loaded), _reliability(loaded), _security(loaded, scanned),
        _bias(loaded, facts),
        _risks(loaded, facts),
        _environment(loaded), _technical(loaded), _monitoring(loaded, facts, title_name, name, log),
        _change_log(log), _crosswalk_section(crosswalk), _sources(loaded, facts, log, crosswalk, datasheet, audited,
                                                              scanned),
    ]
    if todos:
        sections.insert(0, _todo_section(todos))
    if facts is not None and facts.card_authors:
        sections.append(CardSection("Card authors", "card-authors", [Items(list(facts.card_authors))]))
    if facts is not None and facts.citation:
        sections.append(CardSection("Citation", "citation", _provider(facts, "citation")))
    subtitle = (f"Model card written by Assay from {_plural(len(loaded), 'evaluation bundle')}; every number names "
                "its source file by sha256 (see Sources).")
    doc = CardDocument(f"Model card: {title_name}", subtitle, sections,
                       generator=f"Assay {loaded[0].evidence.environment.assay}")
    inputs = tuple(b.folder for b in loaded) + ((Path(facts.source).resolve(),) if facts and facts.source else ())
    inputs += (audited.folder,) if audited is not None else ()
    inputs += (scanned.folder,) if scanned is not None else ()
    inputs += (Path(datasheet.source_file).resolve(),) if datasheet is not None and datasheet.source_file else ()
    findings = _card_findings(loaded, todos) + (list(audited.findings) if audited is not None else [])
    findings += list(scanned.findings) if scanned is not None else []
    if datasheet is not None:
        missing = [k for k in REQUIRED_DATASHEET_FACTS if getattr(datasheet, k) in (None, [])]
        if missing:
            findings.append(Finding(severity="warning", evidence="datasheet.yaml", message=(
                f"datasheet.yaml does not give {', '.join(missing)}: DATASHEET.md lists them as gaps")))
    sheet_md = render_datasheet(datasheet, audited) if datasheet is not None else None
    return ModelCard(name=title_name, markdown=render_card_markdown(doc, _yaml(front)), html=render_card_html(doc),
                     crosswalk=crosswalk, front_matter=front, todos=todos, findings=findings, inputs=inputs,
                     datasheet=sheet_md)


def write_card(card: ModelCard, out_dir: str | os.PathLike[str], *, force: bool = False,
               where: str = "out") -> Path:
    """Write MODEL_CARD.md, model_card.html and crosswalk.json into ``out_dir`` atomically (an output folder of
    kind ``card`` with its manifest); never replaces a folder Assay did not write, nor one of the card's inputs."""
    from assay.evidence.output import atomic_directory

    with atomic_directory(out_dir, CARD_KIND, inputs=card.inputs, force=force, where=where) as tmp:
        (tmp / "MODEL_CARD.md").write_text(card.markdown, encoding="utf-8", newline="\n")
        (tmp / "model_card.html").write_text(card.html, encoding="utf-8", newline="\n")
        (tmp / "crosswalk.json").write_text(json.dumps(card.crosswalk, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8", newline="\n")
        if card.datasheet is not None:
            (tmp / DATASHEET_FILE).write_text(card.datasheet, encoding="utf-8", newline="\n")
    return Path(os.path.abspath(out_dir))
