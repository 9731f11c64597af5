"""OOD detector scores and ranking metrics against scikit-learn, pytorch-ood and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from assay.checks.ood_scores import (
    KNNDetector,
    MahalanobisDetector,
    ViMDetector,
    energy,
    max_logit,
    msp,
    neg_entropy,
)
from assay.errors import UserError
from assay.stats.ranking import (
    aupr_in,
    aupr_out,
    aurc,
    auroc,
    fpr_at_tpr,
    ood_metrics,
    risk_coverage_curve,
    selective_risk_at_coverage,
)

# --------------------------------------------------------------------------- pytorch-ood (test-only)


@pytest.fixture(scope="module")
def pood(pytorch_ood_detectors):
    """(torch, pytorch_ood.detector); see conftest.py for the torchvision stub."""
    return pytorch_ood_detectors


# --------------------------------------------------------------------------- logit scores


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(scale=4.0, size=(300, 10))


def test_logit_scores_match_pytorch_ood(pood, logits):
    torch, det = pood
    t = torch.from_numpy(logits)
    np.testing.assert_allclose(msp(logits), -det.MaxSoftmax.score(t).numpy(), rtol=1e-10)
    np.testing.assert_allclose(max_logit(logits), -det.MaxLogit.score(t).numpy(), rtol=1e-12)
    np.testing.assert_allclose(energy(logits), -det.EnergyBased.score(t).numpy(), rtol=1e-10)
    np.testing.assert_allclose(energy(logits, 3.0), -det.EnergyBased.score(t, t=3.0).numpy(), rtol=1e-10)
    # pytorch-ood clips p at 1e-7 before the log: differences are O(C * 1e-7 * 16).
    np.testing.assert_allclose(neg_entropy(logits), -det.Entropy.score(t).numpy(), atol=2e-5)


def test_logit_scores_hand_cases():
    z = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    np.testing.assert_allclose(msp(z), [0.5, 0.75])
    np.testing.assert_allclose(max_logit(z), [0.0, np.log(3.0)])
    np.testing.assert_allclose(energy(z), [np.log(2.0), np.log(4.0)])
    np.testing.assert_allclose(neg_entropy(z), [-np.log(2.0), 0.75 * np.log(0.75) + 0.25 * np.log(0.25)])
    # Large logits must not overflow.
    assert np.isfinite(energy(np.array([[1e4, 0.0]]))).all()
    with pytest.raises(UserError, match="NaN"):
        msp(np.array([[np.nan, 1.0]]))
    with pytest.raises(UserError, match="2-D"):
        energy(np.zeros(5))


# --------------------------------------------------------------------------- feature detectors


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(1)
    n_classes, dims = 4, 16
    centres = rng.normal(scale=3.0, size=(n_classes, dims))
    labels = rng.integers(0, n_classes, size=400)
    train = centres[labels] + rng.normal(size=(400, dims)) @ rng.normal(size=(dims, dims)) * 0.3
    test = np.vstack([centres[rng.integers(0, n_classes, 50)] + rng.normal(size=(50, dims)),
                      rng.normal(scale=6.0, size=(50, dims))])
    return train, labels, test


def test_mahalanobis_matches_pytorch_ood(pood, features):
    torch, det = pood
    train, labels, test = features
    ours = MahalanobisDetector().fit(train, labels).score(test)
    ref = det.Mahalanobis(None).fit_features(torch.from_numpy(train).float(), torch.from_numpy(labels))
    theirs = ref.predict_features(torch.from_numpy(test).float()).double().numpy()
    # pytorch-ood uses the unnormalized scatter matrix and a factor 1/2: outlier = -ours / (2 N).
    np.testing.assert_allclose(-theirs * 2 * len(train), ours, rtol=2e-3)


def test_mahalanobis_hand_case():
    # Two classes, identity-like covariance: within-class deviations are +-1 on each axis.
    x = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=float)
    train = np.vstack([x, x + [10, 0]])
    labels = np.array([0] * 4 + [1] * 4)
    detector = MahalanobisDetector().fit(train, labels)
    np.testing.assert_allclose(detector.means_, [[0, 0], [10, 0]])
    # covariance = diag(0.5, 0.5) -> precision = 2 I; point (3, 0) is 3 from class 0.
    np.testing.assert_allclose(detector.score(np.array([[3.0, 0.0], [10.0, 1.0]])), [-18.0, -2.0])
    with pytest.raises(UserError, match="dimensions"):
        detector.score(np.zeros((1, 3)))


def test_knn_matches_pytorch_ood(pood, features):
    torch, det = pood
    train, labels, test = features
    ours = KNNDetector(k=10).fit(train).score(test)
    ref = det.KNN(None, k=10).fit_features(torch.from_numpy(train), torch.from_numpy(labels))
    theirs = ref.predict_features(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-10)


def test_knn_hand_case():
    train = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])  # normalized: e1, e2, -e1
    detector = KNNDetector(k=2).fit(train)
    # (5, 0) -> e1: distances 0, sqrt2, 2 -> 2nd nearest sqrt2.
    np.testing.assert_allclose(detector.score(np.array([[5.0, 0.0]])), [-np.sqrt(2.0)])
    with pytest.raises(UserError, match="k=5"):
        KNNDetector(k=5).fit(train)
    with pytest.raises(UserError, match="not fitted"):
        KNNDetector().score(train)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sklearn_knn_distance(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Reference: float64 brute-force scikit-learn on L2-normalized features (zero rows stay zero)."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(_unit_rows(train))
    return index.kneighbors(_unit_rows(queries))[0][:, -1]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 120), st.integers(1, 6), st.booleans())
def test_knn_equals_sklearn_with_duplicates_and_ties(seed, n_train, dims, integer_valued):
    """Random sizes, any k in 1..n, training rows drawn with replacement from a small pool (duplicates),
    integer features (many exactly tied distances), zero rows, and queries that are training rows."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(-2, 3, size=(rng.integers(1, n_train + 1), dims)).astype(float) if integer_valued \
        else rng.normal(size=(rng.integers(1, n_train + 1), dims))
    train = pool[rng.integers(0, len(pool), n_train)]
    queries = np.vstack([rng.normal(size=(5, dims)), train[rng.integers(0, n_train, 5)], np.zeros((1, dims))])
    for k in {1, n_train, int(rng.integers(1, n_train + 1))}:
        ours = -KNNDetector(k=k).fit(train).score(queries)
        np.testing.assert_allclose(ours, _sklearn_knn_distance(train, queries, k), rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("k", [1, 7, 50, 400])
def test_knn_equals_sklearn_on_grouped_search(k, monkeypatch):
    """Sizes where the search groups columns (with a remainder), several query blocks, float32 input,
    and a mix of rows: easy ones, near-ties resolved in float64 (20 copies of a training vector), and
    heavy ties recomputed densely (100 copies)."""
    from assay.checks import ood_scores

    monkeypatch.setattr(ood_scores, "_SIMILARITY_BLOCK_BYTES", 4 * 3001 * 37)  # 37 query rows per block
    rng = np.random.default_rng(k)
    train = rng.normal(size=(3001, 24)).astype(np.float32)
    train[:20] = train[0]
    train[20:120] = train[20]
    train[120] = 0.0
    queries = np.vstack([rng.normal(size=(80, 24)), train[[0, 20, 120, 500]], train[0] + 1e-4]).astype(np.float32)
    ours = -KNNDetector(k=k).fit(train).score(queries)
    expected = _sklearn_knn_distance(train.astype(np.float64), queries.astype(np.float64), k)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-7)


