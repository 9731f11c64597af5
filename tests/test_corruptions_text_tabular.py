"""Text and tabular corruptions: determinism, batch invariance, the size of an edit at each severity,
what each corruption may and may not change, and bad input."""

from __future__ import annotations

import itertools
import string
import unicodedata
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from assay.corruptions.base import CorruptionInfo, check_severity, sample_normals, sample_rng, sample_uniforms
from assay.corruptions.tabular import TABULAR_CORRUPTIONS, TABULAR_IMPUTATION, TABULAR_SEVERITY, corrupt_table
from assay.corruptions.text import (
    CHAR_PROBABILITY,
    HOMOGLYPHS,
    QWERTY_NEIGHBOURS,
    TEXT_CORRUPTIONS,
    WORD_PROBABILITY,
    corrupt_text,
    corrupt_texts,
)
from assay.errors import UserError

TEXT_NAMES = list(TEXT_CORRUPTIONS)
TABLE_NAMES = list(TABULAR_CORRUPTIONS)

_WORDS = ["the", "model", "was", "trained", "on", "reviews", "of", "films", "and", "books", "it", "predicts", "whether",
          "a", "review", "is", "positive", "or", "negative", "Great", "acting,", "poor", "plot!", "I", "loved", "it.",
          "Would", "not", "watch", "again;", "10/10", "QUICK", "brown", "fox"]


def _corpus(n: int = 80, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=rng.integers(5, 12))) for _ in range(n)]


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character), textbook dynamic program."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalized_levenshtein(a: str, b: str) -> float:
    return levenshtein(a, b) / max(len(a), len(b), 1)


def _is_subsequence(small, big) -> bool:
    it = iter(big)
    return all(any(s == b for b in it) for s in small)


# ----------------------------------------------------------------------------------------------- base


def test_levenshtein_reference_cases():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("ab", "ba") == 2


def test_corruption_info_is_frozen():
    info = CorruptionInfo("x", "noise")
    assert info.held_out is False and info.description == ""
    with pytest.raises(AttributeError):
        info.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize("bad", [0, 6, -1, 2.0, "3", True, None])
def test_check_severity_rejects(bad):
    with pytest.raises(UserError, match="1..5"):
        check_severity(bad)


def test_sample_rng_depends_on_every_key_part_and_nothing_else():
    draw = lambda *key: sample_rng(*key).random(4)  # noqa: E731
    assert np.array_equal(draw(0, "a", 1, 7), draw(0, "a", 1, 7))
    base = draw(0, "a", 1, 7)
    for other in [(1, "a", 1, 7), (0, "b", 1, 7), (0, "a", 2, 7), (0, "a", 1, 8)]:
        assert not np.array_equal(base, draw(*other))


def test_counter_draws_are_uniform_and_normal():
    index = np.arange(2000)
    u = sample_uniforms(3, "gaussian_noise", 2, index, 10)
    assert u.shape == (2000, 10) and u.min() > 0 and u.max() < 1
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    # Columns (positions within a sample) and rows are uncorrelated.
    assert np.abs(np.corrcoef(u.T)[np.triu_indices(10, 1)]).max() < 0.1
    z = sample_normals(3, "gaussian_noise", 2, index, 10)
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    # Rows depend only on their own index; streams are independent of each other.
    assert np.array_equal(sample_uniforms(3, "x", 2, index[[5, 1]], 4), sample_uniforms(3, "x", 2, index, 4)[[5, 1]])
    assert abs(np.corrcoef(u.ravel(),
                           sample_uniforms(3, "gaussian_noise", 2, index, 10, stream=1).ravel())[0, 1]) < 0.05


# ----------------------------------------------------------------------------------------------- text


def test_text_severity_tables_are_increasing_and_match_registry():
    assert list(CHAR_PROBABILITY) == sorted(CHAR_PROBABILITY) and len(CHAR_PROBABILITY) == 5
    assert list(WORD_PROBABILITY) == sorted(WORD_PROBABILITY) and len(WORD_PROBABILITY) == 5
    assert set(TEXT_NAMES) == {"keyboard_typo", "char_insert", "char_delete", "char_swap", "case_noise",
                               "whitespace_noise", "punctuation_noise", "homoglyph", "word_dropout"}
    for name, info in TEXT_CORRUPTIONS.items():
        assert info.name == name and info.description and not info.held_out


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_text_deterministic_batch_invariant_and_seeded(name):
    texts = _corpus(40)
    whole = corrupt_texts(texts, name, 4, seed=7)
    assert whole.dtype == object and whole.shape == (40,) and all(type(t) is str for t in whole)
    assert np.array_equal(whole, corrupt_texts(texts, name, 4, seed=7))
    batches = [corrupt_texts(texts[a:a + 13], name, 4, seed=7, index=np.arange(a, min(a + 13, 40)))
               for a in range(0, 40, 13)]
    assert np.array_equal(whole, np.concatenate(batches))
    order = np.random.default_rng(1).permutation(40)
    assert np.array_equal(whole[order], corrupt_texts([texts[k] for k in order], name, 4, seed=7, index=order))
    assert corrupt_text(texts[9], name, 4, seed=7, index=9) == whole[9]
    assert not np.array_equal(whole, corrupt_texts(texts, name, 4, seed=8))
    assert (whole != np.array(texts, dtype=object)).mean() > 0.5  # severity 4 edits most texts


