"""The monitor on the demo's digits CNN (trained here for 3 epochs) and the project's own image corruptions:
false alarms per 100 windows on no-drift replays (reference rows resampled) within the configured rate, and
detection delay, in windows, on planted shifts: a contrast severity ramp (Gaussian noise barely moves this CNN:
0.944 -> 0.941 accuracy at severity 5), a class-prior shift and a class the reference never saw. Delays are
printed (pytest -s) and bounded; measured: 1 false alarm per 100 windows, every shift caught in its first window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from assay.corruptions.image import corrupt_images
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.models.loader import load_model
from assay.monitor import Monitor, MonitorSettings, WindowResult
from assay.reference import Reference

pytestmark = pytest.mark.slow

WINDOW = 150
FDR = 0.05
SETTINGS = MonitorSettings(window_size=WINDOW, min_window=100, fdr=FDR, sample_size=100, mmd_permutations=100)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    """(model, test set, clean logits, clean features)."""
    train, test = load_data("digits:train"), load_data("digits:test")
    net = train_digits_cnn(train.x, train.y, epochs=3, seed=0, progress=False)
    path = tmp_path_factory.mktemp("digits") / "digits.pt"
    torch.save(net.state_dict(), path)
    model = load_model("assay.demo:make_digits_cnn", weights=path, threads=1, sample=test.x[:2])
    logits, features = model.forward(test.x, want_features=True)
    return model, test, logits, features


def _frame(logits: np.ndarray, features: np.ndarray, start: int) -> pd.DataFrame:
    n = len(logits)
    return pd.DataFrame({"request_id": [f"r{start + i}" for i in range(n)], "row": 0,
                         "time": (start + np.arange(n)) * 0.1, "role": "primary", "logits": list(logits),
                         "features": list(features)})


def _replay(monitor: Monitor, windows: list[tuple[np.ndarray, np.ndarray]]) -> list[WindowResult]:
    """Feed whole windows (logits, features) one after the other; the closed windows."""
    closed: list[WindowResult] = []
    position = 0
    for logits, features in windows:
        closed += monitor.update(_frame(logits, features, position))
        position += len(logits)
    return closed


def _resampled(rng: np.random.Generator, logits: np.ndarray, features: np.ndarray, rows: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    pick = rng.choice(np.arange(len(logits)) if rows is None else rows, WINDOW, replace=True)
    return logits[pick], features[pick]


def _delay(closed: list[WindowResult], onset: int) -> int | None:
    """Windows from the shift's first window to the first alarm (0: the first shifted window alarms)."""
    return next((w.index - onset for w in closed if w.index >= onset and w.alarms), None)


def test_no_drift_replays_stay_within_the_false_alarm_rate(digits) -> None:
    _, test, logits, features = digits
    reference = Reference.from_arrays(logits, test.y, features, class_names=test.class_names)
    rng = np.random.default_rng(0)
    closed = _replay(Monitor(reference, SETTINGS), [_resampled(rng, logits, features) for _ in range(100)])
    assert len(closed) == 100
    alarmed = sum(bool(w.alarms) for w in closed)
    print(f"\nno-drift replay: {alarmed} false alarms per 100 windows of {WINDOW} (configured rate {FDR})")
    assert alarmed <= stats.binom.ppf(0.99, 100, FDR)


def test_corruption_severity_ramp_is_detected_and_atc_follows_accuracy(digits) -> None:
    model, test, logits, features = digits
    reference = Reference.from_arrays(logits, test.y, features, class_names=test.class_names)
    rng = np.random.default_rng(1)
    windows = [_resampled(rng, logits, features) for _ in range(3)]
    truth = []
    for severity in range(1, 6):
        corrupted = corrupt_images(test.x, "contrast", severity, seed=0)
        c_logits, c_features = model.forward(corrupted, want_features=True)
        truth.append(float((c_logits.argmax(1) == test.y).mean()))
        windows += [_resampled(rng, c_logits, c_features) for _ in range(2)]
    closed = _replay(Monitor(reference, SETTINGS), windows)
    delay = _delay(closed, onset=3)
    print(f"\ncontrast ramp (2 windows per severity 1..5): first alarm {delay} windows after onset; true "
          f"accuracy by severity {np.round(truth, 3).tolist()}")
    assert not any(w.alarms for w in closed[:3])
    assert delay is not None and delay <= 1, "detected while still at severity 1"
    # The label-free estimate falls with severity as the true accuracy does.
    atc = [np.mean([w.estimated_accuracy["value"] for w in closed[3 + 2 * k: 5 + 2 * k]])  # type: ignore[index]
           for k in range(5)]
    assert stats.spearmanr(atc, truth).statistic > 0.8
    assert atc[-1] < closed[0].estimated_accuracy["value"] - 0.05  # type: ignore[index]


def test_class_prior_shift_is_detected_in_its_first_window(digits) -> None:
    _, test, logits, features = digits
    reference = Reference.from_arrays(logits, test.y, features, class_names=test.class_names)
    rng = np.random.default_rng(2)
    windows = [_resampled(rng, logits, features) for _ in range(3)]
    zeros, others = np.flatnonzero(test.y == 0), np.flatnonzero(test.y != 0)
    for _ in range(3):  # half the traffic is now class 0 (about a tenth in the reference)
        pick = np.r_[rng.choice(zeros, WINDOW // 2), rng.choice(others, WINDOW - WINDOW // 2)]
        windows.append((logits[pick], features[pick]))
    closed = _replay(Monitor(reference, SETTINGS), windows)
    delay = _delay(closed, onset=3)
    print(f"\nclass-prior shift: first alarm {delay} windows after onset")
    assert delay == 0
    assert any(a.startswith("class_mix") for a in closed[3].alarms)


def test_an_unseen_class_is_detected_in_its_first_window(digits) -> None:
    _, test, logits, features = digits
    seen = np.flatnonzero(test.y != 9)
    reference = Reference.from_arrays(logits[seen], test.y[seen], features[seen], class_names=test.class_names)
    rng = np.random.default_rng(3)
    windows = [_resampled(rng, logits, features, seen) for _ in range(3)]
    nines = np.flatnonzero(test.y == 9)
    for _ in range(3):  # 30% of the traffic is a class the reference never held
        pick = np.r_[rng.choice(nines, 45), rng.choice(seen, WINDOW - 45)]
        windows.append((logits[pick], features[pick]))
    closed = _replay(Monitor(reference, SETTINGS), windows)
    delay = _delay(closed, onset=3)
    print(f"\nunseen class: first alarm {delay} windows after onset; alarms {closed[3].alarms[:3]}")
    assert not any(w.alarms for w in closed[:3])
    assert delay == 0