def test_knn_resolves_float32_near_ties_in_float64():
    """Training rows closer together than float32 resolves: their float32 similarities to a query tie or
    come out in the wrong order, so the k-th must be found among them in float64."""
    rng = np.random.default_rng(6)
    base = rng.normal(size=64)
    train = np.vstack([base + 1e-7 * rng.normal(size=(30, 64)), rng.normal(size=(970, 64))])
    queries = base + 1e-3 * rng.normal(size=(20, 64))
    for k in (5, 10, 25):
        ours = -KNNDetector(k=k).fit(train).score(queries)
        np.testing.assert_allclose(ours, _sklearn_knn_distance(train, queries, k), rtol=1e-9)


def test_knn_scores_float32_like_float64():
    rng = np.random.default_rng(5)
    train, queries = rng.normal(size=(500, 8)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    detector = KNNDetector(k=5).fit(train)
    np.testing.assert_array_equal(detector.score(queries), KNNDetector(k=5).fit(train.astype(float)).score(queries))
    with pytest.raises(UserError, match="NaN"):
        detector.score(np.full((1, 8), np.nan, dtype=np.float32))
    detector.k = 501  # changed after fit: checked again when scoring
    with pytest.raises(UserError, match="k=501"):
        detector.score(queries)


def test_mahalanobis_equals_lee_et_al_reference_in_blocks(features, monkeypatch):
    """Lee et al.'s reference: sklearn EmpiricalCovariance on class-centred features, then the minimum
    over classes of sklearn's squared Mahalanobis distance; ours computed a few rows at a time."""
    from sklearn.covariance import EmpiricalCovariance

    from assay.checks import ood_scores

    train, labels, test = features
    reference = EmpiricalCovariance(assume_centered=False)
    means = np.stack([train[labels == c].mean(axis=0) for c in range(4)])
    reference.fit(train - means[labels])
    reference.precision_ = np.linalg.pinv(reference.covariance_, hermitian=True)
    expected = -np.min([reference.mahalanobis(test - mu) for mu in means], axis=0)

    monkeypatch.setattr(ood_scores, "_FLOAT64_BLOCK_BYTES", 8 * 16 * 7)  # 7 rows per block
    ours = MahalanobisDetector().fit(train.astype(np.float32), labels)
    float32_in = ours.score(test.astype(np.float32))
    float64_in = MahalanobisDetector().fit(train.astype(np.float32).astype(float), labels).score(
        test.astype(np.float32).astype(float))
    np.testing.assert_allclose(float32_in, float64_in, rtol=1e-12)
    np.testing.assert_allclose(MahalanobisDetector().fit(train, labels).score(test), expected, rtol=1e-8)


def test_vim_matches_pytorch_ood(pood, features):
    torch, det = pood
    train, labels, test = features
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(size=(4, 16)), rng.normal(size=4)
    ours = ViMDetector(dim=6).fit(train, weight, bias).score(test)
    ref = det.ViM(None, d=6, w=torch.from_numpy(weight), b=torch.from_numpy(bias))
    ref.fit_features(torch.from_numpy(train).float(), torch.from_numpy(labels))
    theirs = ref.predict_features(torch.from_numpy(test).float()).double().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-3, atol=1e-3)


