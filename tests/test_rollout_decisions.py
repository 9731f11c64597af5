"""Rollout decisions (src/assay/monitor/decisions.py) by simulation: a challenger planted worse is stopped within a
bounded number of requests, an equal one is (almost) never stopped, realized differences and negative flips equal
a hand count, the canary's unpaired interval covers the true difference, and the production floor's restarted
sequence rolls back after a planted drop but (almost) never on a stream that stays above the floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.errors import OptionError
from assay.monitor.decisions import RolloutSettings, RolloutTracker, epoch_alpha

THRESHOLD = 0.5


def _confidences(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Top-label confidences whose share above THRESHOLD is ``rate`` (the ATC-estimated accuracy)."""
    above = rng.random(n) < rate
    return np.where(above, rng.uniform(0.55, 1.0, n), rng.uniform(0.1, 0.45, n))


def _shadow_run(seed: int, champion: float, challenger: float, n: int, batch: int = 50) -> tuple[str, int]:
    """Stream n paired requests; the decision and the request count at which it was first not undecided."""
    rng = np.random.default_rng(seed)
    tracker = RolloutTracker(mode="shadow", champion_threshold=THRESHOLD, challenger_threshold=THRESHOLD,
                             settings=RolloutSettings(alpha=0.05, margin=0.05))
    for start in range(0, n, batch):
        cp, cc = _confidences(rng, batch, champion), _confidences(rng, batch, challenger)
        for i in range(batch):
            rid = f"r{start + i}"
            tracker.observe("primary", rid, np.array([1]), cp[i:i + 1])
            tracker.observe("shadow", rid, np.array([1]), cc[i:i + 1])
        tracker.flush()
        decision = tracker.challenger_decision()["decision"]
        if decision == "worse":
            return decision, start + batch
    return tracker.challenger_decision()["decision"], n


def test_a_worse_shadow_challenger_is_stopped_and_an_equal_one_is_not() -> None:
    stopped_at = [_shadow_run(seed, 0.9, 0.75, 4000) for seed in range(10)]
    assert all(decision == "worse" for decision, _ in stopped_at)
    assert max(n for _, n in stopped_at) <= 2000  # bounded: a 15-point loss is caught within 2,000 requests
    equal = [_shadow_run(100 + seed, 0.9, 0.9, 4000)[0] for seed in range(20)]
    assert equal.count("worse") <= 2  # alpha = 0.05 over the whole stream, checked after every batch
    assert equal.count("non_inferior") >= 15  # at margin 0.05, 4,000 pairs settle it


def test_realized_difference_and_negative_flips_equal_a_hand_count() -> None:
    tracker = RolloutTracker(mode="shadow", settings=RolloutSettings(max_negative_flip_rate=0.5))
    # (champion top1, challenger top1, label): ok/ok, ok/wrong (negative flip), wrong/ok, wrong/wrong
    cases = [(1, 1, 1), (2, 0, 2), (0, 3, 3), (0, 1, 2)]
    for i, (p, c, _) in enumerate(cases):
        tracker.observe("primary", f"q{i}", np.array([p]), np.array([0.9]))
        tracker.observe("shadow", f"q{i}", np.array([c]), np.array([0.9]))
    tracker.flush()
    assert tracker.challenger_decision()["realized"] is None  # no label yet, no ATC thresholds: nothing to say
    for i, (_, _, y) in enumerate(cases):
        tracker.label(f"q{i}", 0, y)
    tracker.label("unknown-request", 0, 1)  # a label for a row never seen is ignored
    tracker.flush()
    decision = tracker.challenger_decision()
    assert decision["realized"]["value"] == pytest.approx((0 - 1 + 1 + 0) / 4)
    assert decision["negative_flips"]["value"] == pytest.approx(1 / 4)
    assert decision["realized"]["n"] == 4 and decision["estimated"] is None
    lo, hi = decision["realized"]["ci"]
    assert -1 <= lo <= 0 <= hi <= 1


