"""The privacy check (membership inference) on models trained here: an overfit MLP leaks more than a regularised
one, with intervals that separate; bad input (overlapping members and non-members, too few reference models, no
training data) is refused with exit 2; an FPR the non-member count cannot support is a finding, not a number.

Data: a synthetic 4-class table (scikit-learn ``make_classification``, 60 features of which 8 informative, 10%
label noise), because the 8x8 digits are too easy to show memorization: an MLP trained on half of them to 100%
training accuracy still scores 97% on the other half, and every attack's AUROC stays at 0.50 [0.47, 0.53].
Members: 1,200 rows; non-members: 1,200 others; reference models: trained the same way on random 1,200-row
subsets of a third, disjoint pool (OUT models for every audited row).
"""

from __future__ import annotations

import numpy as np
import pytest

import assay
from cli_helpers import assert_user_error, run_cli

torch = pytest.importorskip("torch")
nn = torch.nn

N_FEATURES = 60
N_REFERENCES = 4


def _data():
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=5000, n_features=N_FEATURES, n_informative=8, n_redundant=0, n_classes=4,
                               n_clusters_per_class=2, class_sep=1.0, flip_y=0.1, random_state=0)
    return x.astype(np.float32), y.astype(np.int64)


def _train(x, y, *, overfit: bool, seed: int):
    """Overfit: 300 full-batch Adam steps, no regularisation. Regularised: weight decay and early stopping (8 steps)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(N_FEATURES, 128), nn.ReLU(), nn.Linear(128, 4))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0 if overfit else 2.0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300 if overfit else 8):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data files, the audited models and their reference models (TorchScript files), trained once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("privacy")
        x, y = _data()
        members, nonmembers, pool = np.arange(1200), np.arange(1200, 2400), np.arange(2400, 5000)
        rng = np.random.default_rng(0)
        subsets = [rng.choice(pool, 1200, replace=False) for _ in range(N_REFERENCES)]
        paths = {}
        for kind, overfit in (("overfit", True), ("regularised", False)):
            models = [_train(x[members], y[members], overfit=overfit, seed=0)]
            models += [_train(x[s], y[s], overfit=overfit, seed=i + 1) for i, s in enumerate(subsets)]
            files = []
            for i, net in enumerate(models):
                path = root / f"{kind}{i}.pt"
                torch.jit.script(net).save(str(path))
                files.append(str(path))
            paths[kind] = files
        np.savez(root / "train.npz", x=x[members], y=y[members])
        np.savez(root / "nonmembers.npz", x=x[nonmembers], y=y[nonmembers])
        np.savez(root / "overlap.npz", x=np.vstack([x[nonmembers[:100]], x[members[:5]]]),
                 y=np.r_[y[nonmembers[:100]], y[members[:5]]])
        np.savez(root / "few.npz", x=x[nonmembers[:300]], y=y[nonmembers[:300]])
        yield {"root": root, "models": paths}
    finally:
        torch.set_num_threads(threads)


def _privacy(setup, kind):
    files = setup["models"][kind]
    root = setup["root"]
    evidence = assay.evaluate(files[0], str(root / "nonmembers.npz"), checks=["privacy"],
                              train_data=str(root / "train.npz"), reference_models=files[1:], n_bootstrap=300,
                              cache_dir=False)
    return evidence.sections["privacy"]


@pytest.fixture(scope="module")
def sections(setup):
    return {kind: _privacy(setup, kind) for kind in ("overfit", "regularised")}


def test_overfit_model_leaks_more_with_separated_intervals(sections):
    over, reg = sections["overfit"], sections["regularised"]
    for name in ("membership_auroc", "membership_tpr_at_1pct_fpr"):
        o, r = over.metrics[name], reg.metrics[name]
        assert o.ci_low > r.ci_high, (name, o, r)
    assert over.metrics["membership_auroc"].ci_low > 0.75
    assert over.verdict == "warn" and over.findings[0].sets_verdict and "leaks membership" in over.findings[0].message
    # The reference-model attack is the one that finds members at low FPR (Carlini et al. 2022).
    assert over.metrics["membership_tpr_at_1pct_fpr"].config["attack"] == "lira_offline"
    assert over.metrics["tpr_at_1pct_fpr[lira_offline]"].value > 3 * over.metrics["tpr_at_1pct_fpr[loss]"].value
    # Every attack reported with an interval; per-class AUROC for the four classes.
    for attack in ("loss", "confidence", "modified_entropy", "lira_offline"):
        m = over.metrics[f"auroc[{attack}]"]
        assert m.ci_low < m.value < m.ci_high and m.n == 2400
    assert [r["class"] for r in over.tables["per_class"]] == ["0", "1", "2", "3"]
    assert all(r["auroc"] is not None for r in over.tables["per_class"])


def test_unsupported_fpr_is_a_finding_not_a_number(sections):
    over = sections["overfit"]
    # 1,200 non-members support 1% FPR (>= 1,000) but not 0.1% (needs 10,000).
    assert "membership_tpr_at_1pct_fpr" in over.metrics
    assert not any("0.1pct" in name for name in over.metrics)
    assert all(row["tpr_at_0.1pct_fpr"] is None for row in over.tables["attacks"])
    assert any("TPR at 0.1% FPR is not reported" in f.message and "10,000" in f.message for f in over.findings)


def test_few_nonmembers_withhold_even_1pct(setup, capsys):
    root = setup["root"]
    evidence = assay.evaluate(setup["models"]["overfit"][0], str(root / "few.npz"), checks=["privacy"],
                              train_data=str(root / "train.npz"), n_bootstrap=200, cache_dir=False)
    section = evidence.sections["privacy"]
    assert section.tables["attacks"][0]["auroc"] is not None
    assert not any(name.startswith("membership_tpr") for name in section.metrics)
    assert any("TPR at 1.0% FPR is not reported" in f.message and "1,000" in f.message for f in section.findings)
    assert any("balanced sample: 300 of 1200 members" in f.message for f in section.findings)
    assert any("offline LiRA) was not run" in f.message for f in section.findings)


def test_cli_end_to_end(setup, tmp_path, capsys):
    root, files = setup["root"], setup["models"]["overfit"]
    out = tmp_path / "bundle"
    code, _, err = run_cli(["evaluate", files[0], "--data", str(root / "nonmembers.npz"), "--checks", "privacy",
                            "--train-data", str(root / "train.npz"), "--reference-models", ",".join(files[1:3]),
                            "--reference-models", ",".join(files[3:]), "--n-bootstrap", "200", "--no-cache",
                            "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    html = (out / "report.html").read_text()
    assert "Membership inference ROC (log FPR)" in html and "<script" not in html
    evidence, _ = assay.read_bundle(out)
    section = evidence.sections["privacy"]
    assert section.config["reference_models"] == files[1:] and "auroc[lira_offline]" in section.metrics


def test_overlapping_members_and_nonmembers_are_refused(setup, capsys):
    root, files = setup["root"], setup["models"]["overfit"]
    code, _, err = run_cli(["evaluate", files[0], "--data", str(root / "nonmembers.npz"), "--checks", "privacy",
                            "--train-data", str(root / "train.npz"), "--nonmember-data", str(root / "overlap.npz"),
                            "--no-cache", "--out", str(setup["root"] / "never")], capsys)
    assert_user_error(code, err, "5 input(s) of the non-member data", "overlap.npz", "train.npz")
    assert not (setup["root"] / "never").exists()
    # The evaluation data as non-members is checked the same way.
    code, _, err = run_cli(["evaluate", files[0], "--data", str(root / "overlap.npz"), "--checks", "privacy",
                            "--train-data", str(root / "train.npz"), "--no-cache", "--out",
                            str(setup["root"] / "never")], capsys)
    assert_user_error(code, err, "also appear in the training data")


def test_bad_privacy_options(setup, capsys):
    root, files = setup["root"], setup["models"]["overfit"]
    base = ["evaluate", files[0], "--data", str(root / "nonmembers.npz"), "--no-cache", "--out",
            str(root / "never")]
    code, _, err = run_cli([*base, "--checks", "privacy"], capsys)
    assert_user_error(code, err, "needs the training data", "--train-data")
    code, _, err = run_cli([*base, "--train-data", str(root / "train.npz"), "--reference-models", files[1]], capsys)
    assert_user_error(code, err, "at least 2 reference models", "--reference-models")


def test_reference_recipe_trains_out_models_on_half_the_nonmembers(setup):
    """Python API: Assay trains the reference models itself on half of the non-members and audits the other half."""
    root = setup["root"]
    seeds = []

    def recipe(x, y, seed):
        seeds.append(seed)
        assert len(x) == 300  # a random half of the 600 non-members kept for training
        return _train(x, y, overfit=True, seed=seed)

    evidence = assay.evaluate(setup["models"]["overfit"][0], str(root / "nonmembers.npz"), checks=["privacy"],
                              train_data=str(root / "train.npz"), reference_recipe=recipe, reference_count=2,
                              n_bootstrap=200, cache_dir=False)
    section = evidence.sections["privacy"]
    assert seeds == [1, 2] and section.config["per_side"] == 600
    assert section.metrics["auroc[lira_offline]"].value > 0.7
    assert section.config["reference_models"] == ["recipe test_reference_recipe_trains_out_models_on_half_the_"
                                                  "nonmembers.<locals>.recipe x 2"]
    assert any("600 of the 1200 non-members trained 2 reference models" in f.message for f in section.findings)
    assert "reference_recipe" not in evidence.config  # a callable is not recorded


def test_failing_recipe_is_an_option_error(setup):
    from assay.errors import OptionError

    root = setup["root"]

    def recipe(x, y, seed):
        raise ValueError("no GPU here")

    with pytest.raises(OptionError, match="reference recipe failed on reference model 1: ValueError: no GPU here"):
        assay.evaluate(setup["models"]["overfit"][0], str(root / "nonmembers.npz"), checks=["privacy"],
                       train_data=str(root / "train.npz"), reference_recipe=recipe, n_bootstrap=100, cache_dir=False)


def test_nonmember_view_runs_in_worker_processes(setup, tmp_path, capsys):
    """--nonmember-data is an engine view of its own kind ("nonmember"), rebuilt from its spec in workers."""
    root, files = setup["root"], setup["models"]["overfit"]
    out = tmp_path / "proc"
    code, _, err = run_cli(["evaluate", files[0], "--data", str(root / "few.npz"), "--checks", "privacy",
                            "--train-data", str(root / "train.npz"), "--nonmember-data", str(root / "nonmembers.npz"),
                            "--backend", "processes", "--n-bootstrap", "100", "--no-cache", "--out", str(out),
                            "--quiet"], capsys)
    assert code == 0, err
    evidence, _ = assay.read_bundle(out)
    section = evidence.sections["privacy"]
    assert section.config["nonmembers"].endswith("nonmembers.npz") and section.config["per_side"] == 1200
    assert section.metrics["membership_auroc"].value > 0.75