def test_vim_rejects_bad_dim(features):
    train, _, _ = features
    with pytest.raises(UserError, match="dim=16"):
        ViMDetector(dim=16).fit(train, np.ones((4, 16)), np.zeros(4))
    with pytest.raises(UserError, match="do not match"):
        ViMDetector(dim=4).fit(train, np.ones((4, 15)), np.zeros(4))


# --------------------------------------------------------------------------- ranking metrics


def _reference(id_scores, ood_scores):
    y_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    s = np.r_[id_scores, ood_scores]
    fpr, tpr, _ = roc_curve(1 - y_ood, s)
    return {
        "auroc": roc_auc_score(y_ood, -s),
        "aupr_in": average_precision_score(1 - y_ood, s),
        "aupr_out": average_precision_score(y_ood, -s),
        "fpr_at_95_tpr": fpr[np.argmax(tpr >= 0.95)],
    }


score_lists = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=40)  # many ties


@settings(max_examples=150, deadline=None)
@given(score_lists, score_lists)
def test_ranking_metrics_match_sklearn(id_list, ood_list):
    id_scores, ood_scores = np.array(id_list), np.array(ood_list)
    ref = _reference(id_scores, ood_scores)
    got = {k: v.value for k, v in ood_metrics(id_scores, ood_scores, n_resamples=0).items()}
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert auroc(id_scores, ood_scores) == pytest.approx(ref["auroc"], abs=1e-12)
    assert aupr_in(id_scores, ood_scores) == pytest.approx(ref["aupr_in"], abs=1e-12)
    assert aupr_out(id_scores, ood_scores) == pytest.approx(ref["aupr_out"], abs=1e-12)


def test_ranking_metrics_continuous_scores():
    rng = np.random.default_rng(3)
    id_scores, ood_scores = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 300)
    ref = _reference(id_scores, ood_scores)
    got = ood_metrics(id_scores, ood_scores, n_resamples=0)
    for key in ref:
        assert got[key].value == pytest.approx(ref[key], abs=1e-12)


def test_fpr_at_95_hand_cases():
    id_scores = np.arange(1.0, 21.0)  # 20 ID scores 1..20; 95% of ID accepted at threshold 2
    assert fpr_at_tpr(id_scores, np.array([0.0, 1.5, 2.0, 3.0])) == pytest.approx(0.5)  # 2.0 and 3.0 accepted
    assert fpr_at_tpr(id_scores, np.array([0.5, 1.0])) == 0.0
    assert fpr_at_tpr(id_scores, np.array([25.0])) == 1.0
    # 10 ID: 95% needs all 10 -> threshold 1 (the minimum); OOD at 1.0 is accepted (>=).
    assert fpr_at_tpr(np.arange(1.0, 11.0), np.array([1.0, 0.9])) == pytest.approx(0.5)
    # tpr=0.5 over 4 ID {4,3,2,1}: threshold 3.
    assert fpr_at_tpr(np.array([1.0, 2, 3, 4]), np.array([2.5, 3.0, 3.5, 5]), tpr=0.5) == pytest.approx(0.75)


