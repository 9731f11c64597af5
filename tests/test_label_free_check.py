"""Label-free estimation wired into evaluate, and reference.npz for monitoring."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from assay.api import run_evaluation, write_evaluation
from assay.checks.base import EvaluateConfig
from assay.checks.label_free import ATCEstimator
from conftest import make_blobs_dataset


def test_unlabeled_target_estimates_mae_on_corruptions_and_reference(tmp_path):
    ds, model = make_blobs_dataset(n=500, noise=1.5)
    shifted, _ = make_blobs_dataset(n=300, noise=2.5, seed=0)  # same centres, noisier: a covariate shift
    np.savez(tmp_path / "target.npz", x=shifted.x, y=shifted.y)  # labels present: used only to report truth
    cfg = EvaluateConfig(unlabeled=[str(tmp_path / "target.npz")], corruptions=["gaussian_noise"], severities=[1, 5],
                         n_bootstrap=100)
    run = run_evaluation(model, ds, config=cfg, cache_dir=None)
    section = run.evidence.sections["label_free"]
    target_logits = shifted.x @ model.weight + model.bias
    avg = section.metrics["average_confidence[target]"]
    assert avg.value == pytest.approx(softmax(target_logits.astype(np.float64), axis=1).max(1).mean(), rel=1e-5)
    assert avg.ci_low <= avg.value <= avg.ci_high
    row = section.tables["targets"][0]
    assert row["true_accuracy"] == pytest.approx((target_logits.argmax(1) == shifted.y).mean())
    assert any("has labels" in f.message for f in section.findings)
    shifts = section.tables["corruption_shifts"]
    assert len(shifts) == 2
    mae = np.mean([abs(r["average_confidence"] - r["true_accuracy"]) for r in shifts])
    assert section.metrics["mae_on_corruptions[average_confidence]"].value == pytest.approx(mae)

    write_evaluation(run, tmp_path / "bundle")
    with np.load(tmp_path / "bundle" / "reference.npz") as ref:
        logits = ds.x @ model.weight + model.bias
        expected = ATCEstimator("maxconf").fit(logits, ds.y).threshold_
        assert float(ref["atc_threshold_maxconf"]) == pytest.approx(expected, rel=1e-6)
        assert ref["val_confidence"].shape == (500,)
        np.testing.assert_allclose(ref["feature_mean"], ds.x.mean(0), rtol=1e-5)


# ---------------------------------------------------------------------------- error under shift (issue 20, item 5)


def _label_free_ctx(val_logits, val_labels, views, targets, n_bootstrap=200):
    """A check context holding the clean logits, corruption views ``(name, severity, logits)`` (pre-computed
    kind: no model needed) and unlabeled targets ``(name, logits, labels)``."""
    from assay.checks.base import CheckContext
    from assay.checks.label_free_check import UnlabeledView
    from assay.data.dataset import Dataset
    from assay.engine.cache import ViewOutput
    from assay.engine.robust_views import PrecomputedCorruptionView
    from assay.engine.run import Outputs

    def dataset(n, y):
        return Dataset(x=np.zeros((n, 1), np.float32), y=None if y is None else np.asarray(y, np.int64),
                       ids=np.arange(n), modality="tabular", name="t", source="memory")

    outputs = {"clean": ViewOutput(logits=np.asarray(val_logits, np.float32), features=None)}
    ctx_views = {}
    for name, severity, logits in views:
        key = f"corruption/{name}/{severity}"
        outputs[key] = ViewOutput(logits=np.asarray(logits, np.float32), features=None)
        ctx_views[key] = PrecomputedCorruptionView(name, severity, None)
    for name, logits, labels in targets:
        key = f"unlabeled/{name}"
        outputs[key] = ViewOutput(logits=np.asarray(logits, np.float32), features=None)
        ctx_views[key] = UnlabeledView(name, dataset(len(logits), labels))
    return CheckContext(outputs=Outputs(views=outputs), dataset=dataset(len(val_labels), val_labels),
                        config=EvaluateConfig(n_bootstrap=n_bootstrap), views=ctx_views)


def _shift_case(severities=(1, 2, 3, 4, 5), kinds=("noise", "contrast", "drift", "dropout")):
    from test_label_free import _bayes_logits, _blobs, _input_shift

    rng = np.random.default_rng(40)
    x, y = _blobs(rng, 1500)
    views = [(k, s, _bayes_logits(_input_shift(rng, x, k, s))) for k in kinds for s in severities]
    targets = []
    for name, kind, severity in (("foggy", "contrast", 3.5), ("grainy", "noise", 2.5)):
        xt, yt = _blobs(rng, 800)
        targets.append((name, _bayes_logits(_input_shift(rng, xt, kind, severity)), yt))
    return _bayes_logits(x), y, views, targets


def test_error_tail_bias_and_shift_aware_intervals_against_independent_recomputation():
    import pandas as pd

    from assay.checks.label_free import SHIFT_SCALE_FLOOR, label_free_estimates, shift_aware_interval
    from assay.checks.label_free_check import check_label_free
    from test_label_free import _reference_conformal_quantile

    val_logits, y, views, targets = _shift_case()
    section = check_label_free(_label_free_ctx(val_logits, y, views, targets))
    m = section.metrics
    val_logits32 = val_logits.astype(np.float32)  # what the check sees
    val_accuracy = float((val_logits32.argmax(1) == y).mean())
    shifts = pd.DataFrame(section.tables["corruption_shifts"])
    assert len(shifts) == 20
    truth = np.array([(logits.astype(np.float32).argmax(1) == y).mean() for _, _, logits in views])
    np.testing.assert_allclose(shifts["true_accuracy"], truth)
    for e in ("atc_mc", "atc_ne", "doc", "average_confidence"):
        signed = shifts[e] - shifts["true_accuracy"]
        assert m[f"median_abs_error_on_corruptions[{e}]"].value == pytest.approx(signed.abs().median())
        assert m[f"p90_abs_error_on_corruptions[{e}]"].value == pytest.approx(signed.abs().quantile(0.9))
        assert m[f"max_abs_error_on_corruptions[{e}]"].value == pytest.approx(signed.abs().max())
        assert m[f"mae_on_corruptions[{e}]"].value == pytest.approx(signed.abs().mean())
        assert m[f"share_too_high_on_corruptions[{e}]"].value == pytest.approx((signed > 0).mean())
        assert m[f"mean_signed_error_on_corruptions[{e}]"].value == pytest.approx(signed.mean())
        scale = SHIFT_SCALE_FLOOR + np.maximum(0, val_accuracy - shifts[e].to_numpy())
        scores = signed.abs().to_numpy() / scale
        band = _reference_conformal_quantile(scores, 0.9)
        assert m[f"shift_band[{e}]"].value == pytest.approx(band)
        kinds = shifts["corruption"].to_numpy()
        held_out = [np.mean(scores[kinds == k] <= _reference_conformal_quantile(scores[kinds != k], 0.9))
                    for k in ("noise", "contrast", "drift", "dropout")]
        assert m[f"loco_coverage[{e}]"].value == pytest.approx(np.mean(held_out))
        for name, logits, _ in targets:
            sampling = label_free_estimates(val_logits32, y, logits.astype(np.float32), n_resamples=200, seed=0)[e]
            metric = m[f"{e}[{name}]"]
            assert metric.config["sampling_ci"] == pytest.approx([sampling.ci_low, sampling.ci_high])
            widen = band * (SHIFT_SCALE_FLOOR + max(0.0, val_accuracy - sampling.value))
            assert (metric.ci_low, metric.ci_high) == pytest.approx(
                shift_aware_interval(sampling.value, sampling.ci_low, sampling.ci_high, widen))
            assert metric.ci_high - metric.ci_low > sampling.ci_high - sampling.ci_low  # wider than sampling alone
            assert metric.config["coverage_promised"] is True
    messages = " | ".join(f.message for f in section.findings)
    for words in ("median", "90th percentile", "worst", "too high on", "split-conformal 90%",
                  "leaving one corruption out, the band covered"):
        assert words in messages
    assert section.lead_tables == ["targets", "estimator_error"]
    assert {r["estimator"] for r in section.tables["estimator_error"]} == {"atc_mc", "atc_ne", "doc",
                                                                          "average_confidence"}
    for name, logits, labels in targets:  # the labels the estimators never saw: each target is covered
        true = float((logits.astype(np.float32).argmax(1) == labels).mean())
        row = next(r for r in section.tables["targets"] if r["target"] == name)
        assert row["true_accuracy"] == pytest.approx(true)
        inside = [e for e in ("atc_mc", "atc_ne", "doc", "average_confidence")
                  if m[f"{e}[{name}]"].ci_low <= true <= m[f"{e}[{name}]"].ci_high]
        assert row["inside_interval"] == ", ".join(inside)
        best = row["interval_estimator"]
        assert row["interval"] == f"{m[f'{best}[{name}]'].ci_low:.3f}–{m[f'{best}[{name}]'].ci_high:.3f}"
    section.model_dump_json()


def test_too_few_views_say_no_coverage_is_promised():
    from assay.checks.label_free_check import check_label_free

    val_logits, y, views, targets = _shift_case(severities=(2, 4), kinds=("noise", "contrast", "drift"))
    section = check_label_free(_label_free_ctx(val_logits, y, views, targets[:1]))
    assert section.metrics["shift_band[atc_mc]"].value is None  # 6 views < 9
    assert section.metrics["atc_mc[foggy]"].config["coverage_promised"] is False
    lead = next(f for f in section.findings if f.evidence == "label_free.tables.estimator_error")
    assert lead.severity == "warning"
    assert "6 views are too few for a 90% error band (it needs at least 9)" in lead.message
    assert "no coverage is promised" in lead.message


def test_without_corruption_views_the_interval_is_said_to_cover_sampling_only():
    from assay.checks.label_free import label_free_estimates
    from assay.checks.label_free_check import check_label_free

    val_logits, y, _, targets = _shift_case()
    section = check_label_free(_label_free_ctx(val_logits, y, [], targets[:1]))
    sampling = label_free_estimates(val_logits.astype(np.float32), y, targets[0][1].astype(np.float32),
                                    n_resamples=200, seed=0)["atc_ne"]
    metric = section.metrics["atc_ne[foggy]"]
    assert (metric.ci_low, metric.ci_high) == pytest.approx((sampling.ci_low, sampling.ci_high))
    assert "sampling noise only" in metric.method
    assert any(f.severity == "warning" and "cover sampling noise only" in f.message for f in section.findings)
    assert "estimator_error" not in section.tables
