"""The monitor's core on synthetic logs: incremental equals batch (1 chunk or 7), the state survives a restart,
windows by count and by time, insufficient data, late labels, the false-alarm rate on fresh no-drift draws
within the configured FDR, planted shifts detected, the snapshot's JSON, and a state refused when it does not
belong to the reference or settings.

Independent references: scipy (chi2_contingency, ks_2samp bounds, fisher_exact, binom) for the numbers the
windows report; the false-alarm rate against the binomial tail of the configured rate."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from assay.errors import DataError, OptionError
from assay.monitor import LogBatch, Monitor, MonitorSettings, parse_window
from assay.monitor.evaluate import FAMILY_WEIGHTS, family, feature_counts, near_margin
from assay.monitor.state import row_priority
from assay.reference import Reference

C, D = 5, 6
CENTERS = np.eye(C, D) * 2.5


def draw(rng: np.random.Generator, n: int, *, shift: float = 0.0, prior: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, features): Gaussian classes, a linear model; ``shift`` moves every feature."""
    y = rng.choice(C, size=n, p=prior)
    x = CENTERS[y] + rng.normal(0, 1, (n, D)) + shift
    return (x @ CENTERS.T / 2).astype(np.float32), y, x.astype(np.float32)


@pytest.fixture(scope="module")
def reference() -> Reference:
    logits, y, x = draw(np.random.default_rng(0), 4000)
    return Reference.from_arrays(logits, y, x, class_names=[f"c{i}" for i in range(C)])


def frame(logits: np.ndarray, features: np.ndarray | None = None, labels: np.ndarray | None = None, *,
          t0: float = 0.0, step: float = 0.01, prefix: str = "r", label_delay: float = 5.0) -> pd.DataFrame:
    n = len(logits)
    times = t0 + np.arange(n) * step
    return pd.DataFrame({
        "request_id": [f"{prefix}{i}" for i in range(n)], "row": np.zeros(n, dtype=np.int64), "time": times,
        "role": "primary", "logits": list(logits), "features": list(features) if features is not None else None,
        "label": pd.array(labels if labels is not None else [None] * n, dtype="Int64"),
        "label_time": times + label_delay if labels is not None else np.full(n, np.nan)})


def comparable(results: list) -> list[dict]:
    return [r.to_dict() for r in results]


# ------------------------------------------------------------------------------------------ settings


def test_parse_window() -> None:
    assert parse_window("500") == ("count", 500)
    assert parse_window("30s") == ("time", 30)
    assert parse_window("15m") == ("time", 900)
    assert parse_window("1h") == ("time", 3600)
    assert parse_window("2d") == ("time", 172800)
    for bad in ("", "0", "-1", "1.5", "1w", "h", "0s"):
        with pytest.raises(OptionError):
            parse_window(bad)


def test_bad_settings_are_option_errors() -> None:
    for kwargs in ({"fdr": 0}, {"fdr": 1.5}, {"min_window": 0}, {"window_size": 0}, {"window_size": 2.5},
                   {"roles": ("boss",)}, {"threshold_rule": "max"}, {"window_kind": "rows"}):
        with pytest.raises(OptionError):
            MonitorSettings(**kwargs)  # type: ignore[arg-type]


def test_row_priority_is_uniform_and_deterministic() -> None:
    p = row_priority(np.arange(100_000), 3)
    assert np.array_equal(p, row_priority(np.arange(100_000), 3))
    assert not np.array_equal(p, row_priority(np.arange(100_000), 4))
    assert stats.kstest(p, "uniform").pvalue > 0.001


# ------------------------------------------------------------------------------------------ incremental


