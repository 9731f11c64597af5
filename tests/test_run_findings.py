"""Run-level findings: what every report must say whatever section runs (how the data was read, class
order, untrained models, accuracy at chance)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from assay.cli import main
from assay.models.export import export_onnx


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An ONNX model on 1x4x4 images that is right on 90% of a labelled set in [0, 1]."""
    root = tmp_path_factory.mktemp("findings")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    path = export_onnx(net, torch.zeros(2, 1, 4, 4), root / "img.onnx")
    rng = np.random.default_rng(0)
    x = rng.random((300, 1, 4, 4)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    return path, x, y


def _evaluate(model: Path, data: Path, out: Path, *extra: str) -> dict:
    code = main(["evaluate", str(model), "--data", str(data), "--out", str(out), "--no-cache", "-q",
                 "--n-bootstrap", "100", *extra])
    assert code == 0
    return json.loads((out / "evidence.json").read_text())


def test_uint8_images_are_scaled_with_an_info_finding(image_model, tmp_path):
    model, x, y = image_model
    data = tmp_path / "u8.npz"
    np.savez(data, x=np.round(x * 255).astype(np.uint8), y=y)
    evidence = _evaluate(model, data, tmp_path / "out")
    notes = [f for f in evidence["findings"] if "uint8" in f["message"]]
    assert len(notes) == 1 and notes[0]["severity"] == "info"
    assert evidence["sections"]["performance"]["metrics"]["accuracy"]["value"] > 0.9  # scaled: same predictions
    html = (tmp_path / "out" / "report.html").read_text()
    assert "divided by 255" in html and "divided by 255" in (tmp_path / "out" / "report.md").read_text()


def test_float_images_outside_0_1_are_a_warning_in_every_report(image_model, tmp_path):
    model, x, y = image_model
    data = tmp_path / "f255.npz"
    np.savez(data, x=x * 255, y=y)
    evidence = _evaluate(model, data, tmp_path / "out")
    warnings = [f for f in evidence["findings"] if f["severity"] == "warning" and "outside [0, 1]" in f["message"]]
    assert len(warnings) == 1
    for report in ("report.html", "report.md"):
        assert "were given to the model unchanged" in (tmp_path / "out" / report).read_text()


def _onnx_with_names(net: torch.nn.Module, example: torch.Tensor, path: Path, names: list[str]) -> Path:
    return export_onnx(net, example, path, class_names=names)


def test_labels_follow_the_model_s_declared_class_order(tmp_path):
    """A correct model whose metadata lists its outputs as 9..0 scored 0.007 on 0..9-labelled data: labels
    are now matched to outputs by name, and the evidence records the model's own names."""
    from assay.data.loader import load_data

    test = load_data("digits:test")
    x = test.x.reshape(len(test.x), -1)
    y = test.y
    # A nearest-class-mean classifier whose outputs are in reverse class order (9..0).
    means = np.stack([x[y == c].mean(0) for c in range(10)])[::-1].copy()
    net = torch.nn.Linear(64, 10)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(means))
        net.bias.copy_(torch.from_numpy(-0.5 * (means**2).sum(1)))
    model = _onnx_with_names(net, torch.zeros(2, 64), tmp_path / "rev.onnx", [str(c) for c in range(9, -1, -1)])
    data = tmp_path / "digits.npz"
    np.savez(data, x=x, y=y, class_names=np.array([str(c) for c in range(10)]))
    with torch.no_grad():
        expected = float((9 - net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    evidence = _evaluate(model, data, tmp_path / "out")
    accuracy = evidence["sections"]["performance"]["metrics"]["accuracy"]["value"]
    assert accuracy == pytest.approx(expected) and accuracy > 0.85
    assert evidence["model"]["class_names"] == [str(c) for c in range(9, -1, -1)]
    assert evidence["data"]["class_names"] == evidence["model"]["class_names"]
    assert any("matched to the model's by name" in f["message"] for f in evidence["findings"])


def test_disagreeing_class_names_are_refused_with_both_lists(tmp_path, capsys):
    net = torch.nn.Linear(4, 3)
    model = _onnx_with_names(net, torch.zeros(2, 4), tmp_path / "m.onnx", ["cat", "dog", "bird"])
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((6, 4), np.float32), y=np.array([0, 1, 2, 0, 1, 2]),
             class_names=np.array(["cat", "dog", "fish"]))
    code = main(["evaluate", str(model), "--data", str(data), "--out", str(tmp_path / "o"), "--no-cache", "-q"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err and "Fix:" in err
    assert "[cat, dog, bird]" in err and "[cat, dog, fish]" in err and "fish" in err
    assert not (tmp_path / "o").exists()


def test_a_factory_needs_weights_or_untrained(tmp_path, capsys):
    from assay.data.loader import load_data

    data = tmp_path / "d.npz"
    test = load_data("digits:test")
    np.savez(data, x=test.x[:100], y=test.y[:100])
    args = ["evaluate", "assay.demo:make_digits_cnn", "--data", str(data), "--no-cache", "-q", "--n-bootstrap", "100"]
    code = main([*args, "--out", str(tmp_path / "a")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "random initial weights" in err and "--untrained" in err
    evidence = _evaluate("assay.demo:make_digits_cnn", data, tmp_path / "b", "--untrained")
    assert evidence["model"]["untrained"] is True
    assert any("untrained" in f["message"] and f["severity"] == "warning" for f in evidence["findings"])


def test_accuracy_at_chance_is_a_critical_finding_pointing_at_label_order(tmp_path):
    """An image folder whose classes the model knows in another order: the sorted-folder-order note and a
    critical chance-level finding that names --class-names."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    # Class "a" images are dark, class "b" bright; the model's output 0 is "bright", 1 is "dark".
    for label, level in (("a", 0.1), ("b", 0.9)):
        (root / label).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(level + rng.normal(0, 0.05, (4, 4)), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / label / f"{i}.png")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0] * 16, [-1.0] * 16]))
        net[1].bias.copy_(torch.tensor([-8.0, 8.0]))
    model = export_onnx(net, torch.zeros(2, 1, 4, 4), tmp_path / "m.onnx")
    evidence = _evaluate(model, root, tmp_path / "out")
    performance = evidence["sections"]["performance"]
    assert performance["metrics"]["accuracy"]["value"] == 0.0
    chance = [f for f in performance["findings"] if "no better than chance" in f["message"]]
    assert len(chance) == 1 and chance[0]["severity"] == "critical" and "--class-names" in chance[0]["message"]
    assert performance["verdict"] == "fail"
    assert any("sorted folder names" in f["message"] for f in evidence["findings"])
    fixed = _evaluate(model, root, tmp_path / "fixed", "--class-names", "b,a")
    assert fixed["sections"]["performance"]["metrics"]["accuracy"]["value"] == 1.0
    assert not [f for f in fixed["sections"]["performance"]["findings"] if "chance" in f["message"]]
