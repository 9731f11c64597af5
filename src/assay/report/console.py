"""Evidence -> Rich tables on the terminal: the verdict and what needs reading, one row per section, then
why each section that did not pass got its verdict, and the other findings that need attention.

Every string from the evidence goes into ``rich.text.Text`` objects, never through markup parsing, so a
class named ``[bold]x[/]`` prints literally.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from assay.evidence.schema import Evidence, Metric
from assay.report.formatting import (
    MISSING,
    SEVERITY_ORDER,
    NumberFormat,
    format_number,
    interval_note,
    key_metrics,
    short_hash,
)
from assay.report.verdicts import attention, verdict_headline

__all__ = ["print_console", "print_sections"]

#: Marks a value whose point estimate lies outside its own interval; a note under the table says why.
NOTE_MARK = "\u2020"

VERDICT_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red", "info": "bold blue"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}
_VERDICT_RANK = {"info": 0, "pass": 1, "warn": 2, "fail": 3}


def _verdict(verdict: str) -> Text:
    return Text(verdict.upper(), style=VERDICT_STYLE.get(verdict, ""))


@dataclass(frozen=True)
class _Row:
    """One metric line of the summary: its section (title, verdict) and the metric's cells."""

    section: str
    verdict: str
    first: bool  # the section's first line: its title and verdict are shown there
    last: bool
    name: str
    value: str
    ci: str
    n: str
    note: str | None  # why the estimate lies outside its interval, when it does


def _rows(evidence: Evidence) -> list[_Row]:
    """The summary's rows: every section's key metrics, their numbers in one format for the whole table."""
    shown: list[tuple[str, str, list[tuple[str, Metric]]]] = []
    for section in evidence.sections.values():
        names = key_metrics(section.metrics, section.config)
        shown.append((section.title, section.verdict, [(name, section.metrics[name]) for name in names]))
    fmt = NumberFormat.for_metrics(metric for _, _, metrics in shown for _, metric in metrics)
    rows = []
    for title, verdict, metrics in shown:
        if not metrics:
            rows.append(_Row(title, verdict, True, True, MISSING, "", "", "", None))
        for i, (name, metric) in enumerate(metrics):
            value, ci = fmt.metric(metric)
            rows.append(_Row(title, verdict, i == 0, i == len(metrics) - 1, name, value, ci,
                             format_number(metric.n), interval_note(name, metric, fmt)))
    return rows


def _table(rows: list[_Row]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    table.add_column("section", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("CI", justify="right", style="dim", no_wrap=True)
    table.add_column("n", justify="right", style="dim", no_wrap=True)
    for row in rows:
        table.add_row(
            Text(row.section) if row.first else "",
            _verdict(row.verdict) if row.first else "",
            Text(row.name),
            Text(row.value + (NOTE_MARK if row.note else "")),
            Text(row.ci),
            Text(row.n),
            end_section=row.last,
        )
    return table


def _vertical(rows: list[_Row]) -> list[Text]:
    """A line per section (title, verdict), then an indented ``metric: value [CI]  n=N`` line per metric;
    lines too long for the terminal break between words, never inside one."""
    width = max(len(r.name) for r in rows)
    lines = []
    for row in rows:
        if row.first:
            lines.append(Text.assemble((row.section, "bold"), "  ", _verdict(row.verdict)))
        if row.value or row.ci:
            lines.append(Text.assemble(
                "  ", f"{row.name}:".ljust(width + 1), " ", row.value + (NOTE_MARK if row.note else ""),
                (f" {row.ci}" if row.ci else "", "dim"), (f"  n={row.n}" if row.n else "", "dim")))
    return lines


def _print_unwrapped(console: Console, renderable: RenderableType, width: int) -> None:
    """Print ``renderable`` laid out ``width`` columns wide even where the console is narrower (a pipe, a
    CI log): its lines are written uncropped instead of wrapped."""
    lines = console.render_lines(renderable, console.options.update_width(width), pad=False, new_lines=True)
    console.print(Segments([segment for line in lines for segment in line]), crop=False, overflow="ignore")


def print_sections(evidence: Evidence, console: Console) -> None:
    """The summary of the sections' key metrics, and why an estimate lies outside its interval (marked †).

    Words are never split across lines: a table that fits prints as is; on a terminal too narrow for it,
    one line per metric instead; off a terminal (a pipe, ``| tee``, a CI log) the table at its natural
    width, however wide the console claims to be.
    """
    rows = _rows(evidence)
    table = _table(rows)
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if natural <= console.width:
        console.print(table)
    elif console.is_terminal:
        for line in _vertical(rows):
            console.print(line)
    else:
        _print_unwrapped(console, table, natural)
    for row in rows:
        if row.note:
            console.print(Text(f"{NOTE_MARK} {row.section}: {row.note}", style="dim"))


def print_console(evidence: Evidence, console: Console | None = None) -> None:
    """Print the verdict and its headline, one row per section with its key metrics and CIs, the cause of
    each warn/fail verdict ("Why") and the other warning/critical findings."""
    console = console or Console()
    model, data = evidence.model, evidence.data
    header = Text.assemble(
        ("Assay verdict: ", "bold"), _verdict(evidence.verdict),
        ("  ", ""),
        (f"{Path(model.path).name or model.path} ({model.format}, sha256 {short_hash(model.sha256)}) on "
         f"{data.name} (n={format_number(data.n)})", "dim"),
    )
    console.print(header)
    console.print(Text.assemble(("  ", ""), (verdict_headline(evidence), VERDICT_STYLE.get(evidence.verdict, ""))))
    for finding in sorted(evidence.findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9)):
        console.print(Text.assemble(("  ", ""), (f"{finding.severity:<8}", SEVERITY_STYLE[finding.severity]),
                                    (" ", ""), (finding.message, "")))

    if evidence.sections:
        print_sections(evidence, console)
    else:
        console.print(Text("No checks ran.", style="dim"))

    # Why each section that did not pass got its verdict, then the other warning/critical findings.
    items = [a for a in attention(evidence) if a.section is not None]
    causes = sorted((a for a in items if a.cause),
                    key=lambda a: -_VERDICT_RANK.get(a.section.verdict if a.section else "info", 0))
    others = [a for a in items if not a.cause]
    for title, group in (("Why", causes), ("Other findings" if causes else "Findings", others)):
        if not group:
            continue
        console.print(Text(title, style="bold"))
        for item in group:
            finding, verdict = item.finding, item.section.verdict if item.section else "info"
            label = verdict.upper() if item.cause else finding.severity
            style = VERDICT_STYLE.get(verdict, "") if item.cause else SEVERITY_STYLE[finding.severity]
            line = Text.assemble(
                ("  ", ""),
                (f"{label:<8}", style),
                (f" {item.where}: ", "bold"),
                (finding.message, ""),
            )
            if finding.evidence:
                line.append(f"  ({finding.evidence})", style="dim")
            console.print(line)
