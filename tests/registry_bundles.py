"""Models and evidence bundles for the registry tests: tiny ONNX classifiers evaluated by ``assay.evaluate``
(real bundles, ~0.4 s each), and cheap variants of a bundle (one more line in report.md, manifest updated) for
tests that need many distinct versions of the same model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np


def make_onnx(path: Path, seed: int, *, external: bool = False) -> Path:
    """A 4-feature, 3-class linear classifier (Gemm) with weights drawn from ``seed``; ``external``: its weights
    in a ``.data`` file beside it (ONNX external data)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, path)
    return path


def make_data(path: Path, n: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(n, 4)).astype(np.float32), y=rng.integers(0, 3, n))
    return path


def evaluate(model: Path, data: Path, out: Path) -> Path:
    """A real evidence bundle of ``model`` on ``data`` (performance only, small bootstrap, no cache)."""
    import assay

    assay.evaluate(str(model), str(data), out=str(out), checks=["performance"], n_bootstrap=100, cache_dir=False)
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def variant_bundle(source: Path, dest: Path, tag: str) -> Path:
    """A copy of ``source`` whose report.md ends with ``tag`` (so its bytes differ), manifest updated."""
    shutil.copytree(source, dest)
    report = dest / "report.md"
    report.write_text(report.read_text(encoding="utf-8") + f"\n<!-- {tag} -->\n", encoding="utf-8")
    manifest = json.loads((dest / "assay-manifest.json").read_text())
    manifest["files"]["report.md"] = {"bytes": report.stat().st_size, "sha256": file_sha256(report)}
    (dest / "assay-manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


def rewrite_evidence(source: Path, dest: Path, **model_fields: object) -> Path:
    """A copy of ``source`` with ``evidence.json``'s ``model`` fields replaced (manifest updated): evidence
    for a model Assay did not evaluate here (a factory, another file)."""
    shutil.copytree(source, dest)
    evidence_path = dest / "evidence.json"
    evidence = json.loads(evidence_path.read_text())
    evidence["model"].update(model_fields)
    evidence_path.write_text(json.dumps(evidence, indent=2))
    manifest = json.loads((dest / "assay-manifest.json").read_text())
    manifest["files"]["evidence.json"] = {"bytes": evidence_path.stat().st_size, "sha256": file_sha256(evidence_path)}
    (dest / "assay-manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


class Bundles:
    """Three ONNX models (a, b, c) and their evaluated bundles, built once per session in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = make_data(root / "data.npz")
        self.models = {key: make_onnx(root / f"model_{key}.onnx", seed) for seed, key in enumerate("abc")}
        self.bundles = {key: evaluate(path, self.data, root / f"bundle_{key}") for key, path in self.models.items()}
        self._variants = 0

    def variant(self, key: str = "a") -> Path:
        """A new bundle of model ``key`` with different bytes."""
        self._variants += 1
        return variant_bundle(self.bundles[key], self.root / f"variant_{key}_{self._variants}",
                              f"variant {self._variants}")
