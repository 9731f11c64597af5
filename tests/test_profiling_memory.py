"""Peak memory in a fresh process: the child loads the model from its spec through Assay's loader, so it
measures torch.export and factory models and refuses what the loader refuses (no second loader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from assay.models import ModelSpec, load_model
from assay.profiling.memory import peak_rss_subprocess
from assay.profiling.profile import profile_model
from test_model_safety import _torch_runs, _touch, make_net, rewrite_json

X = np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("rss")
    net = make_net()
    program = torch.export.export(net, (torch.from_numpy(X),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, d / "net.pt2")
    return d / "net.pt2"


def _measured(spec: ModelSpec, batch: np.ndarray = X) -> tuple[float, float, str]:
    peak, baseline, note = peak_rss_subprocess(spec, batch)
    assert peak is not None and baseline is not None, note
    return peak, baseline, note


def test_torch_export_model_is_measured_through_the_loader(exported):
    model = load_model(str(exported), sample=X[:2])
    peak, baseline, note = _measured(model.spec())
    assert peak > baseline + 50  # importing torch alone costs far more than 50 MB
    assert "Assay's loader" in note and "torch" in note and "batch of 4" in note


def test_factory_model_is_measured_with_its_weights(tmp_path, monkeypatch):
    (tmp_path / "rss_nets.py").write_text("from torch import nn\n\ndef make():\n"
                                          "    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), "
                                          "nn.Linear(8, 3))\n")
    save_file(make_net().state_dict(), tmp_path / "w.safetensors")
    monkeypatch.chdir(tmp_path)
    model = load_model("rss_nets:make", weights="w.safetensors", sample=X[:2])
    profile = profile_model(model, X, batch_sizes=(2,), budget_s=0.05)
    assert profile.peak_rss_mb is not None and profile.peak_rss_mb > profile.rss_baseline_mb, profile.rss_note
    assert profile.model_files == [str(tmp_path / "w.safetensors")]
    # the child checks the weights it loads against the spec's sha256
    save_file({k: v + 1 for k, v in make_net().state_dict().items()}, tmp_path / "w.safetensors")
    peak, _, note = peak_rss_subprocess(model.spec(), X)
    assert peak is None and "not the one its spec describes" in note


def test_the_child_refuses_what_the_loader_refuses(exported, tmp_path):
    """A guard-code payload runs in torch.export's own loader (which the old child called directly) but not
    in the child, which loads through Assay's checks."""
    canary = tmp_path / "pwned"
    evil = rewrite_json(exported, tmp_path / "evil.pt2",
                        lambda doc: doc.__setitem__("guards_code", [_touch(canary) + " or True"]))
    _torch_runs(evil)
    assert canary.exists(), "torch no longer runs guards_code: revisit the audit"
    canary.unlink()
    peak, baseline, note = peak_rss_subprocess(ModelSpec(format="torch-export", path=str(evil)), X)
    assert peak is None and baseline is None and "guards_code" in note
    assert not canary.exists()


def test_a_fixed_batch_graph_is_measured_at_its_batch(tmp_path):
    program = torch.export.export(make_net(), (torch.from_numpy(X[:2]),))  # batch 2, not dynamic
    torch.export.save(program, tmp_path / "static.pt2")
    model = load_model(str(tmp_path / "static.pt2"), sample=X[:2])
    profile = profile_model(model, X, batch_sizes=(4,), budget_s=0.05)
    assert profile.peak_rss_mb is not None, profile.rss_note
    assert "batch of 2" in profile.rss_note