def test_text_edit_size_small_at_severity_1_and_monotone():
    texts = _corpus(80)
    for name in TEXT_NAMES:
        means = []
        for severity in range(1, 6):
            out = corrupt_texts(texts, name, severity, seed=0)
            means.append(np.mean([normalized_levenshtein(a, b) for a, b in zip(texts, out)]))
        assert means[0] <= 0.1, (name, means)
        assert means[0] > 0, name
        assert all(b >= a for a, b in itertools.pairwise(means)), (name, means)


def test_word_dropout_keeps_meaning_at_severity_1():
    texts = _corpus(200)
    out = corrupt_texts(texts, "word_dropout", 1, seed=0)
    kept = [len(b.split()) / len(a.split()) for a, b in zip(texts, out)]
    assert np.mean(kept) >= 0.9
    assert abs((1 - np.mean(kept)) - WORD_PROBABILITY[0]) < 0.02
    for a, b in zip(texts, out):
        assert _is_subsequence(b.split(), a.split()) and b.split()


def test_substitution_rate_matches_severity_table():
    texts = _corpus(200)
    for severity in (1, 5):
        out = corrupt_texts(texts, "homoglyph", severity, seed=0)
        eligible = sum(c in HOMOGLYPHS for t in texts for c in t)
        changed = sum(x != y for a, b in zip(texts, out) for x, y in zip(a, b))
        p = CHAR_PROBABILITY[severity - 1]
        assert abs(changed / eligible - p) < 4 * np.sqrt(p * (1 - p) / eligible)


def test_qwerty_neighbours_match_a_keyboard():
    # Read off a physical US keyboard.
    assert set(QWERTY_NEIGHBOURS["g"]) == set("tyfhvb")
    assert set(QWERTY_NEIGHBOURS["a"]) == set("qwsz")
    assert set(QWERTY_NEIGHBOURS["p"]) == set("0ol")
    assert set(QWERTY_NEIGHBOURS["m"]) == set("njk")
    assert set(QWERTY_NEIGHBOURS["5"]) == set("46rt")
    assert set(QWERTY_NEIGHBOURS["e"]) == set("34wrsd")
    assert set(QWERTY_NEIGHBOURS) == set(string.ascii_lowercase + string.digits)
    for key, near in QWERTY_NEIGHBOURS.items():
        assert all(key in QWERTY_NEIGHBOURS[k] for k in near)  # adjacency is symmetric


def test_homoglyph_table_maps_to_look_alike_letters_of_other_scripts():
    assert HOMOGLYPHS["a"] == "\u0430" and unicodedata.name(HOMOGLYPHS["a"]) == "CYRILLIC SMALL LETTER A"
    assert HOMOGLYPHS["o"] == "\u043e" and unicodedata.name(HOMOGLYPHS["o"]) == "CYRILLIC SMALL LETTER O"
    assert unicodedata.name(HOMOGLYPHS["e"]) == "CYRILLIC SMALL LETTER IE"
    assert unicodedata.name(HOMOGLYPHS["T"]) == "CYRILLIC CAPITAL LETTER TE"
    assert unicodedata.name(HOMOGLYPHS["N"]) == "GREEK CAPITAL LETTER NU"
    assert len(set(HOMOGLYPHS.values())) == len(HOMOGLYPHS)
    for latin, glyph in HOMOGLYPHS.items():
        assert latin in string.ascii_letters and len(glyph) == 1 and ord(glyph) > 0x36F
        assert unicodedata.name(glyph).split()[0] in {"CYRILLIC", "GREEK"}
        assert glyph.isupper() == latin.isupper()


_TEXT = st.text(alphabet=st.sampled_from(list(string.ascii_letters + string.digits + " ,.!?'\n-")
                                         + ["é", "ß", "Ω", "日", "\u0301"]), max_size=60)


