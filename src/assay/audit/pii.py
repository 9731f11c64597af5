"""Personal data patterns in text: e-mail addresses, phone numbers, IBANs, payment card numbers, IP addresses.

:func:`find_pii` scans strings (a list, a pandas Series, or every string column of a DataFrame) with regular
expressions and keeps a candidate only when its checksum or parser agrees:

* ``email`` — ``local@domain.tld`` (RFC 5322's common subset: letters, digits, ``._%+-`` in the local part;
  a dotted domain with a 2+ letter top-level label).
* ``iban`` — 2 letters, 2 check digits, 11-30 letters/digits (spaces allowed between groups of four), length
  15-34, valid by ISO 13616's mod-97 check (letters to 10..35, first four characters moved to the end,
  remainder 1).
* ``card`` — 13-19 digits, single spaces or hyphens allowed between digits, first digit 2-6 (the issuer
  ranges of Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro), valid by the Luhn check
  (ISO/IEC 7812-1), not all zeros.
* ``phone`` — international ``+CC ...`` (E.164: 8-15 digits after the ``+``, groups separated by spaces, dots,
  hyphens or a bracketed area code) and common national formats: North-American ``(555) 123-4567`` /
  ``555-123-4567`` / ``555.123.4567``, and trunk-prefixed ``0...`` numbers with separators
  (``020 7946 0958``, ``030-1234567``), 9-12 digits. Digits inside an IBAN or card match are not phones.
* ``ipv4`` / ``ipv6`` — dotted quads and colon-hex candidates accepted only if :mod:`ipaddress` parses them
  (IPv4 octets 0-255 without leading zeros; IPv6 with at most one ``::``).

Matches are returned **masked** (letters and digits replaced by ``*`` except the last few, at most a third),
so a report never prints a full address or number; the masked string always differs from the match in at
least one letter or digit. Nothing read is ever evaluated: the scan is regular expressions and integer
arithmetic. Expected false positives: version strings that look like IPv4 addresses (``1.2.3.4``), random
Luhn-valid digit runs (1 in 10 of 13-19 digit runs starting 2-6 pass Luhn).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PII_COLUMNS", "PII_KINDS", "find_pii", "iban_valid", "luhn_valid", "mask"]

#: Columns of :func:`find_pii`'s frame.
PII_COLUMNS = ["index", "column", "kind", "match"]
#: The kinds of personal data found, in report order.
PII_KINDS = ("email", "phone", "iban", "card", "ipv4", "ipv6")
#: Column name given to the items of a plain list or unnamed Series.
TEXT_COLUMN = "text"

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?![\d])")
# Possessive quantifiers (Python 3.11): a long digit run cannot make the engine try every way of splitting it.
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+(?:\d{8,15}+|[1-9]\d{0,3}+(?:[ .-]?\(\d{1,4}+\))?"
                                  r"(?:[ .-]\d{1,10}+){1,6}+)(?![\d])")
_PHONE_NANP = re.compile(r"(?<![\w+])(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4}(?!\d)")
_PHONE_TRUNK = re.compile(r"(?<![\w+])0\d{1,4}(?:[ /-]\d{2,8}){1,3}(?!\d)")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
                   r"(?![0-9A-Fa-f:])")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string (ISO/IEC 7812-1): double every second digit from the right."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616 IBAN check: spaces removed, 15-34 characters, first four moved to the end, letters as 10..35,
    the number modulo 97 is 1."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for char in rearranged:  # digit by digit: no big integer built from the text
        for digit in str(int(char, 36)):
            remainder = (remainder * 10 + int(digit)) % 97
    return remainder == 1


def _valid_iban_prefix(candidate: str) -> str | None:
    """The longest valid IBAN among ``candidate`` and its prefixes cut at a space (the pattern may have run on
    into an upper-case word or reference number written after the IBAN)."""
    while len(candidate.replace(" ", "")) >= 15:
        if iban_valid(candidate):
            return candidate
        if " " not in candidate:
            return None
        candidate = candidate.rsplit(" ", 1)[0]
    return None


def mask(match: str) -> str:
    """``match`` with every letter and digit replaced by ``*`` except the last ``min(4, n // 3)`` of them
    (PCI DSS shows at most the last four of a card number); separators stay, so the shape is readable."""
    alnum = sum(ch.isalnum() for ch in match)
    keep = min(4, alnum // 3)
    out = []
    seen = 0
    for ch in match:
        if ch.isalnum():
            seen += 1
            out.append(ch if seen > alnum - keep else "*")
        else:
            out.append(ch)
    return "".join(out)


def _overlaps(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in taken)


def _scan(text: str) -> Iterator[tuple[str, str]]:
    """``(kind, raw match)`` for each finding in one string, checksum-validated; a span claimed by an IBAN or a
    card is not reported again as a phone number."""
    taken: list[tuple[int, int]] = []
    for m in _EMAIL.finditer(text):
        taken.append(m.span())
        yield "email", m.group()
    for m in _IBAN.finditer(text):
        iban = _valid_iban_prefix(m.group())
        if iban:
            taken.append((m.start(), m.start() + len(iban)))
            yield "iban", iban
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and digits.strip("0") and luhn_valid(digits) and not _overlaps(m.span(), taken):
            taken.append(m.span())
            yield "card", m.group()
    for pattern, low in ((_PHONE_INTERNATIONAL, 8), (_PHONE_NANP, 10), (_PHONE_TRUNK, 9)):
        for m in pattern.finditer(text):
            count = sum(ch.isdigit() for ch in m.group())
            high = 15 if pattern is _PHONE_INTERNATIONAL else 12
            if low <= count <= high and not _overlaps(m.span(), taken):
                taken.append(m.span())
                yield "phone", m.group()
    for m in _IPV4.finditer(text):
        if _parses(m.group(), ipaddress.IPv4Address) and not _overlaps(m.span(), taken):
            yield "ipv4", m.group()
    for m in _IPV6.finditer(text):
        candidate = m.group()
        if any(ch.isalnum() for ch in candidate) and _parses(candidate, ipaddress.IPv6Address) \
                and not _overlaps(m.span(), taken):
            yield "ipv6", candidate


def _parses(candidate: str, kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> bool:
    try:
        kind(candidate)
    except ValueError:
        return False
    return True


def _string_columns(data: Any) -> Iterable[tuple[str, Iterable[tuple[Any, Any]]]]:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        for name in data.columns:
            column = data[name]
            if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
                yield str(name), column.items()
        return
    if isinstance(data, pd.Series):
        yield (TEXT_COLUMN if data.name is None else str(data.name)), data.items()
        return
    if isinstance(data, str):
        data = [data]
    yield TEXT_COLUMN, enumerate(data)


def find_pii(data: Any, *, kinds: Iterable[str] = PII_KINDS) -> pd.DataFrame:
    """Personal data in ``data``: a string, a sequence of strings, a pandas Series, or a DataFrame (its object
    and string columns). One row per finding: ``index`` (the item's position or the frame's index label),
    ``column`` (``"text"`` for a plain list), ``kind`` (one of :data:`PII_KINDS`) and ``match`` (masked by
    :func:`mask`). Non-string cells (numbers, None, NaN) are skipped."""
    import pandas as pd

    wanted = set(kinds)
    unknown = wanted - set(PII_KINDS)
    if unknown:
        from assay.errors import OptionError

        raise OptionError(f"unknown PII kinds {sorted(unknown)}", where="kinds", fix=f"choose from {list(PII_KINDS)}")
    rows: list[tuple[Any, str, str, str]] = []
    for column, cells in _string_columns(data):
        for index, value in cells:
            if not isinstance(value, str):
                continue
            rows.extend((index, column, kind, mask(raw)) for kind, raw in _scan(value) if kind in wanted)
    return pd.DataFrame(rows, columns=PII_COLUMNS)
