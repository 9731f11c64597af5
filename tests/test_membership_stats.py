"""stats/membership.py: attack scores against hand-computed cases, ROC statistics against scikit-learn, hypothesis
properties, offline LiRA on a synthetic case whose members are known, and IBM ART's rule-based attack."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from assay.errors import OptionError
from assay.stats import membership as mia

# Scores rounded to one decimal, so ties between members and non-members are common.
scores = st.lists(st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 1)), min_size=1, max_size=60)


def _sklearn_tpr_at(members, nonmembers, f):
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    # drop_intermediate=False: sklearn otherwise drops collinear corners, which can be the best point below f
    fpr, tpr, _ = roc_curve(y, np.r_[members, nonmembers], drop_intermediate=False)
    return tpr[fpr <= f + 1e-12].max()


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_auroc_and_tpr_at_fpr_match_sklearn(members, nonmembers):
    roc = mia.membership_roc(members, nonmembers, fprs=(0.01, 0.1, 0.5), n_resamples=0, min_false_positives=1)
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    if len(set(y)) == 2:
        assert roc.auroc.value == pytest.approx(roc_auc_score(y, np.r_[members, nonmembers]), abs=1e-12)
    for f in (0.01, 0.1, 0.5):
        t = roc.tpr_at[f]
        if len(nonmembers) >= 1 / f:
            assert t.value == pytest.approx(_sklearn_tpr_at(members, nonmembers, f), abs=1e-12)
        else:
            assert t.value is None and t.needed == mia.required_nonmembers(f, 1)


def test_hand_case():
    # members 4, 3, 1 and non-members 2, 0: 5 of 6 pairs ordered, AUROC 5/6; at FPR 0.5 all three members are
    # found (threshold 1); with 2 non-members and one expected false positive, FPR 0.4 is not supported.
    roc = mia.membership_roc([4, 3, 1], [2, 0], fprs=(0.4, 0.5), n_resamples=0, min_false_positives=1)
    assert roc.auroc.value == pytest.approx(5 / 6)
    assert roc.tpr_at[0.5].value == pytest.approx(1.0) and roc.tpr_at[0.5].threshold == 1
    assert roc.tpr_at[0.4].value is None and roc.tpr_at[0.4].needed == 3
    fpr, tpr = mia.roc_curve_points([4, 3, 1], [2, 0])
    assert fpr.tolist() == [0, 0, 0, 0.5, 0.5, 1.0] and tpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1])


@settings(max_examples=40, deadline=None)
@given(scores, scores)
def test_auroc_properties(members, nonmembers):
    m, n = np.array(members), np.array(nonmembers)
    a = mia.membership_roc(m, n, n_resamples=0).auroc.value
    assert 0.0 <= a <= 1.0
    # Strictly increasing transforms keep the ranking, so the AUROC.
    for transform in (np.exp, lambda v: v ** 3 + v, np.arctan):
        assert mia.membership_roc(transform(m), transform(n), n_resamples=0).auroc.value == pytest.approx(a, abs=1e-12)
    # Swapping the roles of members and non-members mirrors it.
    assert mia.membership_roc(n, m, n_resamples=0).auroc.value == pytest.approx(1 - a, abs=1e-12)


def test_bootstrap_interval_covers_and_is_reproducible():
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.5, 1, 1500), rng.normal(0, 1, 1500)
    a = mia.membership_roc(m, n, n_resamples=300, seed=3)
    b = mia.membership_roc(m, n, n_resamples=300, seed=3)
    assert a.auroc.ci_low == b.auroc.ci_low and a.tpr_at[0.01].ci_high == b.tpr_at[0.01].ci_high
    assert a.auroc.ci_low < a.auroc.value < a.auroc.ci_high
    assert a.auroc.ci_low < norm.cdf(0.5 / np.sqrt(2)) < a.auroc.ci_high  # the true AUROC of N(0.5,1) vs N(0,1)
    assert a.tpr_at[0.001].value is None and a.tpr_at[0.001].needed == 10_000
    assert "stratified bootstrap" in a.tpr_at[0.01].method


def test_collapsed_tpr_interval_falls_back_to_clopper_pearson():
    # Every member scores below every non-member: TPR 0 at 1% FPR in every resample.
    roc = mia.membership_roc(np.zeros(1000), np.ones(1000), n_resamples=100)
    t = roc.tpr_at[0.01]
    assert t.value == 0 and t.ci_low == 0 and t.ci_high == pytest.approx(1 - 0.025 ** (1 / 1000))
    assert "Clopper-Pearson" in t.method


def test_required_nonmembers():
    assert mia.required_nonmembers(0.01) == 1000
    assert mia.required_nonmembers(0.001) == 10_000
    assert mia.required_nonmembers(0.001, 3) == 3000


def test_modified_entropy_hand_case():
    # p = (0.7, 0.2, 0.1), true class 0: Mentr = -(1-0.7) log 0.7 - 0.2 log 0.8 - 0.1 log 0.9 (Song & Mittal eq. 4).
    logits = np.log([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]) + 3.0
    want0 = -0.3 * np.log(0.7) - 0.2 * np.log(0.8) - 0.1 * np.log(0.9)
    # true class 1 (a wrong prediction): -(1-0.2) log 0.2 - 0.7 log 0.3 - 0.1 log 0.9
    want1 = -0.8 * np.log(0.2) - 0.7 * np.log(0.3) - 0.1 * np.log(0.9)
    assert mia.modified_entropy(logits, np.array([0, 1])) == pytest.approx([want0, want1], rel=1e-12)


def test_saturated_logits_stay_finite():
    logits = np.array([[80.0, 0.0, -5.0], [0.0, 80.0, -5.0]])
    y = np.array([0, 0])
    ment = mia.modified_entropy(logits, y)
    phi = mia.logit_confidence(logits, y)
    assert np.isfinite(ment).all() and np.isfinite(phi).all()
    # phi = z_y - logsumexp(others); a confident correct prediction has phi ~ 80 and a tiny Mentr.
    assert phi[0] == pytest.approx(80 - np.logaddexp(0, -5), rel=1e-12) and phi[1] == pytest.approx(-80, rel=1e-6)
    assert ment[0] < 1e-30 < ment[1]
    assert mia.loss_score(logits, y)[0] == pytest.approx(-np.log1p(np.exp(-80) + np.exp(-85)), abs=1e-40)


def test_logit_confidence_matches_its_definition():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (200, 7))
    y = rng.integers(0, 7, 200)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    py = p[np.arange(200), y]
    assert mia.logit_confidence(z, y) == pytest.approx(np.log(py / (1 - py)), rel=1e-9, abs=1e-9)


def test_lira_offline_finds_known_members():
    """Per-sample difficulty mu_i varies widely; members sit 2 above their own OUT distribution. A global
    threshold on phi barely separates them; LiRA's per-sample test reaches the theoretical AUROC
    Phi(2 / sqrt(2 (1 + 1/R))) (the OUT mean estimated from R models adds 1/R to the variance)."""
    rng = np.random.default_rng(0)
    n, r = 2000, 8
    mu = rng.normal(0, 5, 2 * n)
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    reference = mu + rng.normal(0, 1, (r, 2 * n))
    target = mu + 2.0 * is_member + rng.normal(0, 1, 2 * n)
    lira = mia.lira_offline(target, reference)
    auroc_lira = mia.membership_roc(lira[is_member], lira[~is_member], n_resamples=0).auroc.value
    auroc_raw = mia.membership_roc(target[is_member], target[~is_member], n_resamples=0).auroc.value
    assert auroc_lira == pytest.approx(norm.cdf(2 / np.sqrt(2 * (1 + 1 / r))), abs=0.02)
    assert auroc_raw < 0.65 < auroc_lira
    # Fixed (pooled) vs per-sample variance: with equal true variances both work.
    per_sample = mia.lira_offline(target, reference, fixed_variance=False)
    assert mia.membership_roc(per_sample[is_member], per_sample[~is_member], n_resamples=0).auroc.value > 0.8
    with pytest.raises(OptionError, match="at least 2 reference models"):
        mia.lira_offline(target, reference[:1])


def test_class_conditional_thresholds_remove_class_offsets():
    rng = np.random.default_rng(0)
    n = 3000
    y = rng.integers(0, 3, 2 * n)
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    raw = 4.0 * y + rng.normal(0, 1, 2 * n) + 1.0 * is_member  # class offsets dwarf the member shift
    cc = mia.class_conditional(raw, y, is_member, seed=0)
    a_raw = mia.membership_roc(raw[is_member], raw[~is_member], n_resamples=0).auroc.value
    a_cc = mia.membership_roc(cc[is_member], cc[~is_member], n_resamples=0).auroc.value
    assert a_cc == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=0.02) and a_cc > a_raw + 0.05


def test_class_conditional_never_fits_on_members():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 400)
    is_member = rng.random(400) < 0.5
    s = rng.normal(size=400)
    base = mia.class_conditional(s, y, is_member, seed=1)
    changed = s.copy()
    i = int(np.flatnonzero(is_member)[0])
    changed[i] += 100.0
    out = mia.class_conditional(changed, y, is_member, seed=1)
    others = np.arange(400) != i
    assert np.array_equal(out[others], base[others]) and out[i] > base[i]


def test_row_fingerprints_and_overlap():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = np.vstack([a[2:3].astype(np.float64), np.full((1, 3), 99.0), -0.0 * np.ones((1, 3))])
    a[0] = 0.0
    in_a, in_b = mia.overlapping_rows(a, b)
    assert in_a.tolist() == [0, 2] and in_b.tolist() == [0, 2]
    text_a, text_b = np.array(["x", "y"], dtype=object), np.array(["z", "x"], dtype=object)
    assert [v.tolist() for v in mia.overlapping_rows(text_a, text_b)] == [[0], [1]]


def test_balanced_indices():
    m, n = mia.balanced_indices(100, 30, seed=0)
    assert len(m) == len(n) == 30 and n.tolist() == list(range(30)) and len(set(m.tolist())) == 30
    assert np.array_equal(m, mia.balanced_indices(100, 30, seed=0)[0])
    m, n = mia.balanced_indices(100, 300, seed=0, cap=50)
    assert len(m) == len(n) == 50


def test_against_art_rule_based_attack():
    """IBM ART's rule-based attack (member iff correctly classified) yields one (TPR, FPR) point; our ROC of the
    same 0/1 score must reach that TPR at that FPR, and its AUROC is (1 + TPR - FPR) / 2 (Yeom et al.'s advantage)."""
    pytest.importorskip("art")
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBoxRuleBased
    from art.estimators.classification import SklearnClassifier
    from sklearn.datasets import make_classification
    from sklearn.tree import DecisionTreeClassifier

    x, y = make_classification(n_samples=2400, n_features=10, n_informative=5, n_classes=3, flip_y=0.2,
                               random_state=0)
    x = x.astype(np.float32)
    tree = DecisionTreeClassifier(random_state=0).fit(x[:1200], y[:1200])  # memorizes its training set
    attack = MembershipInferenceBlackBoxRuleBased(SklearnClassifier(tree))
    tpr_art = attack.infer(x[:1200], y[:1200]).mean()
    fpr_art = attack.infer(x[1200:], y[1200:]).mean()
    correct = (tree.predict(x) == y).astype(float)
    roc = mia.membership_roc(correct[:1200], correct[1200:], fprs=(float(fpr_art),), n_resamples=0)
    assert roc.tpr_at[float(fpr_art)].value == pytest.approx(tpr_art, abs=1e-12)
    assert roc.auroc.value == pytest.approx((1 + tpr_art - fpr_art) / 2, abs=1e-12)
    assert tpr_art == 1.0 and 0.2 < fpr_art < 0.9


def test_rmia_offline_hand_case_and_known_members():
    # Hand case: p_y 0.9 under the target, 0.5 and 0.7 under two OUT models, a = 0.3:
    # Pr(x) = (1.3 * 0.6 + 0.7) / 2 = 0.74, score = log(0.9 / 0.74).
    score = mia.rmia_offline(np.log([0.9]), np.log([[0.5], [0.7]]))
    assert score[0] == pytest.approx(np.log(0.9 / 0.74), rel=1e-12)
    # Per-sample difficulty as in the LiRA case, in probability space: RMIA's ratio removes it.
    rng = np.random.default_rng(0)
    n, r = 2000, 8
    mu = rng.normal(0, 3, 2 * n)
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    log_sigmoid = lambda v: -np.logaddexp(0, -v)  # noqa: E731
    reference = log_sigmoid(mu + rng.normal(0, 1, (r, 2 * n)))
    target = log_sigmoid(mu + 2.0 * is_member + rng.normal(0, 1, 2 * n))
    rmia = mia.rmia_offline(target, reference)
    auroc_rmia = mia.membership_roc(rmia[is_member], rmia[~is_member], n_resamples=0).auroc.value
    auroc_raw = mia.membership_roc(target[is_member], target[~is_member], n_resamples=0).auroc.value
    assert auroc_rmia > auroc_raw + 0.08  # measured: 0.774 vs 0.670
    # With a = 1 Pr(x) is the OUT mean itself, exact here (the OUT models are the target's OUT distribution).
    plain = mia.rmia_offline(target, reference, offline_a=1.0)
    assert mia.membership_roc(plain[is_member], plain[~is_member], n_resamples=0).auroc.value > 0.8  # measured 0.823
    with pytest.raises(OptionError, match="offline_a"):
        mia.rmia_offline(target, reference, offline_a=1.5)