def test_bootstrap_intervals_cover_and_are_reproducible():
    rng = np.random.default_rng(4)
    id_scores, ood_scores = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 200)
    first = ood_metrics(id_scores, ood_scores, n_resamples=300, seed=7)
    again = ood_metrics(id_scores, ood_scores, n_resamples=300, seed=7)
    # The true AUROC of N(1,1) vs N(0,1) is Phi(1/sqrt2) = 0.7602.
    assert first["auroc"].ci_low < 0.7602 < first["auroc"].ci_high
    for key, result in first.items():
        assert result.ci_low <= result.value <= result.ci_high, key
        assert result.samples.shape == (300,)
        np.testing.assert_array_equal(result.samples, again[key].samples)
    spread = first["auroc"].ci_high - first["auroc"].ci_low
    assert 0.03 < spread < 0.15  # ~ 4 * SE, SE of AUROC at n=400/200 ~ 0.02


def test_perfect_separation():
    result = ood_metrics(np.array([2.0, 3.0]), np.array([0.0, 1.0]), n_resamples=50)
    assert result["auroc"].value == 1.0 and result["fpr_at_95_tpr"].value == 0.0
    assert result["aupr_in"].value == 1.0 and result["aupr_out"].value == 1.0
    with pytest.raises(UserError, match="non-empty"):
        auroc(np.array([]), np.array([1.0]))


# --------------------------------------------------------------------------- selective prediction


def test_risk_coverage_and_aurc_hand_case():
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, False])
    curve = risk_coverage_curve(confidence, correct)
    np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.0, 0.5, 1 / 3, 0.5])
    assert aurc(confidence, correct) == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    assert selective_risk_at_coverage(confidence, correct, 0.75) == pytest.approx((0.75, 1 / 3))
    # Ties are accepted together: {0.9, 0.9} then {0.5}.
    tied = risk_coverage_curve(np.array([0.9, 0.9, 0.5]), np.array([True, False, False]))
    np.testing.assert_allclose(tied.coverage, [2 / 3, 1.0])
    np.testing.assert_allclose(tied.risk, [0.5, 2 / 3])
    assert aurc(np.array([0.9, 0.9, 0.5]), np.array([1, 0, 0])) == pytest.approx(2 / 3 * 0.5 + 1 / 3 * 2 / 3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.booleans()), min_size=1, max_size=30,
                unique_by=lambda t: t[0]))
def test_aurc_without_ties_is_mean_topk_risk(pairs):
    confidence = np.array([p[0] for p in pairs])
    correct = np.array([p[1] for p in pairs])
    errors = ~correct[np.argsort(-confidence)]
    expected = np.mean(np.cumsum(errors) / np.arange(1, len(errors) + 1))
    assert aurc(confidence, correct) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_resampled_metrics_equal_sklearn_on_the_expanded_resample(seed):
    """The bootstrap path (integer weights per sample, one sort) equals scikit-learn run on the
    resample written out sample by sample, including resamples that drop whole tie groups."""
    from assay.stats.ranking import _metrics_from_weights, _sort

    rng = np.random.default_rng(seed)
    id_scores = rng.integers(-3, 4, size=rng.integers(1, 15)).astype(float)
    ood_scores = rng.integers(-3, 4, size=rng.integers(1, 15)).astype(float)
    w_id_pooled = rng.multinomial(len(id_scores), np.full(len(id_scores), 1 / len(id_scores)))
    w_ood_pooled = rng.multinomial(len(ood_scores), np.full(len(ood_scores), 1 / len(ood_scores)))
    s = _sort(id_scores, ood_scores)
    weights = np.r_[w_id_pooled, w_ood_pooled][s.order].astype(float)
    got = _metrics_from_weights(s, (weights * s.is_id)[None], (weights * ~s.is_id)[None], 0.95)
    ref = _reference(np.repeat(id_scores, w_id_pooled), np.repeat(ood_scores, w_ood_pooled))
    for key in ref:
        assert got[key][0] == pytest.approx(ref[key], abs=1e-12), key