def _stream(seed: int = 1, n: int = 2600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logits, y, x = draw(rng, n // 2)
    logits2, y2, x2 = draw(rng, n - n // 2, shift=0.5)
    labels = np.where(rng.random(n) < 0.3, np.r_[y, y2], -1)
    f = frame(np.r_[logits, logits2], np.r_[x, x2], None)
    f["label"] = pd.array([None if v < 0 else int(v) for v in labels], dtype="Int64")
    f["label_time"] = np.where(labels >= 0, f["time"] + 3.0, np.nan)
    return f


@pytest.mark.parametrize("window", [("count", 300), ("time", 3.0)])
def test_one_chunk_or_seven_give_identical_windows(reference: Reference, window: tuple) -> None:
    kind, size = window
    s = MonitorSettings(window_kind=kind, window_size=size, min_window=50, sample_size=60, mmd_permutations=50)
    log = _stream()
    whole = Monitor(reference, s)
    whole_results = whole.update(log)
    parts = Monitor(reference, s)
    cuts = np.sort(np.random.default_rng(7).choice(np.arange(1, len(log)), 6, replace=False))
    part_results = []
    for hi in np.r_[cuts, len(log)]:
        part_results += parts.update(log.iloc[: hi])  # a growing log: each update sees rows it already processed
    assert len(whole_results) >= 7
    assert comparable(whole_results) == comparable(part_results)
    assert whole.open is not None and parts.open is not None and whole.open.n == parts.open.n
    assert whole.open_result().to_dict() == parts.open_result().to_dict()  # type: ignore[union-attr]
    for w in whole_results:
        assert whole.realized(w.index) == parts.realized(w.index)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 899), min_size=1, max_size=6, unique=True))
def test_any_chunking_of_the_arrays_gives_identical_windows(reference: Reference, cuts: list[int]) -> None:
    rng = np.random.default_rng(5)
    logits, y, x = draw(rng, 900)
    batch = LogBatch(time=np.arange(900.0), logits=logits, first=np.ones(900, bool), features=x,
                     label=y.astype(np.int64), label_time=np.arange(900.0) + 1)
    s = MonitorSettings(window_size=200, min_window=20, sample_size=30, mmd_permutations=20)
    one = Monitor(reference, s)
    expected = one.update_batch(batch)
    other = Monitor(reference, s)
    got = []
    edges = sorted(cuts)
    for lo, hi in zip([0, *edges], [*edges, 900], strict=True):
        got += other.update_batch(batch.take(slice(lo, hi)))
    assert comparable(expected) == comparable(got)


def test_state_survives_a_restart(reference: Reference, tmp_path) -> None:
    s = MonitorSettings(window_size=300, min_window=50, sample_size=60, mmd_permutations=50)
    log = _stream(seed=3)
    uninterrupted = Monitor(reference, s)
    expected = uninterrupted.update(log)
    first = Monitor(reference, s, state_dir=tmp_path / "state")
    got = first.update(log.iloc[:1111])  # stops mid-window
    assert (tmp_path / "state" / "state.json").exists()
    assert not list((tmp_path / "state").glob("*.tmp"))
    second = Monitor(reference, s, state_dir=tmp_path / "state")  # a new process
    assert second.position == 1111 and second.open is not None and second.open.n == 1111 - 900
    got += second.update(log)
    assert comparable(expected) == comparable(got)
    third = Monitor(reference, s, state_dir=tmp_path / "state")
    assert third.snapshot()["windows"][:-1] == [
        {**w, "open": False} for w in [third._window_dict(r, is_open=False) for r in third.results]]
    assert third.update(log) == []  # nothing new
    assert len(list((tmp_path / "state").glob("state-*.npz"))) == 1  # old generations removed


