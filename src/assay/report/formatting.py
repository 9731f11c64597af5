"""Number and text formatting (and atomic file writing) shared by the HTML, Markdown and console renderers.

One place decides how a number looks, so the three renderers never disagree: ``0.9123 [0.9012, 0.9234]``;
missing values are an em dash; integers stay integers; tiny and huge floats switch to scientific notation.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from assay.evidence.schema import Evidence, Metric

__all__ = [
    "HEADLINE_METRICS",
    "MISSING",
    "SEVERITY_ORDER",
    "ci_columns",
    "format_ci",
    "format_estimate",
    "format_metric",
    "format_number",
    "format_value",
    "headline_metrics",
    "key_metrics",
    "metric_parts",
    "short_hash",
    "write_text_atomic",
]

MISSING = "\u2014"  # em dash

#: (section, metric, label) shown in report headers when present.
HEADLINE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("performance", "accuracy", "Accuracy"),
    ("performance", "macro_f1", "Macro-F1"),
    ("calibration", "ece", "ECE"),
)

#: Most severe first.
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def format_number(value: Any, digits: int = 4) -> str:
    """One scalar as text: ``None``/NaN -> em dash, ints as ints, floats with ``digits`` decimals.

    Non-zero floats below 1e-3 in magnitude use scientific notation (a p-value of 3e-7 must not print
    as 0.0000); integral floats from 1000 up print as integers (a parameter count stored as a float).
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        x = float(value)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "\u221e" if x > 0 else "-\u221e"
        if abs(x) >= 1e15 or (x != 0 and abs(x) < 1e-3):
            return f"{x:.{max(digits - 1, 1)}e}"
        if abs(x) >= 1e6 or (abs(x) >= 1000 and x.is_integer()):
            return f"{x:.0f}"
        return f"{x:.{digits}f}"
    return str(value)


def format_ci(ci_low: Any, ci_high: Any, digits: int = 4) -> str:
    """``[lo, hi]``, or ``""`` when both ends are missing."""
    if ci_low is None and ci_high is None:
        return ""
    return f"[{format_number(ci_low, digits)}, {format_number(ci_high, digits)}]"


def _counts(*values: Any) -> bool:
    """Whether these numbers look like counts: all integral (or missing), one of them above 1."""
    present = [float(v) for v in values if v is not None and not isinstance(v, bool)]
    return bool(present) and all(math.isfinite(v) and v.is_integer() for v in present) and max(map(abs, present)) > 1


def format_estimate(value: Any, ci_low: Any, ci_high: Any, digits: int = 4) -> tuple[str, str]:
    """(value, ``[lo, hi]`` or ``""``) in one consistent notation.

    Counts (all integral, one above 1) print as integers; when every number is below 1e-3 in magnitude
    (or one is astronomically large) all three use scientific notation; otherwise all use ``digits``
    decimals (whole numbers from 1e6 up), so an interval never mixes
    ``5.452e-04`` with ``0.0135``.
    """
    numbers = [v for v in (value, ci_low, ci_high) if isinstance(v, Real) and not isinstance(v, bool)]
    finite = [abs(float(v)) for v in numbers if math.isfinite(float(v))]
    if _counts(value, ci_low, ci_high):
        def fmt(v: Any) -> str:
            return format_number(None if v is None else int(v))
    elif finite and (0 < max(finite) < 1e-3 or max(finite) >= 1e15):
        def fmt(v: Any) -> str:
            if isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v)):
                return f"{float(v):.{max(digits - 1, 1)}e}"  # zero too: 0.000e+00 next to 1.526e-06
            return format_number(v, digits)
    else:
        def fmt(v: Any) -> str:
            if isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v)) and abs(float(v)) < 1e6:
                return f"{float(v):.{digits}f}"
            return format_number(v, digits)
    ci = "" if ci_low is None and ci_high is None else f"[{fmt(ci_low)}, {fmt(ci_high)}]"
    return fmt(value), ci


def metric_parts(metric: Metric, digits: int = 4) -> tuple[str, str]:
    """(value, ``[lo, hi]`` or ``""``) of a metric, see :func:`format_estimate`."""
    return format_estimate(metric.value, metric.ci_low, metric.ci_high, digits)


def format_metric(metric: Metric, digits: int = 4) -> str:
    """``value [lo, hi]`` (just ``value`` when the metric has no interval)."""
    value, ci = metric_parts(metric, digits)
    return f"{value} {ci}" if ci else value


def format_value(value: Any, max_chars: int = 200) -> str:
    """Any table cell or config value as text (containers as compact JSON, cut at ``max_chars``)."""
    if value is None or isinstance(value, (bool, Real)):
        return format_number(value)
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(value)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"


def ci_columns(columns: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Columns ``c`` that come with ``c_ci_low`` and ``c_ci_high`` companions -> the companion names.

    Renderers merge such triples into one ``value [lo, hi]`` cell (e.g. the per-class table's recall).
    """
    cols = list(columns)
    present = set(cols)
    return {
        c: (f"{c}_ci_low", f"{c}_ci_high")
        for c in cols
        if f"{c}_ci_low" in present and f"{c}_ci_high" in present
    }


def short_hash(value: str | None, length: int = 12) -> str:
    """First ``length`` characters of a hash (an optional ``algo:`` prefix is dropped)."""
    if not value:
        return MISSING
    tail = value.split(":", 1)[-1]
    return tail[:length]


def headline_metrics(evidence: Evidence) -> list[tuple[str, Metric]]:
    """(label, metric) of the headline metrics this evidence has (accuracy, macro-F1, ECE)."""
    out = []
    for section_name, metric_name, label in HEADLINE_METRICS:
        section = evidence.sections.get(section_name)
        if section is not None and metric_name in section.metrics:
            out.append((label, section.metrics[metric_name]))
    return out


def key_metrics(section_metrics: Mapping[str, Metric], config: Mapping[str, Any], limit: int = 4) -> list[str]:
    """Names of a section's key metrics for compact views (console, Markdown headline).

    A check may name them in ``section.config["key_metrics"]``; otherwise headline metrics come first,
    then the section's metrics in the order the check wrote them, up to ``limit``.
    """
    declared = config.get("key_metrics")
    if isinstance(declared, (list, tuple)) and all(isinstance(n, str) for n in declared):
        return [n for n in declared if n in section_metrics][:limit]
    preferred = [m for _, m, _ in HEADLINE_METRICS if m in section_metrics]
    rest = [n for n in section_metrics if n not in preferred]
    return (preferred + rest)[:limit]


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary sibling and a rename, so a failure never leaves half a file.

    (Shared by the file-writing renderers; the temporary file is created with ``open(.., "x")`` so the
    result gets the usual umask-based permissions, unlike ``tempfile.mkstemp``'s 0600.)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
