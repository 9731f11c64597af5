"""Start-up cost: what ``import assay``, ``assay --help`` and the ONNX evaluate path load.

Each check runs in a fresh interpreter (a subprocess), because this test process has long since imported
everything. Only which modules get loaded is asserted, never how long it took.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "matplotlib", "onnxruntime", "onnx", "sklearn", "scipy", "pandas")


def _run(code: str, cwd: Path | None = None) -> dict:
    """Run ``code`` in a new interpreter; it must print one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


LOADED = f"sorted(m for m in {HEAVY!r} if m in sys.modules)"


def test_import_assay_loads_no_heavy_library():
    out = _run(f"""
        import json, sys
        import assay
        print(json.dumps({{"loaded": {LOADED}, "version": assay.__version__}}))
    """)
    assert out["loaded"] == []
    assert out["version"]


def test_cli_help_loads_no_heavy_library():
    out = _run(f"""
        import contextlib, io, json, sys
        from assay.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            code = main(["--help"])
        print(json.dumps({{"loaded": {LOADED}, "code": code, "help": buf.getvalue()}}))
    """)
    assert out["code"] == 0 and "evaluate" in out["help"]
    assert out["loaded"] == []


def test_public_names_load_on_first_use():
    import assay
    import assay.api
    import assay.evidence.schema
    from assay.errors import UserError

    assert assay.evaluate is assay.api.evaluate and assay.run_evaluation is assay.api.run_evaluation
    assert assay.Evidence is assay.evidence.schema.Evidence and assay.UserError is UserError
    assert set(assay.__all__) <= set(dir(assay))
    for name in assay.__all__:
        assert getattr(assay, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        assay.nonexistent  # noqa: B018


def test_environment_records_the_torch_version_without_importing_torch():
    torch = pytest.importorskip("torch")
    out = _run("""
        import json, sys
        from assay.environment import environment_info
        info = environment_info()
        print(json.dumps({"torch": info.torch, "imported": "torch" in sys.modules}))
    """)
    assert out == {"torch": torch.__version__, "imported": False}


def test_onnx_evaluate_path_needs_neither_torch_nor_matplotlib(tmp_path):
    """A plain ONNX model (built with onnx.helper: no torch anywhere), evaluated through the CLI with the
    default checks; the report is written (its plots included) and torch and matplotlib stay unloaded."""
    pytest.importorskip("onnx")
    out = _run(f"""
        import json, sys
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        w = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
        b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
        shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
        graph = helper.make_graph(
            [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])],
            "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w, b, shape])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, {str(tmp_path / "linear.onnx")!r})

        from assay.cli import main
        code = main(["evaluate", {str(tmp_path / "linear.onnx")!r}, "--data", "digits:test",
                     "--out", {str(tmp_path / "bundle")!r}, "--no-cache"])
        print(json.dumps({{"code": code, "torch": "torch" in sys.modules, "matplotlib": "matplotlib" in sys.modules}}))
    """)
    assert out == {"code": 0, "torch": False, "matplotlib": False}
    html = (tmp_path / "bundle" / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") >= 4  # per-class bars, confusion matrix, reliability diagram, histogram
