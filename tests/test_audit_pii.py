"""PII patterns (assay.audit.pii): hand-made positives and negatives, checksums, masking."""

from __future__ import annotations

import ipaddress

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.audit.pii import PII_COLUMNS, find_pii, iban_valid, luhn_valid, mask
from assay.errors import OptionError


def kinds(text: str) -> list[str]:
    return find_pii([text])["kind"].tolist()


@pytest.mark.parametrize(("text", "expected"), [
    ("write to john.doe+x@mail.example.co.uk today", ["email"]),
    ("not an address: john@localhost or @handle", []),
    ("Visa 4111 1111 1111 1111 on file", ["card"]),  # Luhn-valid test number
    ("Visa 4111-1111-1111-1112 on file", []),  # last digit changed: Luhn fails
    ("Amex 378282246310005", ["card"]),
    ("Mastercard 5555555555554444", ["card"]),
    ("order number 1234567890123", []),  # starts with 1: no issuer range
    ("IBAN GB82 WEST 1234 5698 7654 32 please", ["iban"]),
    ("IBAN GB82 WEST 1234 5698 7654 33 please", []),  # check digits wrong: mod-97 fails
    ("DE89370400440532013000", ["iban"]),
    ("IBAN GB82 WEST 1234 5698 7654 32 REF A1", ["iban"]),  # upper-case words after the IBAN
    ("call +44 20 7946 0958 now", ["phone"]),
    ("E.164 +14155552671", ["phone"]),
    ("US (415) 555-2671 or 415-555-2671", ["phone", "phone"]),
    ("Berlin 030 1234567", ["phone"]),
    ("on 2024-01-15 at 12:30:45 pi is 3.14159", []),  # dates, times, decimals are not phones or IPs
    ("host 192.168.1.20 down", ["ipv4"]),
    ("host 256.1.1.1 and 01.2.3.4", []),  # octet > 255; leading zero
    ("v6 2001:db8::8a2e:370:7334 up", ["ipv6"]),
    ("loopback ::1", ["ipv6"]),
    ("bad 2001:db8::1::2 and 12:34:56", []),  # two '::'; a time
])
def test_hand_made_positives_and_negatives(text: str, expected: list[str]) -> None:
    assert kinds(text) == expected


def test_checksums_against_references() -> None:
    # Luhn: the published test card numbers pass, one changed digit fails.
    for number in ("4111111111111111", "4012888888881881", "378282246310005", "6011111111111117"):
        assert luhn_valid(number)
        assert not luhn_valid(number[:-1] + str((int(number[-1]) + 1) % 10))
    # IBAN: the ISO 13616 examples pass; any one changed digit fails (mod 97 catches every single-digit error).
    for iban in ("GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606",
                 "NL91ABNA0417164300"):
        assert iban_valid(iban)
        assert not iban_valid(iban[:-1] + str((int(iban[-1]) + 1) % 10))
    assert not iban_valid("GB82")


def test_ip_findings_agree_with_ipaddress() -> None:
    candidates = ["10.0.0.1", "255.255.255.255", "300.1.2.3", "1.2.3", "fe80::1", "2001:db8:0:0:0:0:2:1", "1::2::3"]
    for candidate in candidates:
        try:
            ipaddress.ip_address(candidate)
            valid = True
        except ValueError:
            valid = False
        assert bool(kinds(f"x {candidate} y")) == valid, candidate


def test_dataframe_string_columns_only_and_masked() -> None:
    frame = pd.DataFrame({"note": ["mail a.b@example.org", None, "card 5555 5555 5555 4444"],
                          "amount": [4111111111111111, 2, 3],  # a number column is not scanned
                          "ip": ["10.1.2.3", "none", "x"]}, index=["r1", "r2", "r3"])
    found = find_pii(frame)
    assert list(found.columns) == PII_COLUMNS
    assert found[["index", "column", "kind"]].values.tolist() == [
        ["r1", "note", "email"], ["r3", "note", "card"], ["r1", "ip", "ipv4"]]
    assert found["match"].tolist() == ["*.*@******e.org", "**** **** **** 4444", "**.*.*.3"]
    assert "5555 5555 5555 4444" not in found.to_string()


def test_empty_and_unknown_kind() -> None:
    assert find_pii([]).empty and list(find_pii([]).columns) == PII_COLUMNS
    assert find_pii(["a@b.co x"], kinds=["card"]).empty
    with pytest.raises(OptionError, match="unknown PII kinds"):
        find_pii(["x"], kinds=["ssn"])


def test_long_digit_runs_do_not_backtrack() -> None:
    """Possessive patterns: a 10,000-character hostile line is scanned (this would take minutes otherwise)."""
    hostile = ["+" + "1" * 10_000, "+1 " * 3000, "1." * 5000, "a:" * 5000, "4" * 10_000]
    assert find_pii(hostile).empty


_alnum = st.characters(whitelist_categories=("Lu", "Ll", "Nd"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(_alnum, st.sampled_from(" .-@:+()")), min_size=1, max_size=40))
def test_mask_never_contains_the_full_match(match: str) -> None:
    masked = mask(match)
    assert len(masked) == len(match)
    if any(ch.isalnum() for ch in match):
        assert match not in masked


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["4111 1111 1111 1111", "john.doe@example.com", "+44 20 7946 0958",
                                 "GB82 WEST 1234 5698 7654 32", "192.168.10.20", "2001:db8::8a2e:370:7334"]),
                min_size=1, max_size=3),
       st.text(alphabet="abc xyz,;", max_size=10))
def test_found_secrets_never_appear_in_the_output(secrets: list[str], filler: str) -> None:
    text = f" {filler} ".join(secrets)
    found = find_pii([text])
    assert len(found) == len(secrets)
    shown = found.to_string()
    for secret in secrets:
        assert secret not in shown
