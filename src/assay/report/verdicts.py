"""Why a verdict is what it is: the banner sentence and the findings behind each section's verdict.

Shared by the HTML, Markdown and console renderers so that all three say the same thing. A section's
cause comes from :meth:`assay.evidence.schema.Section.verdict_reasons`; the banner's wording follows the
worst severity present anywhere in the evidence (run-level findings, every section's findings and the
causes of non-pass verdicts), so it never calls a run clean next to a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

from assay.evidence.schema import Evidence, Finding, Section

__all__ = [
    "INFO_NOTE",
    "Attention",
    "attention",
    "other_findings",
    "plural",
    "shorten",
    "verdict_headline",
]

#: Shown next to an ``info`` section verdict: what "info" means.
INFO_NOTE = "reported for reference: this check has no pass/warn/fail rule"

_RANK = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Attention:
    """One warning or critical finding, where it was raised (``section`` None: the run itself) and whether
    it is the cause of its section's verdict."""

    finding: Finding
    section: Section | None
    cause: bool

    @property
    def where(self) -> str:
        return self.section.title if self.section is not None else "this run"


def plural(count: int, word: str) -> str:
    """``1 warning``, ``2 warnings``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def shorten(text: str, limit: int = 110) -> str:
    """``text`` on one line, cut at a word boundary before ``limit`` characters (with an ellipsis)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "\u2026"


def _identical(a: Finding, b: Finding) -> bool:
    return a.severity == b.severity and a.message == b.message and a.evidence == b.evidence


def other_findings(section: Section) -> list[Finding]:
    """The section's findings without those shown as the cause of its verdict, most severe first."""
    reasons = section.verdict_reasons()
    rest = [f for f in section.findings if not any(_identical(f, r) for r in reasons)]
    return sorted(rest, key=lambda f: _RANK.get(f.severity, 9))


def attention(evidence: Evidence) -> list[Attention]:
    """Every warning and critical finding (run-level first, then by section), each verdict's cause
    included even when the check stated it only in its summary; most severe first, stable otherwise."""
    items = [Attention(f, None, False) for f in evidence.findings if f.severity != "info"]
    for section in evidence.sections.values():
        reasons = section.verdict_reasons()
        items += [Attention(f, section, True) for f in reasons if f.severity != "info"]
        items += [Attention(f, section, False) for f in other_findings(section) if f.severity != "info"]
    return sorted(items, key=lambda a: _RANK.get(a.finding.severity, 9))


def _places(items: list[Attention]) -> str:
    """Where the items were raised: each with its message cut short when there are at most two
    (``Calibration — ECE above 0.05``), else counted per place (``Corruption robustness (3), Slices``)."""
    if len(items) <= 2:
        return "; ".join(f"{item.where} \u2014 {shorten(item.finding.message, 80)}" for item in items)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.where] = counts.get(item.where, 0) + 1
    return ", ".join(name if n == 1 else f"{name} ({n})" for name, n in counts.items())


def verdict_headline(evidence: Evidence) -> str:
    """The banner sentence: the overall verdict in words, with what needs reading and where.

    Its wording follows the worst severity present, not only the verdict: a run whose checks all passed
    their rules but raised warnings says so ("… but 3 warnings need reading: …"), never "no problem".
    """
    items = attention(evidence)
    warnings = [a for a in items if a.finding.severity == "warning"]
    failed = [s for s in evidence.sections.values() if s.verdict == "fail"]
    causes = [a for a in items if a.cause and a.section is not None and a.section.verdict == "fail"]
    critical = [a for a in items if a.finding.severity == "critical" and a not in causes]
    parts = []
    if failed:
        named = _places(causes) if causes else ", ".join(s.title for s in failed)
        parts.append(f"{plural(len(failed), 'check')} failed: {named}")
    if critical:
        parts.append(f"{'also ' if parts else ''}{plural(len(critical), 'critical finding')}: {_places(critical)}")
    if parts:
        if warnings:
            parts.append(f"also {plural(len(warnings), 'warning')}: {_places(warnings)}")
        return "; ".join(parts) + "."
    if warnings:
        what = plural(len(warnings), "warning")
        need = "needs" if len(warnings) == 1 else "need"
        if evidence.verdict == "warn":
            return f"{what} to read before shipping: {_places(warnings)}."
        if evidence.verdict == "pass":
            return f"Every check passed its rule, but {what} {need} reading: {_places(warnings)}."
        return f"No check passed judgement, and {what} {need} reading: {_places(warnings)}."
    if evidence.verdict == "pass":
        return "No check found a problem."
    return "Informational only: no check passed judgement."
