"""Evidence -> Rich tables on the terminal: one row per section, then the findings that need attention.

Every string from the evidence goes into ``rich.text.Text`` objects, never through markup parsing, so a
class named ``[bold]x[/]`` prints literally.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from assay.evidence.schema import Evidence
from assay.report.formatting import SEVERITY_ORDER, format_number, key_metrics, metric_parts, short_hash

__all__ = ["print_console"]

VERDICT_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red", "info": "bold blue"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}


def _verdict(verdict: str) -> Text:
    return Text(verdict.upper(), style=VERDICT_STYLE.get(verdict, ""))


def print_console(evidence: Evidence, console: Console | None = None) -> None:
    """Print the verdict, one row per section with its key metrics and CIs, and warning/critical findings."""
    console = console or Console()
    model, data = evidence.model, evidence.data
    header = Text.assemble(
        ("Assay verdict: ", "bold"), _verdict(evidence.verdict),
        ("  ", ""),
        (f"{Path(model.path).name or model.path} ({model.format}, sha256 {short_hash(model.sha256)}) on "
         f"{data.name} (n={format_number(data.n)})", "dim"),
    )
    console.print(header)
    for finding in sorted(evidence.findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9)):
        console.print(Text.assemble(("  ", ""), (f"{finding.severity:<8}", SEVERITY_STYLE[finding.severity]),
                                    (" ", ""), (finding.message, "")))

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    table.add_column("section", overflow="fold", min_width=8)
    table.add_column("verdict", no_wrap=True, min_width=7)
    table.add_column("metric", overflow="fold", min_width=8)
    table.add_column("value", justify="right", no_wrap=True, min_width=6)
    table.add_column("CI", justify="right", style="dim", no_wrap=True)
    table.add_column("n", justify="right", style="dim", no_wrap=True)
    for section in evidence.sections.values():
        names = key_metrics(section.metrics, section.config)
        if not names:
            table.add_row(Text(section.title), _verdict(section.verdict), Text("\u2014"), "", "", "", end_section=True)
            continue
        for i, name in enumerate(names):
            metric = section.metrics[name]
            value, ci = metric_parts(metric)
            table.add_row(
                Text(section.title) if i == 0 else "",
                _verdict(section.verdict) if i == 0 else "",
                Text(name),
                Text(value),
                Text(ci),
                Text(format_number(metric.n)),
                end_section=i == len(names) - 1,
            )
    if evidence.sections:
        console.print(table)
    else:
        console.print(Text("No checks ran.", style="dim"))

    attention = [
        (section, finding)
        for section in evidence.sections.values()
        for finding in section.findings
        if finding.severity in ("critical", "warning")
    ]
    attention.sort(key=lambda pair: SEVERITY_ORDER[pair[1].severity])
    if attention:
        console.print(Text("Findings", style="bold"))
        for section, finding in attention:
            line = Text.assemble(
                ("  ", ""),
                (f"{finding.severity:<8}", SEVERITY_STYLE[finding.severity]),
                (f" {section.title}: ", "bold"),
                (finding.message, ""),
            )
            if finding.evidence:
                line.append(f"  ({finding.evidence})", style="dim")
            console.print(line)
