"""Text corruptions: character- and word-level noise of the kind real inputs carry (typos, OCR and
copy-paste damage, evasion by look-alike characters), at five severities.

Each corruption visits the *eligible* units of a text (characters or words, see each description) and
edits each one independently with the probability of its severity:

====================  =====  =====  =====  =====  =====
severity                1      2      3      4      5
====================  =====  =====  =====  =====  =====
per eligible char     0.02   0.05   0.10   0.15   0.20
per word (dropout)    0.05   0.10   0.15   0.20   0.30
====================  =====  =====  =====  =====  =====

Severity 1 keeps texts close (about 2 edits per 100 characters) so labels keep their meaning; severity 5
is heavy but still mostly readable. The operations follow the common character-level perturbation
families of Belinkov & Bisk (2018, "Synthetic and natural noise both break neural machine translation")
and Pruthi et al. (2019, "Combating adversarial misspellings"): keyboard typos, insertion, deletion,
adjacent transposition; homoglyphs follow the Unicode confusables data (UTS #39).

Randomness for text ``i`` comes only from ``(seed, name, severity, index[i])``, so batching never changes
a result (see :mod:`assay.corruptions.base`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

import numpy as np

from assay.corruptions.base import CorruptionInfo, check_index, check_severity, sample_rng, unknown_corruption
from assay.errors import UserError

__all__ = ["CHAR_PROBABILITY", "HOMOGLYPHS", "QWERTY_NEIGHBOURS", "TEXT_CORRUPTIONS", "WORD_PROBABILITY",
           "corrupt_text", "corrupt_texts"]

#: Probability that one eligible character is edited, by severity 1..5.
CHAR_PROBABILITY: tuple[float, ...] = (0.02, 0.05, 0.10, 0.15, 0.20)
#: Probability that one word is dropped, by severity 1..5.
WORD_PROBABILITY: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20, 0.30)


def _qwerty_neighbours() -> dict[str, str]:
    """Keys adjacent on a US QWERTY keyboard, from the geometry of its staggered rows: each row is offset
    right of the one above (0.5, 0.25 and 0.5 key widths), and two keys are neighbours when their centres
    are at most 1.3 key widths apart (same row: left/right; rows above/below: the two touching keys)."""
    rows = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
    offsets = (0.0, 0.5, 0.75, 1.25)
    centres = {key: (col + offsets[r], float(r)) for r, row in enumerate(rows) for col, key in enumerate(row)}
    out = {}
    for key, (x, y) in centres.items():
        near = [k for k, (u, v) in centres.items() if k != key and (x - u) ** 2 + (y - v) ** 2 <= 1.3**2]
        out[key] = "".join(sorted(near))
    return out


#: Lower-case letter or digit -> the keys next to it on a US QWERTY keyboard.
QWERTY_NEIGHBOURS: dict[str, str] = _qwerty_neighbours()

#: Latin letter -> a Cyrillic or Greek letter that renders the same in common fonts (pairs listed as
#: confusable in Unicode's confusables.txt, UTS #39). Code points are written out to stay reviewable.
HOMOGLYPHS: dict[str, str] = {
    "a": "\u0430",  # CYRILLIC SMALL LETTER A
    "c": "\u0441",  # CYRILLIC SMALL LETTER ES
    "d": "\u0501",  # CYRILLIC SMALL LETTER KOMI DE
    "e": "\u0435",  # CYRILLIC SMALL LETTER IE
    "h": "\u04bb",  # CYRILLIC SMALL LETTER SHHA
    "i": "\u0456",  # CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I
    "j": "\u0458",  # CYRILLIC SMALL LETTER JE
    "o": "\u043e",  # CYRILLIC SMALL LETTER O
    "p": "\u0440",  # CYRILLIC SMALL LETTER ER
    "q": "\u051b",  # CYRILLIC SMALL LETTER QA
    "s": "\u0455",  # CYRILLIC SMALL LETTER DZE
    "w": "\u051d",  # CYRILLIC SMALL LETTER WE
    "x": "\u0445",  # CYRILLIC SMALL LETTER HA
    "y": "\u0443",  # CYRILLIC SMALL LETTER U
    "A": "\u0410",  # CYRILLIC CAPITAL LETTER A
    "B": "\u0412",  # CYRILLIC CAPITAL LETTER VE
    "C": "\u0421",  # CYRILLIC CAPITAL LETTER ES
    "E": "\u0415",  # CYRILLIC CAPITAL LETTER IE
    "H": "\u041d",  # CYRILLIC CAPITAL LETTER EN
    "I": "\u0406",  # CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I
    "J": "\u0408",  # CYRILLIC CAPITAL LETTER JE
    "K": "\u041a",  # CYRILLIC CAPITAL LETTER KA
    "M": "\u041c",  # CYRILLIC CAPITAL LETTER EM
    "N": "\u039d",  # GREEK CAPITAL LETTER NU
    "O": "\u041e",  # CYRILLIC CAPITAL LETTER O
    "P": "\u0420",  # CYRILLIC CAPITAL LETTER ER
    "S": "\u0405",  # CYRILLIC CAPITAL LETTER DZE
    "T": "\u0422",  # CYRILLIC CAPITAL LETTER TE
    "X": "\u0425",  # CYRILLIC CAPITAL LETTER HA
    "Y": "\u04ae",  # CYRILLIC CAPITAL LETTER STRAIGHT U
    "Z": "\u0396",  # GREEK CAPITAL LETTER ZETA
}

_INSERT_ALPHABET = string.ascii_lowercase
_PUNCTUATION = ".,;:!?'\"-"
_PUNCTUATION_SET = frozenset(string.punctuation)
_TOKENS = re.compile(r"\s+|\S+")

TEXT_CORRUPTIONS: dict[str, CorruptionInfo] = {
    info.name: info
    for info in (
        CorruptionInfo("keyboard_typo", "character",
                       description="each letter or digit is replaced, with the severity's probability, by a key "
                                   "next to it on a US QWERTY keyboard (case kept)"),
        CorruptionInfo("char_insert", "character",
                       description="after each character, with the severity's probability, a random lower-case "
                                   "letter is inserted"),
        CorruptionInfo("char_delete", "character",
                       description="each non-whitespace character is deleted with the severity's probability"),
        CorruptionInfo("char_swap", "character",
                       description="adjacent non-whitespace characters are transposed with the severity's "
                                   "probability per position (swaps never overlap)"),
        CorruptionInfo("case_noise", "character",
                       description="each cased letter flips case with the severity's probability"),
        CorruptionInfo("whitespace_noise", "character",
                       description="each whitespace character is removed, and a space is inserted after each "
                                   "other character, with the severity's probability"),
        CorruptionInfo("punctuation_noise", "character",
                       description="each punctuation mark is removed, and a random mark from .,;:!?'\"- is "
                                   "inserted after each other non-whitespace character, with the severity's "
                                   "probability"),
        CorruptionInfo("homoglyph", "character",
                       description="each Latin letter with a look-alike is replaced, with the severity's "
                                   "probability, by its Cyrillic or Greek homoglyph (UTS #39 confusables)"),
        CorruptionInfo("word_dropout", "word",
                       description="each whitespace-separated word is dropped with the severity's word "
                                   "probability (one word is always kept)"),
    )
}


def _edit_positions(text: str, eligible: Callable[[str], bool], p: float, rng: np.random.Generator) -> list[int]:
    """Eligible positions picked independently with probability ``p`` (one uniform per character, so the
    draw for position k does not depend on what was eligible before it)."""
    picked = np.flatnonzero(rng.random(len(text)) < p)
    return [int(k) for k in picked if eligible(text[k])]


def _keyboard_typo(text: str, p: float, rng: np.random.Generator) -> str:
    chars = list(text)
    for k in _edit_positions(text, lambda c: c.lower() in QWERTY_NEIGHBOURS, p, rng):
        c = chars[k]
        near = QWERTY_NEIGHBOURS[c.lower()]
        sub = near[int(rng.integers(len(near)))]
        chars[k] = sub.upper() if c.isupper() else sub
    return "".join(chars)


def _char_insert(text: str, p: float, rng: np.random.Generator) -> str:
    chars = list(text)
    for k in reversed(_edit_positions(text, lambda c: True, p, rng)):
        chars.insert(k + 1, _INSERT_ALPHABET[int(rng.integers(len(_INSERT_ALPHABET)))])
    return "".join(chars)


def _char_delete(text: str, p: float, rng: np.random.Generator) -> str:
    drop = set(_edit_positions(text, lambda c: not c.isspace(), p, rng))
    return "".join(c for k, c in enumerate(text) if k not in drop)


def _char_swap(text: str, p: float, rng: np.random.Generator) -> str:
    chars = list(text)
    draws = rng.random(len(text))
    k = 0
    while k < len(chars) - 1:
        a, b = chars[k], chars[k + 1]
        if draws[k] < p and a != b and not a.isspace() and not b.isspace():
            chars[k], chars[k + 1] = b, a
            k += 2  # the swapped pair is done; swaps never overlap
        else:
            k += 1
    return "".join(chars)


def _flips_case(c: str) -> bool:
    s = c.swapcase()
    return len(s) == 1 and s != c


def _case_noise(text: str, p: float, rng: np.random.Generator) -> str:
    chars = list(text)
    for k in _edit_positions(text, _flips_case, p, rng):
        chars[k] = chars[k].swapcase()
    return "".join(chars)


def _whitespace_noise(text: str, p: float, rng: np.random.Generator) -> str:
    picked = set(_edit_positions(text, lambda c: True, p, rng))
    out = []
    for k, c in enumerate(text):
        if c.isspace():
            if k not in picked:
                out.append(c)
        else:
            out.append(c + " " if k in picked else c)
    return "".join(out)


def _punctuation_noise(text: str, p: float, rng: np.random.Generator) -> str:
    picked = _edit_positions(text, lambda c: not c.isspace(), p, rng)
    marks = rng.integers(len(_PUNCTUATION), size=len(picked))
    edits = dict(zip(picked, marks))
    out = []
    for k, c in enumerate(text):
        if k not in edits:
            out.append(c)
        elif c not in _PUNCTUATION_SET:
            out.append(c + _PUNCTUATION[int(edits[k])])
    return "".join(out)


def _homoglyph(text: str, p: float, rng: np.random.Generator) -> str:
    chars = list(text)
    for k in _edit_positions(text, lambda c: c in HOMOGLYPHS, p, rng):
        chars[k] = HOMOGLYPHS[chars[k]]
    return "".join(chars)


def _word_dropout(text: str, p: float, rng: np.random.Generator) -> str:
    tokens = _TOKENS.findall(text)
    words = [k for k, t in enumerate(tokens) if not t.isspace()]
    if len(words) < 2:
        return text
    drop = rng.random(len(words)) < p
    if drop.all():
        drop[int(rng.integers(len(words)))] = False
    dropped = {words[j] for j in np.flatnonzero(drop)}
    # Remove each dropped word with the whitespace before it (after it, for a leading word), so the text
    # keeps single separators where it had them.
    keep = [True] * len(tokens)
    for k in sorted(dropped):
        keep[k] = False
        if k > 0 and tokens[k - 1].isspace() and keep[k - 1]:
            keep[k - 1] = False
        elif k + 1 < len(tokens) and tokens[k + 1].isspace():
            keep[k + 1] = False
    return "".join(t for t, kept in zip(tokens, keep) if kept)


_FUNCTIONS: dict[str, Callable[[str, float, np.random.Generator], str]] = {
    "keyboard_typo": _keyboard_typo,
    "char_insert": _char_insert,
    "char_delete": _char_delete,
    "char_swap": _char_swap,
    "case_noise": _case_noise,
    "whitespace_noise": _whitespace_noise,
    "punctuation_noise": _punctuation_noise,
    "homoglyph": _homoglyph,
    "word_dropout": _word_dropout,
}
assert set(_FUNCTIONS) == set(TEXT_CORRUPTIONS)


def _probability(name: str, severity: int) -> float:
    table = WORD_PROBABILITY if TEXT_CORRUPTIONS[name].family == "word" else CHAR_PROBABILITY
    return table[int(severity) - 1]


def corrupt_text(text: str, name: str, severity: int, *, seed: int = 0, index: int = 0) -> str:
    """One text corrupted: the same result as element ``index`` of :func:`corrupt_texts`."""
    return str(corrupt_texts([text], name, severity, seed=seed, index=np.array([index]))[0])


def corrupt_texts(texts: Sequence[str], name: str, severity: int, *, seed: int = 0,
                  index: np.ndarray | None = None) -> np.ndarray:
    """Corrupt each text with corruption ``name`` at ``severity`` (1..5).

    ``index``: each text's position in the whole evaluation set (default ``0..n-1``); text ``i``'s edits
    depend only on ``(seed, name, severity, index[i])``. Returns a 1-D object array of ``str``.
    """
    if name not in TEXT_CORRUPTIONS:
        raise unknown_corruption(name, TEXT_CORRUPTIONS, "text")
    check_severity(severity)
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (Sequence, np.ndarray)):
        raise UserError(f"texts must be a sequence of strings, got {type(texts).__name__}", where="texts",
                        fix="pass a list or 1-D array of strings (wrap a single text in a list)")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise UserError(f"texts must be 1-D, got shape {texts.shape}", where="texts", fix="pass one string per sample")
    bad = [k for k, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise UserError(f"{len(bad)} text(s) are not strings (first at rows {bad[:5]}, "
                        f"a {type(texts[bad[0]]).__name__})", where="texts", fix="pass one str per sample")
    positions = check_index(index, len(texts))
    fn, p = _FUNCTIONS[name], _probability(name, severity)
    out = np.empty(len(texts), dtype=object)
    for k, (text, i) in enumerate(zip(texts, positions)):
        out[k] = fn(str(text), p, sample_rng(seed, name, severity, int(i))) if text else str(text)
    return out