def test_canary_interval_covers_the_true_difference_and_stops_a_bad_arm() -> None:
    rng = np.random.default_rng(7)
    tracker = RolloutTracker(mode="canary", champion_threshold=THRESHOLD, challenger_threshold=THRESHOLD)
    for k in range(60):
        role = "canary" if k % 5 == 0 else "primary"  # a 20% canary
        rate = 0.6 if role == "canary" else 0.9
        tracker.observe(role, f"c{k}", np.zeros(50, int), _confidences(rng, 50, rate))
        tracker.flush()
    decision = tracker.challenger_decision()
    lo, hi = decision["estimated"]["ci"]
    assert lo <= -0.3 <= hi
    assert decision["decision"] == "worse"
    assert tracker.summary()["difference"]["kind"] == "estimated"


def _floor_run(seed: int, before: float, after: float, change_at: int, n: int) -> int | None:
    rng = np.random.default_rng(seed)
    tracker = RolloutTracker(mode="none", champion_threshold=THRESHOLD,
                             settings=RolloutSettings(floor=0.85, epoch=500))
    for start in range(0, n, 100):
        rate = before if start < change_at else after
        tracker.observe("primary", f"p{start}", np.zeros(100, int), _confidences(rng, 100, rate))
        tracker.flush()
        if tracker.floor_breach() is not None:
            return start + 100
    return None


def test_floor_rolls_back_after_a_planted_drop_and_not_on_a_steady_stream() -> None:
    detected = [_floor_run(seed, 0.93, 0.6, 5000, 12_000) for seed in range(10)]
    assert all(d is not None and 5000 < d <= 5000 + 1500 for d in detected), detected  # within ~3 epochs
    steady = [_floor_run(50 + seed, 0.93, 0.93, 0, 12_000) for seed in range(20)]
    assert sum(d is not None for d in steady) <= 1


def test_epoch_alphas_sum_to_alpha_and_settings_are_checked() -> None:
    assert sum(epoch_alpha(0.05, k) for k in range(1, 200_000)) == pytest.approx(0.05, rel=1e-4)
    assert epoch_alpha(0.05, 1) == pytest.approx(0.05 * 6 / math.pi**2)
    for bad in ({"alpha": 0}, {"margin": -0.1}, {"floor": 1.5}, {"epoch": 3}, {"max_negative_flip_rate": 0}):
        with pytest.raises(OptionError):
            RolloutSettings(**bad)
    with pytest.raises(OptionError):
        RolloutTracker(mode="blue-green")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40),
       st.integers(1, 7))
def test_batching_of_flushes_does_not_change_the_result(cases: list[tuple[int, int, int]], every: int) -> None:
    """Flushing after every k observations or once at the end gives the same estimates (the order is kept); the
    intervals of the more frequent flushes lie inside the others (each flush intersects a sequence with its earlier
    intervals, which can only tighten it: both are valid confidence sequences)."""
    def run(flush_every: int) -> dict:
        tracker = RolloutTracker(mode="shadow", champion_threshold=0.5, challenger_threshold=0.5)
        for i, (p, c, y) in enumerate(cases):
            tracker.observe("primary", f"h{i}", np.array([p]), np.array([0.3 + 0.1 * p]))
            tracker.observe("shadow", f"h{i}", np.array([c]), np.array([0.3 + 0.1 * c]))
            tracker.label(f"h{i}", 0, y)
            if (i + 1) % flush_every == 0:
                tracker.flush()
        tracker.flush()
        return tracker.challenger_decision()

    often, once = run(every), run(len(cases) + 1)
    for key in ("estimated", "realized", "negative_flips"):
        assert often[key]["value"] == once[key]["value"] and often[key]["n"] == once[key]["n"]
        (lo_often, hi_often), (lo_once, hi_once) = often[key]["ci"], once[key]["ci"]
        assert lo_once - 1e-12 <= lo_often <= hi_often <= hi_once + 1e-12
    if often["decision"] != once["decision"]:  # a tighter interval may decide sooner, never the other way round
        assert once["decision"] == "undecided"
