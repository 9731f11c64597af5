"""Performance metrics against scikit-learn, and the check's CIs and findings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax
from sklearn import metrics as skm

from assay.checks.base import CheckContext, EvaluateConfig
from assay.checks.performance import (
    accuracy_from_confusion,
    balanced_accuracy_from_confusion,
    brier_per_sample,
    check_performance,
    confusion_matrix,
    f1_from_confusion,
    macro_f1_from_confusion,
    nll_per_sample,
    precision_recall_from_confusion,
    top_k_correct,
    weighted_f1_from_confusion,
)
from assay.data.dataset import Dataset
from assay.engine.cache import ViewOutput
from assay.engine.run import Outputs


def _random_predictions(seed: int, n: int = 500, c: int = 7, skill: float = 0.6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += skill * 3 * rng.random(n)
    return y, logits.astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 9), st.integers(5, 300))
def test_count_metrics_match_sklearn(seed, c, n):
    y, logits = _random_predictions(seed, n=n, c=c)
    pred = logits.argmax(1)
    cm = confusion_matrix(y, pred, c)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=range(c)))
    assert accuracy_from_confusion(cm) == pytest.approx(skm.accuracy_score(y, pred))
    assert balanced_accuracy_from_confusion(cm) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert macro_f1_from_confusion(cm) == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert weighted_f1_from_confusion(cm) == pytest.approx(skm.f1_score(y, pred, average="weighted", zero_division=0))
    p, r = precision_recall_from_confusion(cm)
    np.testing.assert_allclose(p, skm.precision_score(y, pred, average=None, labels=range(c), zero_division=0))
    np.testing.assert_allclose(r, skm.recall_score(y, pred, average=None, labels=range(c), zero_division=0))
    np.testing.assert_allclose(f1_from_confusion(cm),
                               skm.f1_score(y, pred, average=None, labels=range(c), zero_division=0))


def test_probabilistic_metrics_match_sklearn():
    y, logits = _random_predictions(1, c=6)
    probs = softmax(logits.astype(np.float64), axis=1)
    assert nll_per_sample(logits, y).mean() == pytest.approx(skm.log_loss(y, probs, labels=range(6)), rel=1e-6)
    onehot = np.eye(6)[y]
    # Multiclass Brier as in scikit-learn >= 1.7 (sum over classes, mean over samples).
    assert brier_per_sample(logits, y).mean() == pytest.approx(((probs - onehot) ** 2).sum(1).mean())
    assert brier_per_sample(logits, y).mean() == pytest.approx(skm.brier_score_loss(y, probs, labels=range(6)),
                                                               rel=1e-6)
    top5 = top_k_correct(logits, y, 5).mean()
    assert top5 == pytest.approx(skm.top_k_accuracy_score(y, probs, k=5, labels=range(6)))


def test_top_k_hand_case():
    logits = np.array([[5.0, 4, 3, 2, 1, 0], [0.0, 1, 2, 3, 4, 5]])
    assert top_k_correct(logits, np.array([4, 4]), 5).tolist() == [True, True]
    assert top_k_correct(logits, np.array([5, 0]), 5).tolist() == [False, False]


def _ctx(y, logits, n_boot=500, class_names=None):
    ds = Dataset(x=np.zeros((len(y), 1), np.float32), y=y, ids=np.arange(len(y)), modality="tabular",
                 name="t", source="<t>", class_names=class_names)
    outputs = Outputs(views={"clean": ViewOutput(logits=logits, features=None)})
    return CheckContext(outputs=outputs, dataset=ds, config=EvaluateConfig(n_bootstrap=n_boot, seed=0))


def test_check_performance_values_cis_and_tables():
    y, logits = _random_predictions(3, n=800, c=8)
    section = check_performance(_ctx(y, logits))
    pred = logits.argmax(1)
    m = section.metrics
    assert m["accuracy"].value == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"].value == pytest.approx(skm.f1_score(y, pred, average="macro"))
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top5_accuracy", "nll", "brier"):
        metric = m[name]
        assert metric.ci_low <= metric.value <= metric.ci_high, name
        assert metric.ci_low < metric.ci_high, name
        assert metric.n == 800 and "bootstrap" in metric.method
    # A binomial-ish width: 95% CI of accuracy at n=800 is about +-3.4 points.
    acc = m["accuracy"]
    se = np.sqrt(acc.value * (1 - acc.value) / 800)
    assert (acc.ci_high - acc.ci_low) == pytest.approx(2 * 1.96 * se, rel=0.2)
    rows = section.tables["per_class"]
    assert [r["support"] for r in rows] == np.bincount(y, minlength=8).tolist()
    assert section.plots["confusion_matrix"]["values"] == skm.confusion_matrix(y, pred).tolist()


def test_check_performance_no_top5_for_few_classes_and_determinism():
    y, logits = _random_predictions(4, n=300, c=4)
    a = check_performance(_ctx(y, logits))
    b = check_performance(_ctx(y, logits))
    assert "top5_accuracy" not in a.metrics
    assert a.model_dump() == b.model_dump()


def test_check_performance_flags_weak_and_never_predicted_classes():
    rng = np.random.default_rng(0)
    n, c = 1200, 4
    y = rng.integers(0, c, size=n)
    pred = y.copy()
    weak = (y == 1) & (rng.random(n) < 0.6)  # class 1 recall ~0.4
    pred[weak] = 0
    pred[y == 3] = 2  # class 3 never predicted
    logits = np.eye(c, dtype=np.float32)[pred] * 5
    section = check_performance(_ctx(y, logits, class_names=["a", "b", "c", "d"]))
    messages = " ".join(f.message for f in section.findings)
    assert section.verdict == "warn"
    assert "never predicted" in messages and "d" in messages
    assert "class b is significantly weaker" in messages


def test_perfect_accuracy_gets_exact_interval_not_a_collapsed_one():
    """All 540 right: the bootstrap interval would be [1, 1]; Clopper-Pearson says 0.9932 at worst."""
    from scipy.stats import binomtest

    y = np.arange(540) % 10
    logits = np.eye(10, dtype=np.float32)[y] * 4
    section = check_performance(_ctx(y, logits))
    acc = section.metrics["accuracy"]
    reference = binomtest(540, 540).proportion_ci(confidence_level=0.95, method="exact")
    assert acc.value == 1.0 and acc.ci_high == 1.0
    assert acc.ci_low == pytest.approx(reference.low, rel=1e-9) and acc.ci_low < 0.9935
    assert "Clopper-Pearson" in acc.method
    assert "Clopper-Pearson" in section.metrics["top5_accuracy"].method


def test_clopper_pearson_matches_scipy():
    from scipy.stats import binomtest

    from assay.stats.bootstrap import clopper_pearson

    for k, n in [(0, 10), (3, 10), (10, 10), (97, 100), (1, 1)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
        lo, hi = clopper_pearson(k, n, 0.9)
        assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
