"""Slice labels coded by hashing equal numpy's sort of their strings, for every kind of column."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.checks.slice_metrics import _factorize_as_str, slice_table, worst_slice_gap


def _reference(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names, codes = np.unique(values.astype(str), return_inverse=True)
    return names, codes.ravel()


def _assert_same(values: np.ndarray) -> None:
    names, codes = _factorize_as_str(values)
    ref_names, ref_codes = _reference(values)
    np.testing.assert_array_equal(names, ref_names)
    np.testing.assert_array_equal(codes, ref_codes)


floats = st.sampled_from([0.0, -0.0, 1.0, 1.5, np.nan, -np.nan, np.inf, -np.inf, 1e-300, 0.1 + 0.2, 0.3])


@settings(max_examples=150, deadline=None)
@given(st.lists(floats, min_size=1, max_size=30), st.sampled_from([np.float16, np.float32, np.float64]))
def test_floats_incl_signed_zero_and_nan(values, dtype):
    _assert_same(np.array(values, dtype=dtype))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-12, 12), min_size=1, max_size=40), st.sampled_from([np.int8, np.int64, np.uint16, bool]))
def test_integers_and_bools_sort_as_strings(values, dtype):
    _assert_same(np.abs(np.array(values)).astype(dtype) if dtype in (np.uint16, bool) else np.array(values, dtype))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ab\u00e9 1", max_size=4), min_size=1, max_size=30))
def test_strings_and_bytes(values):
    _assert_same(np.array(values, dtype=str))
    _assert_same(np.array([v.replace("\u00e9", "e").encode() for v in values], dtype=bytes))  # ASCII only


def test_mixed_objects_merge_by_their_string():
    # 1, "1" and np.int64(1) are one slice "1"; 1.0 and True are others; None is "None".
    values = np.array([1, "1", 1.0, True, None, np.int64(1), "b", 2.5, np.nan, float("nan")], dtype=object)
    _assert_same(values)
    names, codes = _factorize_as_str(values)
    assert list(names[codes[:4]]) == ["1", "1", "1.0", "True"]
    _assert_same(np.array(["2024-01-02", "2024-01-01", "2024-01-02"], dtype="datetime64[D]"))


@pytest.mark.parametrize("groups", [np.arange(600) % 7, (np.arange(600) % 7).astype(str),
                                    (np.arange(600) % 7).astype(object)])
def test_slice_results_do_not_depend_on_the_label_dtype(groups):
    """Slices 0..6 as ints, strings or objects: the same rows, names sorted as strings."""
    rng = np.random.default_rng(0)
    correct = rng.random(600) < np.where(groups.astype(int) == 3, 0.5, 0.9)
    rows = slice_table(correct, groups)
    assert [r.slice for r in rows] == [str(i) for i in range(7)]
    for r in rows:
        in_slice = groups.astype(int) == int(r.slice)
        assert (r.n, r.n_correct) == (in_slice.sum(), correct[in_slice].sum())
    gap = worst_slice_gap(correct, groups, n_bootstrap=200)
    assert gap.worst_slice == "3"
    assert gap == worst_slice_gap(correct, groups.astype(str), n_bootstrap=200)
