"""Number and text formatting (and atomic file writing) shared by the HTML, Markdown and console renderers.

One place decides how a number looks, so the three renderers never disagree: ``0.9123 [0.9012, 0.9234]``;
missing values are an em dash; integers stay integers. A table column shares one :class:`NumberFormat`: one
notation for the whole column (scientific only when some number in it is too small or too large for fixed
notation) and, per row, the decimals that the row's magnitude warrants (``0.0787``, ``12.55``, ``185019``:
never ``185019.2247`` next to ``0.0697``, never ``3.635e-04`` next to ``0.9889``).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from assay.evidence.schema import Evidence, Metric

__all__ = [
    "HEADLINE_METRICS",
    "MAX_DECIMALS",
    "MISSING",
    "SCIENTIFIC_FROM",
    "SEVERITY_ORDER",
    "NumberFormat",
    "ci_columns",
    "decimals_for",
    "format_ci",
    "format_estimate",
    "format_metric",
    "format_number",
    "format_value",
    "headline_metrics",
    "interval_note",
    "key_metrics",
    "metric_parts",
    "short_hash",
    "table_cells",
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


#: Fixed notation shows at most this many decimals; a column whose numbers would need more goes scientific.
MAX_DECIMALS = 6
#: From this magnitude up fixed notation would print 16+ digits: the column goes scientific.
SCIENTIFIC_FROM = 1e15


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value)):
        return float(value)
    return None


def decimals_for(magnitude: float, digits: int = 4) -> int:
    """Decimals for the numbers of a row whose largest magnitude is ``magnitude``.

    ``digits`` decimals below 10 (``0.9123``, ``7.2381``: rates keep their familiar look); more for small
    numbers, so that they keep ``digits - 1`` significant digits (``0.00319``, ``0.000364``); fewer from 10
    up, so that large numbers show ``digits`` significant digits and no spurious precision (``12.55``,
    ``185019``). The exponent is read after rounding, so 9.99996 counts as 10.
    """
    if not magnitude > 0 or not math.isfinite(magnitude):
        return digits
    exponent = int(f"{magnitude:.{max(digits - 1, 0)}e}".split("e")[1])
    if exponent >= 1:
        return max(digits - 1 - exponent, 0)
    return max(digits, digits - 2 - exponent)


def _counts(*values: Any) -> bool:
    """Whether these numbers look like counts: all integral (or missing), one of them above 1 (and below
    the scientific range, where a float's integral look says nothing)."""
    present = [float(v) for v in values if v is not None and not isinstance(v, bool)]
    return (bool(present) and all(math.isfinite(v) and v.is_integer() for v in present)
            and 1 < max(map(abs, present)) < SCIENTIFIC_FROM)


def _integers(*values: Any) -> bool:
    """Whether every present value is an integer by type (an ``int``, a numpy integer)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, Integral) and not isinstance(v, bool) for v in present)


def _as_row(row: Any) -> tuple[Any, ...]:
    return tuple(row) if isinstance(row, (tuple, list)) else (row,)


@dataclass(frozen=True)
class NumberFormat:
    """How the numbers of one table column print, so that a column never mixes notations.

    A row is a number or a ``(value, ci_low, ci_high)`` triple, and the numbers of one row share their
    decimals (:func:`decimals_for` of the row's largest magnitude, more where the value needs them).
    Counts (integers by type, or integral floats with one above 1) print as integers. ``scientific``: the
    whole column uses ``digits`` significant digits in scientific notation -- chosen by :meth:`for_rows`
    when some row needs more than ``MAX_DECIMALS`` decimals or reaches ``SCIENTIFIC_FROM``. ``signed``: a
    sign on every number (deltas).
    """

    scientific: bool = False
    digits: int = 4
    signed: bool = False

    @classmethod
    def for_rows(cls, rows: Iterable[Any], *, digits: int = 4, signed: bool = False) -> NumberFormat:
        """The format of a column holding ``rows`` (numbers or ``(value, ci_low, ci_high)`` tuples)."""
        def needs_scientific(row: tuple[Any, ...]) -> bool:
            finite = [abs(x) for x in map(_real, row) if x is not None]
            if not finite or _integers(*row) or _counts(*row):
                return False
            largest = max(finite)
            return largest >= SCIENTIFIC_FROM or (largest > 0 and decimals_for(largest, digits) > MAX_DECIMALS)

        return cls(any(needs_scientific(_as_row(r)) for r in rows), digits, signed)

    @classmethod
    def for_metrics(cls, metrics: Iterable[Metric], *, digits: int = 4, signed: bool = False) -> NumberFormat:
        """The format of a column of metrics shown as ``value [lo, hi]``."""
        return cls.for_rows(((m.value, m.ci_low, m.ci_high) for m in metrics), digits=digits, signed=signed)

    def _text(self, value: Any, decimals: int | None) -> str:
        """One number: ``decimals`` None prints it as an integer."""
        if value is None:
            return MISSING
        if isinstance(value, bool):
            return "yes" if value else "no"
        if not isinstance(value, Real):
            return str(value)
        x = float(value)
        sign = "+" if self.signed else ""
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return (sign + "\u221e") if x > 0 else "-\u221e"
        if decimals is None:
            return f"{int(value) if isinstance(value, Integral) else int(x):{sign}d}"
        if self.scientific:
            return f"{x:{sign}.{max(self.digits - 1, 1)}e}"  # zero too: 0.000e+00 next to 1.526e-06
        return f"{x:{sign}.{decimals}f}"

    def _row(self, row: Sequence[Any], counts: bool) -> list[str]:
        """The row's numbers with shared decimals: those of its largest magnitude, or more where the row's first
        number (its value) needs them, up to ``digits`` (a p95 of 0.0787 with an interval up to 16.1 stays
        0.0787 [0.0686, 16.1040], not 0.08 [0.07, 16.10])."""
        finite = [abs(x) for x in map(_real, row) if x is not None]
        decimals = None
        if not counts:
            decimals = decimals_for(max(finite) if finite else 0.0, self.digits)
            value = _real(row[0]) if row else None
            if value is not None:
                decimals = max(decimals, min(decimals_for(abs(value), self.digits), self.digits))
        return [self._text(v, decimals) for v in row]

    def row(self, *values: Any) -> list[str]:
        """Numbers of one row (a value, its interval, its limit) with the row's shared decimals."""
        return self._row(values, _integers(*values) or _counts(*values))

    def number(self, value: Any) -> str:
        """A lone number (its own row): integers by type stay integers; integral floats print like floats
        of their magnitude (``1234567``, ``0.0000``)."""
        return self._row((value,), _integers(value))[0]

    def estimate(self, value: Any, ci_low: Any = None, ci_high: Any = None) -> tuple[str, str]:
        """(value, ``[lo, hi]`` or ``""``), the three numbers with one row's decimals."""
        row = (value, ci_low, ci_high)
        text, low, high = self._row(row, _integers(*row) or _counts(*row))
        return text, "" if ci_low is None and ci_high is None else f"[{low}, {high}]"

    def metric(self, metric: Metric) -> tuple[str, str]:
        """(value, ``[lo, hi]`` or ``""``) of a metric."""
        return self.estimate(metric.value, metric.ci_low, metric.ci_high)


def format_number(value: Any, digits: int = 4) -> str:
    """One scalar as text: ``None``/NaN -> em dash, ints as ints, floats with the decimals their magnitude
    warrants (:func:`decimals_for`; ``digits`` decimals below 10); scientific notation below 1e-4 or from
    1e15 (a p-value of 3e-7 must not print as 0.0000). A number in a table column: :class:`NumberFormat`.
    """
    return NumberFormat.for_rows([value], digits=digits).number(value)


def format_ci(ci_low: Any, ci_high: Any, digits: int = 4) -> str:
    """``[lo, hi]``, or ``""`` when both ends are missing."""
    if ci_low is None and ci_high is None:
        return ""
    return NumberFormat.for_rows([(ci_low, ci_high)], digits=digits).estimate(None, ci_low, ci_high)[1]


def format_estimate(value: Any, ci_low: Any, ci_high: Any, digits: int = 4) -> tuple[str, str]:
    """(value, ``[lo, hi]`` or ``""``) in one consistent notation: a column of one row of
    :class:`NumberFormat`, so an interval never mixes ``5.452e-04`` with ``0.0135``."""
    return NumberFormat.for_rows([(value, ci_low, ci_high)], digits=digits).estimate(value, ci_low, ci_high)


def metric_parts(metric: Metric, digits: int = 4) -> tuple[str, str]:
    """(value, ``[lo, hi]`` or ``""``) of a metric, see :func:`format_estimate`."""
    return format_estimate(metric.value, metric.ci_low, metric.ci_high, digits)


def format_metric(metric: Metric, digits: int = 4) -> str:
    """``value [lo, hi]`` (just ``value`` when the metric has no interval)."""
    value, ci = metric_parts(metric, digits)
    return f"{value} {ci}" if ci else value


#: Why a point estimate can lie outside its own percentile interval, by kind of statistic.
_BINNED_BIAS = ("binned calibration errors are biased upwards when bins hold few samples, and resampling adds that "
                "bias again")
_OTHER_BIAS = ("the statistic is biased, and resampling adds that bias again, which shifts a percentile interval "
               "away from the estimate")


def interval_note(name: str, metric: Metric, fmt: NumberFormat | None = None) -> str | None:
    """Why ``metric``'s point estimate lies outside its own interval; None when it lies inside or there is no
    interval.

    A percentile bootstrap interval is the spread of the statistic over resamples. For a statistic biased
    away from its true value (binned ECE/MCE, classwise ECE near 0: |acc - conf| per bin only grows with
    sampling noise) each resample adds the bias once more, so the whole interval can sit beside the
    estimate (Efron & Tibshirani 1993, ch. 10 on bias). The report then says so instead of leaving a
    reader to suspect a bug. ``fmt``: the numbers' format when they belong to a table column.
    """
    value, low, high = _real(metric.value), _real(metric.ci_low), _real(metric.ci_high)
    if value is None or low is None or high is None or low <= value <= high:
        return None
    text, ci = (fmt or NumberFormat.for_metrics([metric])).metric(metric)
    kind = "bootstrap interval" if "bootstrap" in metric.method.lower() else "interval"
    reason = _BINNED_BIAS if "binning" in metric.config else _OTHER_BIAS
    return f"{name} {text} lies outside its own {kind} {ci}: {reason}; read the interval as indicative"


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


def _number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


def table_cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                merged: Mapping[str, tuple[str, str]] | None = None) -> list[list[tuple[str, str]]]:
    """The cells of a row-oriented table as ``(text, "[lo, hi]" or "")``, one :class:`NumberFormat` per column.

    ``merged``: columns ``c`` shown with their ``c_ci_low``/``c_ci_high`` companions (default: those of
    ``columns`` whose companions occur in the rows, see :func:`ci_columns`); their numbers print as estimates
    (value and interval sharing a row's decimals; integral triples as counts). Other numeric cells print as
    lone numbers of their column's format; anything else (text, containers, booleans) through
    :func:`format_value`. So no column mixes notations.
    """
    if merged is None:
        keys: dict[str, None] = {}
        for row in rows:
            keys.update(dict.fromkeys(row))
        merged = {c: pair for c, pair in ci_columns(keys).items() if c in columns}
    formats = {}
    for c in columns:
        low, high = merged.get(c, ("", ""))
        triples = [(r.get(c), r.get(low), r.get(high)) if low else r.get(c) for r in rows
                   if _number_or_none(r.get(c))]
        formats[c] = NumberFormat.for_rows(triples)
    out = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if c in merged and _number_or_none(value):
                cells.append(formats[c].estimate(value, row.get(merged[c][0]), row.get(merged[c][1])))
            elif value is not None and _number_or_none(value):
                cells.append((formats[c].number(value), ""))
            else:
                cells.append((format_value(value), ""))
        out.append(cells)
    return out


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