@settings(max_examples=40, deadline=None)
@given(text=_TEXT, seed=st.integers(0, 2**32), severity=st.integers(1, 5))
def test_each_corruption_only_makes_its_own_edits(text, seed, severity):
    out = {name: corrupt_text(text, name, severity, seed=seed) for name in TEXT_NAMES}
    same_length = ("keyboard_typo", "case_noise", "homoglyph", "char_swap")
    for name in same_length:
        assert len(out[name]) == len(text), name
    for a, b in zip(text, out["keyboard_typo"]):
        assert a == b or (b.lower() in QWERTY_NEIGHBOURS[a.lower()] and (b.isupper() == a.isupper() or b.isdigit()))
    for a, b in zip(text, out["case_noise"]):
        assert a == b or b == a.swapcase()
    for a, b in zip(text, out["homoglyph"]):
        assert a == b or HOMOGLYPHS[a] == b
    # char_swap: the differences are disjoint adjacent transpositions.
    k, swapped = 0, out["char_swap"]
    while k < len(text):
        if text[k] == swapped[k]:
            k += 1
            continue
        assert swapped[k] == text[k + 1] and swapped[k + 1] == text[k]
        k += 2
    assert _is_subsequence(out["char_delete"], text)
    assert [c for c in out["char_delete"] if c.isspace()] == [c for c in text if c.isspace()]
    assert _is_subsequence(text, out["char_insert"])
    added = Counter(out["char_insert"]) - Counter(text)
    assert sum(added.values()) == len(out["char_insert"]) - len(text)
    assert all(c in string.ascii_lowercase for c in added)
    assert "".join(out["whitespace_noise"].split()) == "".join(text.split())
    strip = str.maketrans("", "", string.punctuation)
    assert out["punctuation_noise"].translate(strip) == text.translate(strip)
    assert _is_subsequence(out["word_dropout"].split(), text.split())
    assert bool(out["word_dropout"].split()) == bool(text.split())


def test_text_accepts_arrays_and_empty_strings():
    texts = np.array(["hello world", "", "x"])  # fixed-width unicode, as loaded from NPZ
    out = corrupt_texts(texts, "char_insert", 5)
    assert out[1] == "" and out.dtype == object
    assert np.array_equal(out, corrupt_texts(list(texts.astype(object)), "char_insert", 5))
    assert corrupt_texts([], "char_delete", 1).shape == (0,)


def test_text_bad_input():
    with pytest.raises(UserError, match="keyboard_typo.*word_dropout"):
        corrupt_texts(["a"], "gaussian_noise", 1)
    with pytest.raises(UserError, match="1..5"):
        corrupt_texts(["a"], "char_swap", 6)
    with pytest.raises(UserError, match="wrap a single text in a list"):
        corrupt_texts("a text", "char_swap", 1)
    with pytest.raises(UserError, match="not strings"):
        corrupt_texts(["ok", 3], "char_swap", 1)
    with pytest.raises(UserError, match="index"):
        corrupt_texts(["a", "b"], "char_swap", 1, index=np.array([0]))
    with pytest.raises(UserError, match="negative"):
        corrupt_texts(["a", "b"], "char_swap", 1, index=np.array([0, -1]))
    with pytest.raises(UserError, match="seed"):
        corrupt_texts(["a"], "char_swap", 1, seed=0.5)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- tabular


def _table(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 10.0, 0.01, 250.0])
    x = (rng.normal(size=(n, 4)) * scales + np.array([0.0, 100.0, -3.0, 1e3])).astype(np.float32)
    return x, x.astype(np.float64).std(axis=0), x.astype(np.float64).mean(axis=0)


def test_tabular_registry():
    assert set(TABLE_NAMES) == {"gaussian_noise", "missing_values", "scaling", "quantization"}
    assert TABULAR_IMPUTATION == "mean"
    assert "mean" in TABULAR_CORRUPTIONS["missing_values"].description
    for name, info in TABULAR_CORRUPTIONS.items():
        assert info.name == name and info.description and len(TABULAR_SEVERITY[name]) == 5


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_tabular_deterministic_batch_invariant_and_typed(name):
    x, std, mean = _table(500)
    kw = {"feature_std": std, "feature_mean": mean, "seed": 4}
    whole = corrupt_table(x, name, 3, **kw)
    assert whole.shape == x.shape and whole.dtype == np.float32 and np.isfinite(whole).all()
    assert np.array_equal(whole, corrupt_table(x, name, 3, **kw))
    batches = [corrupt_table(x[a:a + 77], name, 3, index=np.arange(a, min(a + 77, 500)), **kw)
               for a in range(0, 500, 77)]
    assert np.array_equal(whole, np.concatenate(batches))
    order = np.random.default_rng(2).permutation(500)
    assert np.array_equal(whole[order], corrupt_table(x[order], name, 3, index=order, **kw))
    if name != "quantization":  # the only corruption without randomness
        assert not np.array_equal(whole, corrupt_table(x, name, 3, **{**kw, "seed": 5}))
    assert not np.array_equal(whole, x)