def test_state_of_another_reference_or_settings_is_refused(reference: Reference, tmp_path) -> None:
    s = MonitorSettings(window_size=300, min_window=50)
    Monitor(reference, s, state_dir=tmp_path).update(_stream().iloc[:400])
    with pytest.raises(OptionError, match="other settings"):
        Monitor(reference, MonitorSettings(window_size=200, min_window=50), state_dir=tmp_path)
    logits, y, x = draw(np.random.default_rng(9), 500)
    other = Reference.from_arrays(logits, y, x, class_names=[f"c{i}" for i in range(C)])
    with pytest.raises(OptionError, match="another reference"):
        Monitor(other, s, state_dir=tmp_path)
    npz = next(tmp_path.glob("state-*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(DataError, match="do not match"):
        Monitor(reference, s, state_dir=tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(DataError):
        Monitor(reference, s, state_dir=tmp_path)


def test_late_labels_reach_their_window(reference: Reference) -> None:
    rng = np.random.default_rng(4)
    logits, y, x = draw(rng, 600)
    s = MonitorSettings(window_size=200, min_window=50)
    mon = Monitor(reference, s)
    log = frame(logits, x, None, step=1.0)
    mon.update(log)
    assert mon.realized(0) is None
    labelled = log.copy()
    labelled.loc[:99, "label"] = y[:100]
    labelled.loc[:99, "label_time"] = 1000.0 + np.arange(100)
    mon.update(labelled)
    got = mon.realized(0)
    assert got is not None and got["n_labelled"] == 100
    truth = (logits[:100].argmax(1) == y[:100])
    assert got["value"] == truth.mean()
    lo, hi = stats.binomtest(int(truth.sum()), 100).proportion_ci(0.95, method="exact")
    assert got["ci"] == pytest.approx([lo, hi])
    delay = 1000.0 + np.arange(100) - np.arange(100)  # label_time - time: 1000 s each
    assert got["label_delay_s_median"] == pytest.approx(float(np.median(delay)), rel=0.5)
    mon.update(labelled)  # the same labels again: not counted twice
    assert mon.realized(0)["n_labelled"] == 100  # type: ignore[index]
    # A label stamped earlier than those already counted (another feedback writer, a client's own clock) still
    # counts, in its own window; the state keeps which rows are counted across a restart.
    labelled.loc[450:459, "label"] = y[450:460]
    labelled.loc[450:459, "label_time"] = 500.0
    mon.update(labelled)
    assert mon.realized(2)["n_labelled"] == 10  # type: ignore[index]
    assert mon.realized(0)["n_labelled"] == 100  # type: ignore[index]


def test_labels_are_counted_once_across_a_restart(reference: Reference, tmp_path) -> None:
    logits, y, x = draw(np.random.default_rng(14), 400)
    s = MonitorSettings(window_size=200, min_window=50)
    log = frame(logits, x, y)
    Monitor(reference, s, state_dir=tmp_path).update(log.iloc[:250])
    again = Monitor(reference, s, state_dir=tmp_path)
    again.update(log)  # rows 0..249 and their labels again, then 150 new rows
    assert again.realized(0)["n_labelled"] == 200 and again.realized(1)["n_labelled"] == 200  # type: ignore[index]


def test_insufficient_data_raises_no_alarm(reference: Reference) -> None:
    rng = np.random.default_rng(2)
    logits, _, x = draw(rng, 40, shift=3.0)
    mon = Monitor(reference, MonitorSettings(window_size=40, min_window=50))
    (result,) = mon.update(frame(logits, x))
    assert result.insufficient and not result.alarms and not result.tests


def test_time_windows_follow_log_time(reference: Reference) -> None:
    rng = np.random.default_rng(6)
    logits, _, x = draw(rng, 1000)
    log = frame(logits, x, step=0.05)  # 50 s of log
    mon = Monitor(reference, MonitorSettings(window_kind="time", window_size=10, min_window=10))
    closed = mon.update(log)
    assert [w.n for w in closed] == [200, 200, 200, 200]
    assert all(9.9 <= w.end - w.start < 10 for w in closed)  # type: ignore[operator]
    assert mon.flush(now=45.0) is None and mon.flush(now=50.0) is not None


# ------------------------------------------------------------------------------------------ statistics


def test_window_numbers_match_scipy(reference: Reference) -> None:
    rng = np.random.default_rng(8)
    logits, _, x = draw(rng, 500)
    mon = Monitor(reference, MonitorSettings(window_size=500, min_window=50, small_window=10_000))
    (w,) = mon.update(frame(logits, x))
    tests = {t.name: t for t in w.tests}
    prediction = logits.argmax(1)
    table = np.array([reference.prediction_counts, np.bincount(prediction, minlength=C)])
    chi2 = stats.chi2_contingency(table[:, table.sum(0) > 0], correction=False)
    assert tests["class_mix"].statistic == pytest.approx(chi2.statistic)
    assert tests["class_mix"].p_value == pytest.approx(chi2.pvalue)
    confidence = np.exp(logits - logits.max(1, keepdims=True))
    confidence = (confidence / confidence.sum(1, keepdims=True)).max(1)
    atc = int((confidence > reference.atc_threshold_maxconf).sum())
    assert w.estimated_accuracy["value"] == atc / 500  # type: ignore[index]
    ref_above = int((reference.confidence.astype(np.float64) > reference.atc_threshold_maxconf).sum())
    expected_p = stats.fisher_exact([[atc, 500 - atc], [ref_above, reference.n - ref_above]], alternative="less").pvalue
    assert tests["estimated_accuracy"].p_value == pytest.approx(expected_p)
    # The p-values went through BH per family, each at its share of the FDR (statsmodels' BH as reference).
    from statsmodels.stats.multitest import multipletests

    for fam, weight in FAMILY_WEIGHTS.items():
        members = [t for t in w.tests if t.p_value is not None and family(t.name) == fam]
        reject, adjusted, _, _ = multipletests([t.p_value for t in members], alpha=0.05 * weight, method="fdr_bh")
        assert [t.alarm for t in members] == reject.tolist()
        assert [t.p_adjusted for t in members] == pytest.approx(np.minimum(adjusted / weight, 1).tolist())
    assert {t.name for t in w.tests} >= {"confidence_ks", "entropy_ks", "ood_rate", "embedding_mmd",
                                         *(f"embedding[{d}]" for d in range(D))}


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 400), st.sampled_from([np.float32, np.float64]))
def test_fast_feature_counts_equal_the_reference_histogram(reference: Reference, seed: int, n: int, dtype) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, D)) * rng.uniform(0.5, 2) + rng.normal()).astype(dtype)
    x[: n // 3] = np.round(x[: n // 3], 1)  # ties and values on the edges
    edges = reference.features.edges  # type: ignore[union-attr]
    x[0] = np.where(np.isfinite(edges[:, 3]), edges[:, 3], 0)
    assert np.array_equal(feature_counts(reference.features, x), reference.features.histogram(x))  # type: ignore[arg-type]


def test_near_margin_against_sorted_probabilities() -> None:
    from scipy.special import softmax

    logits = np.random.default_rng(3).normal(size=(5000, 7)) * 3
    top = np.sort(softmax(logits, axis=1), axis=1)
    gap = top[:, -1] - top[:, -2]
    keep = np.abs(gap - 0.1) > 1e-12  # rounding may decide rows exactly at the margin either way
    assert np.array_equal(near_margin(logits, 0.1)[keep], (gap < 0.1)[keep])
    assert np.array_equal(near_margin(logits, 0.1, top[:, -1])[keep], (gap < 0.1)[keep])


def test_false_alarms_on_fresh_no_drift_windows_within_the_fdr(reference: Reference) -> None:
    """200 windows of fresh draws from the reference's own distribution: windows with any alarm at most what
    the configured rate allows (the 99.9th percentile of Binomial(200, fdr))."""
    fdr = 0.05
    rng = np.random.default_rng(11)
    logits, _, x = draw(rng, 200 * 150)
    mon = Monitor(reference, MonitorSettings(window_size=150, min_window=100, fdr=fdr, sample_size=50,
                                             mmd_permutations=100))
    closed = mon.update_batch(LogBatch(time=np.arange(len(logits), dtype=float), logits=logits,
                                       first=np.ones(len(logits), bool), features=x))
    assert len(closed) == 200
    alarmed = sum(bool(w.alarms) for w in closed)
    print(f"false alarms: {alarmed} of 200 windows (fdr {fdr})")
    assert alarmed <= stats.binom.ppf(0.999, 200, fdr), alarmed


def test_planted_shifts_are_detected(reference: Reference) -> None:
    rng = np.random.default_rng(12)
    s = MonitorSettings(window_size=300, min_window=100, sample_size=80, mmd_permutations=100)
    for kind, kwargs in (("feature shift", {"shift": 0.6}), ("class prior", {"prior": [0.6, 0.1, 0.1, 0.1, 0.1]})):
        mon = Monitor(reference, s)
        logits, _, x = draw(rng, 900, **kwargs)  # type: ignore[arg-type]
        closed = mon.update(frame(logits, x, prefix=kind))
        assert all(w.alarms for w in closed), kind
    mon = Monitor(reference, s)
    logits, _, x = draw(rng, 300, prior=[0.6, 0.1, 0.1, 0.1, 0.1])
    (w,) = mon.update(frame(logits, x))
    assert any(a.startswith("class_mix") for a in w.alarms)


def test_snapshot_is_plain_json_with_the_agreed_keys(reference: Reference) -> None:
    mon = Monitor(reference, MonitorSettings(window_size=300, min_window=50, sample_size=40, mmd_permutations=20),
                  info={"model": {"name": "m", "version": "3", "alias": "production"}, "source": "bundle"})
    mon.update(_stream())
    snap = json.loads(json.dumps(mon.snapshot(), allow_nan=False))
    assert snap["schema"] == "assay.monitor.snapshot/1"
    assert set(snap) >= {"generated_at", "model", "reference", "window", "threshold_method", "traffic", "windows",
                         "rollout", "alias_history", "events"}
    assert snap["model"] == {"name": "m", "version": "3", "alias": "production"}
    assert snap["window"]["kind"] == "count" and snap["window"]["size"] == 300
    w = snap["windows"][0]
    assert set(w) >= {"index", "start", "end", "n", "insufficient", "estimated_accuracy", "doc_accuracy",
                      "realized_accuracy", "ood_rate", "tests", "alarms"}
    assert w["estimated_accuracy"]["method"] == "ATC" and len(w["estimated_accuracy"]["ci"]) == 2
    assert set(w["tests"][0]) == {"name", "statistic", "threshold", "p_value", "p_adjusted", "method", "alarm"}
    assert snap["windows"][-1]["open"] is True
    assert len(snap["traffic"]) == len(snap["windows"])
    assert sum(t["rows"] for t in snap["traffic"]) == len(_stream())
    assert snap["windows"][4]["alarms"], "the shifted half of the stream raises alarms"
    assert any(e["kind"] == "alarm" for e in snap["events"])


def test_doc_interval_covers_the_estimate(reference: Reference) -> None:
    logits, _, x = draw(np.random.default_rng(13), 400)
    (w,) = Monitor(reference, MonitorSettings(window_size=400)).update(frame(logits, x))
    doc = w.doc_accuracy
    assert doc is not None and doc["ci"][0] < doc["value"] < doc["ci"][1]
    assert reference.accuracy is not None
    expected = reference.accuracy - (reference.confidence.astype(np.float64).mean() - _mean_confidence(logits))
    assert math.isclose(doc["value"], expected, abs_tol=1e-6)


def _mean_confidence(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    return float((p / p.sum(1, keepdims=True)).max(1).mean())


def test_large_windows_judge_the_class_mix_by_js_against_chunk_thresholds() -> None:
    """Windows of >= small_window rows: the JS distance against the 0.99 conformal quantile of reference chunks
    of the window's size (the reference must hold 99 of them); no-drift windows stay under it, a prior shift
    crosses it; with too few chunks the chi-squared p-value decides."""
    rng = np.random.default_rng(15)
    logits, y, _ = draw(rng, 250_000)
    big = Reference.from_arrays(logits, y, class_names=[f"c{i}" for i in range(C)])
    s = MonitorSettings(window_size=2500, min_window=100, small_window=2000)
    fresh, _, _ = draw(rng, 2500 * 20)
    shifted, _, _ = draw(rng, 2500, prior=np.array([0.3, 0.175, 0.175, 0.175, 0.175]))
    closed = Monitor(big, s).update(frame(np.r_[fresh, shifted]))
    mix = [next(t for t in w.tests if t.name == "class_mix") for w in closed]
    assert all(t.p_value is None and t.threshold is not None and "quantile 0.99" in t.method for t in mix)
    chunks = big.recompute_chunks(chunk_size=2500, n_chunks=1000)
    assert chunks is not None and chunks.count == 100
    assert mix[0].threshold == pytest.approx(chunks.threshold("prediction_js", quantile=0.99))
    prediction = fresh[:2500].argmax(1)
    expected = distance.jensenshannon(big.prediction_counts, np.bincount(prediction, minlength=C), base=2)
    assert mix[0].statistic == pytest.approx(expected)
    assert sum(t.alarm for t in mix[:20]) <= 2 and mix[20].alarm
    small = Reference.from_arrays(logits[:50_000], y[:50_000], class_names=[f"c{i}" for i in range(C)])
    (w,) = Monitor(small, s).update(frame(fresh[:2500]))
    t = next(t for t in w.tests if t.name == "class_mix")
    assert t.p_value is not None and t.threshold is None  # 20 chunks: too few for the 0.99 quantile


def test_an_unseen_category_of_a_tabular_feature_is_its_own_bin() -> None:
    rng = np.random.default_rng(16)
    n = 3000
    x = np.c_[rng.normal(size=n), rng.integers(0, 3, n)].astype(np.float32)  # one numeric, one categorical column
    logits = np.c_[x[:, 0], -x[:, 0], x[:, 1] - 1].astype(np.float32)
    ref = Reference.from_arrays(logits, logits.argmax(1), inputs=x, class_names=["a", "b", "c"])
    assert ref.features is not None and ref.features.space == "inputs"
    assert ref.features.discrete.tolist() == [False, True]
    live = np.c_[rng.normal(size=400), rng.integers(0, 3, 400)].astype(np.float32)
    live[:40, 1] = 7  # a category the reference never held
    live_logits = np.c_[live[:, 0], -live[:, 0], live[:, 1] - 1].astype(np.float32)
    mon = Monitor(ref, MonitorSettings(window_size=400, min_window=100))
    batch = LogBatch(time=np.arange(400.0), logits=live_logits, first=np.ones(400, bool), features=live)
    (w,) = mon.update_batch(batch)
    test = next(t for t in w.tests if t.name == "input[1]")
    ref_counts = np.bincount(x[:, 1].astype(int), minlength=3)
    cur_counts = np.bincount(live[40:, 1].astype(int), minlength=3)
    table = np.array([[*ref_counts, 0], [*cur_counts, 40]])
    assert test.statistic == pytest.approx(stats.chi2_contingency(table, correction=False).statistic)
    assert test.alarm
    assert not next(t for t in w.tests if t.name == "input[0]").alarm


def test_save_every_s_saves_at_window_close_or_when_due(reference: Reference, tmp_path) -> None:
    logits, _, x = draw(np.random.default_rng(17), 500)
    log = frame(logits, x)
    mon = Monitor(reference, MonitorSettings(window_size=300, min_window=50), state_dir=tmp_path, save_every_s=3600)

    def generation() -> int:
        return json.loads((tmp_path / "state.json").read_text())["generation"]

    mon.update(log.iloc[:100])  # first update: due
    assert generation() == 1
    mon.update(log.iloc[:200])  # not due, no window closed: not saved
    assert generation() == 1
    mon.update(log.iloc[:350])  # window 0 closed: saved
    assert generation() == 2
    mon.save()
    assert Monitor(reference, mon.settings, state_dir=tmp_path).position == 350


def test_late_labels_of_windows_no_longer_kept_are_ignored(reference: Reference) -> None:
    logits, y, x = draw(np.random.default_rng(18), 1000)
    mon = Monitor(reference, MonitorSettings(window_size=200, min_window=50, keep_windows=2))
    log = frame(logits, x, step=1.0)
    mon.update(log)
    assert [r.index for r in mon.results] == [3, 4]
    labelled = log.copy()
    labelled["label"] = pd.array(y, dtype="Int64")
    labelled["label_time"] = 5000.0
    mon.update(labelled)
    assert mon.labels.keys() == {3, 4} and mon.realized(3)["n_labelled"] == 200  # type: ignore[index]
