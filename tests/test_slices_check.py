"""Slices and fairness checks wired into evaluate: a planted weak slice is flagged, bad columns fail clearly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.errors import UserError
from assay.stats.multiple_testing import benjamini_hochberg
from conftest import make_blobs_dataset


def _with_meta(n=1200, seed=0):
    ds, model = make_blobs_dataset(n=n, noise=2.0, seed=seed)
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], size=n)
    # Plant a weak slice: scramble a third of the inputs in "west" so the model errs there.
    west = np.flatnonzero(region == "west")
    ds.x[west[: len(west) // 2]] = rng.normal(0, 6, size=(len(west) // 2, ds.x.shape[1])).astype(np.float32)
    ds.meta = pd.DataFrame({"region": region, "age": rng.uniform(18, 90, size=n), "one": ["x"] * n})
    return ds, model


def test_planted_weak_slice_is_flagged_and_numeric_columns_are_binned():
    ds, model = _with_meta()
    section = run_evaluation(model, ds, config=EvaluateConfig(slice_by=["region", "age"], n_bootstrap=200),
                             cache_dir=None).evidence.sections["slices"]
    rows = {r["slice"]: r for r in section.tables["region"]}
    correct = (ds.x @ model.weight + model.bias).argmax(1) == ds.y
    assert rows["west"]["accuracy"] == pytest.approx(correct[ds.meta["region"] == "west"].mean())
    assert rows["west"]["flagged"] and not rows["north"]["flagged"]
    assert section.verdict == "warn"
    assert len(section.tables["age"]) == 4 and all(r["slice"].startswith("Q") for r in section.tables["age"])
    gap = section.metrics["worst_slice_gap[region]"]
    assert gap.config["worst"] == "west" and gap.ci_low <= gap.value <= gap.ci_high
    assert section.plots["accuracy[region]"]["muted"] == [False] * 4


def test_one_fdr_family_across_columns_and_slice_labels_in_predictions():
    ds, model = _with_meta()
    run = run_evaluation(model, ds, config=EvaluateConfig(slice_by=["region", "age"], n_bootstrap=100), cache_dir=None)
    section = run.evidence.sections["slices"]
    rows = [r for column in ("region", "age") for r in section.tables[column]]
    tested = [r for r in rows if not r["insufficient"]]
    _, expected = benjamini_hochberg(np.array([r["p_value"] for r in tested]), 0.05)
    np.testing.assert_allclose([r["p_adjusted"] for r in tested], expected)
    # predictions.npz carries the slice labels, so compare can test per slice later.
    arrays = run.predictions()
    assert set(arrays["slice_region"]) == {"north", "south", "east", "west"}
    assert all(str(v).startswith("Q") for v in arrays["slice_age"])


def test_small_slices_are_muted_in_the_plot_and_not_flagged():
    ds, model = _with_meta(n=400)
    region = ds.meta["region"].to_numpy().copy()
    region[:10] = "tiny"  # 10 < min_slice_size (30)
    ds.meta["region"] = region
    section = run_evaluation(model, ds, config=EvaluateConfig(slice_by=["region"], n_bootstrap=100),
                             cache_dir=None).evidence.sections["slices"]
    plot = section.plots["accuracy[region]"]
    muted = dict(zip(plot["categories"], plot["muted"], strict=True))
    assert muted == {"tiny": True, "north": False, "south": False, "east": False, "west": False}
    tiny = next(r for r in section.tables["region"] if r["slice"] == "tiny")
    assert tiny["insufficient"] and not tiny["flagged"]
    assert any("insufficient" in f.message and "tiny" in f.message for f in section.findings)


def test_fairness_section_and_bad_columns():
    ds, model = _with_meta()
    section = run_evaluation(model, ds, config=EvaluateConfig(sensitive=["region"], n_bootstrap=200),
                             cache_dir=None).evidence.sections["fairness"]
    assert {r["group"] for r in section.tables["region"]} == {"north", "south", "east", "west"}
    m = section.metrics["demographic_parity_difference[region]"]
    assert 0 <= m.value <= 1 and m.ci_low <= m.value <= m.ci_high
    with pytest.raises(UserError, match="choose one of: region, age, one"):
        run_evaluation(model, ds, config=EvaluateConfig(slice_by=["regoin"]), cache_dir=None)
    with pytest.raises(UserError, match="single group"):
        run_evaluation(model, ds, config=EvaluateConfig(sensitive=["one"]), cache_dir=None)


def test_a_fairness_warning_names_the_column_and_the_value_as_its_cause():
    ds, model = _with_meta()
    region = ds.meta["region"].to_numpy().copy()
    predicted = (ds.x @ model.weight + model.bias).argmax(1)
    region[predicted == 0] = "west"  # every prediction of class 0 in one group: a large parity gap
    ds.meta["region"] = region
    section = run_evaluation(model, ds, config=EvaluateConfig(sensitive=["region"], n_bootstrap=100),
                             cache_dir=None).evidence.sections["fairness"]
    dp = section.metrics["demographic_parity_difference[region]"].value
    assert section.verdict == "warn" and dp > 0.1
    (cause,) = section.verdict_reasons()
    assert cause.sets_verdict and cause.severity == "warning"
    assert f"{dp:.3f}" in cause.message and "'region'" in cause.message
    assert cause.evidence == "fairness.metrics.demographic_parity_difference[region]"


def test_the_gap_interval_names_the_method_that_computed_it():
    from assay.checks.slice_metrics import GAP_INTERVAL_METHOD

    ds, model = _with_meta()
    section = run_evaluation(model, ds, config=EvaluateConfig(slice_by=["region"], n_bootstrap=100),
                             cache_dir=None).evidence.sections["slices"]
    method = section.metrics["worst_slice_gap[region]"].method
    assert method.startswith(GAP_INTERVAL_METHOD) and "bias-corrected" not in method