def test_gaussian_noise_std_is_s_times_feature_std():
    x, std, mean = _table(4000)
    for severity in (1, 5):
        s = TABULAR_SEVERITY["gaussian_noise"][severity - 1]
        noise = corrupt_table(x, "gaussian_noise", severity, feature_std=std).astype(np.float64) - x
        # Sample std of 4000 normals is within ~1.1% (one standard error) of sigma; allow 5%.
        np.testing.assert_allclose(noise.std(axis=0), s * std, rtol=0.05)
        assert np.all(np.abs(noise.mean(axis=0)) < 4 * s * std / np.sqrt(4000))
        assert stats.kstest((noise / (s * std)).ravel(), "norm").pvalue > 1e-3


def test_gaussian_noise_leaves_constant_features_alone():
    x = np.zeros((10, 2), dtype=np.float32)
    x[:, 1] = np.arange(10)
    out = corrupt_table(x, "gaussian_noise", 5, feature_std=x.std(axis=0))
    assert np.array_equal(out[:, 0], x[:, 0]) and not np.array_equal(out[:, 1], x[:, 1])


def test_missing_values_are_imputed_with_the_mean():
    x, std, mean = _table(4000)
    for severity in (1, 3, 5):
        p = TABULAR_SEVERITY["missing_values"][severity - 1]
        out = corrupt_table(x, "missing_values", severity, feature_mean=mean)
        assert not np.isnan(out).any()
        changed = out != x
        np.testing.assert_array_equal(out[changed], np.broadcast_to(mean.astype(np.float32), x.shape)[changed])
        assert abs(changed.mean() - p) < 4 * np.sqrt(p * (1 - p) / x.size)


def test_scaling_multiplies_each_row_by_one_plus_or_minus_s():
    x, std, mean = _table(2000)
    for severity in (1, 5):
        s = TABULAR_SEVERITY["scaling"][severity - 1]
        ratio = corrupt_table(x, "scaling", severity).astype(np.float64) / x
        factor = ratio[:, :1]
        np.testing.assert_allclose(ratio, np.broadcast_to(factor, ratio.shape), rtol=1e-5)
        assert np.all(np.isclose(factor, 1 + s, rtol=1e-5) | np.isclose(factor, 1 - s, rtol=1e-5))
        assert abs(np.isclose(factor, 1 + s, rtol=1e-5).mean() - 0.5) < 0.05


def test_quantization_rounds_to_a_grid_around_the_mean():
    x, std, mean = _table(1000)
    q = TABULAR_SEVERITY["quantization"][3]
    out = corrupt_table(x, "quantization", 4, feature_std=std, feature_mean=mean).astype(np.float64)
    steps = (out - mean) / (q * std)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-2)
    assert np.all(np.abs(out - x) <= q * std / 2 * 1.001 + 1e-3 * np.abs(x))


def test_tabular_distortion_grows_with_severity():
    x, std, mean = _table(2000)
    for name in TABLE_NAMES:
        change = [np.mean(np.abs(corrupt_table(x, name, s, feature_std=std, feature_mean=mean).astype(np.float64) - x)
                          / std) for s in range(1, 6)]
        assert all(b > a for a, b in itertools.pairwise(change)), (name, change)


def test_tabular_bad_input():
    x, std, mean = _table(20)
    with pytest.raises(UserError, match="gaussian_noise, missing_values, scaling"):
        corrupt_table(x, "blur", 1)
    with pytest.raises(UserError, match="1..5"):
        corrupt_table(x, "scaling", 0)
    with pytest.raises(UserError, match="feature_std.*whole evaluation set"):
        corrupt_table(x, "gaussian_noise", 1)
    with pytest.raises(UserError, match="feature_mean"):
        corrupt_table(x, "missing_values", 1, feature_std=std)
    with pytest.raises(UserError, match="one finite value per feature"):
        corrupt_table(x, "gaussian_noise", 1, feature_std=std[:2])
    with pytest.raises(UserError, match="non-negative"):
        corrupt_table(x, "gaussian_noise", 1, feature_std=-std)
    with pytest.raises(UserError, match="2-D numeric"):
        corrupt_table(x[0], "scaling", 1)
    with pytest.raises(UserError, match="2-D numeric"):
        corrupt_table(x.tolist(), "scaling", 1)  # type: ignore[arg-type]
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(UserError, match=r"rows \[3\]"):
        corrupt_table(bad, "scaling", 1)
    with pytest.raises(UserError, match="index"):
        corrupt_table(x, "scaling", 1, index=np.arange(3))
