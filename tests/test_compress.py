"""`assay compress` end to end on the demo CNN: audit, slow-variant detection, exemplars, outputs, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from assay.cli import main
from assay.compress import run as compress_run
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.models.export import export_onnx


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    train, test = load_data("digits:train"), load_data("digits:test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = train_digits_cnn(train.x, train.y, epochs=8)
    finally:
        torch.set_num_threads(threads)
    export_onnx(net, torch.from_numpy(test.x[:2]), root / "cnn.onnx", class_names=test.class_names)
    save_file(net.state_dict(), root / "cnn.safetensors")
    return root


def _predict(path, x, batch=256):
    """Predictions straight from onnxruntime, in the engine's batches: dynamic quantization computes its
    activation scale per batch, so a sample's prediction can depend on the batch it sits in."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)])


def test_compress_audits_variants_and_never_recommends_the_slow_one(demo, tmp_path):
    out = tmp_path / "out"
    result = compress_run.compress(str(demo / "cnn.onnx"), "digits:test", calibration="digits:train",
                                   methods=["int8-static-minmax", "int8-dynamic-all"], out=out, latency_budget_s=0.5,
                                   n_bootstrap=200, cache_dir=False)
    audits = {a.name: a for a in result.variants}
    assert set(audits) == {"fp32", "int8-static-minmax", "int8-dynamic-all"}
    slow = audits["int8-dynamic-all"]
    # ConvInteger is ~10x slower than float32 Conv here: detected from timings, explained from the graph.
    assert slow.speedup[32] < 0.7 and not slow.faster and slow.status == "slower"
    assert any("ConvInteger" in reason for reason in slow.slow_reasons)
    assert result.recommended != "int8-dynamic-all" and audits["fp32"].status == "reference"
    # Static int8 keeps accuracy within a point of the original (paired delta on the same samples).
    assert abs(audits["int8-static-minmax"].comparison.metrics["accuracy_delta"].value) <= 0.01
    # Compression-identified exemplars are exactly the samples whose prediction changed.
    test = load_data("digits:test")
    original = _predict(demo / "cnn.onnx", test.x)
    for audit in audits.values():
        expected = np.flatnonzero(original != _predict(audit.path, test.x))
        np.testing.assert_array_equal(audit.changed, expected)
    with open(out / "exemplars.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(a.changed) for a in result.variants)
    summary = json.loads((out / "compression.json").read_text())
    assert summary["exemplars"]["int8-dynamic-all"] == audits["int8-dynamic-all"].changed.tolist()
    assert sorted(p.name for p in (out / "variants").iterdir()) == sorted(f"{n}.onnx" for n in audits)
    html = (out / "report.html").read_text()
    assert "Pareto" in html and "ConvInteger" in html and "<script" not in html
    assert (out / "compression.md").read_text().startswith("## Assay compression")


def test_the_recommended_variant_is_written_with_its_evidence(demo, tmp_path, monkeypatch):
    """Output contract of a recommendation (the judgement itself is timing-based; forced here)."""
    judge = compress_run._judge

    def always_eligible(audit, *args, **kwargs):
        judge(audit, *args, **kwargs)
        if audit.name == "int8-static-minmax":
            audit.faster, audit.feasible, audit.status = True, True, "eligible"

    monkeypatch.setattr(compress_run, "_judge", always_eligible)
    out = tmp_path / "out"
    result = compress_run.compress(str(demo / "cnn.onnx"), "digits:test", calibration="digits:train",
                                   methods=["int8-static-minmax"], out=out, latency_budget_s=0.2, n_bootstrap=100,
                                   cache_dir=False)
    assert result.recommended == "int8-static-minmax"
    assert (out / "model.onnx").read_bytes() == (out / "variants" / "int8-static-minmax.onnx").read_bytes()
    evidence = json.loads((out / "evidence" / "evidence.json").read_text())
    assert evidence["sections"]["performance"]["metrics"]["accuracy"]["value"] > 0.9
    assert (out / "evidence" / "predictions.npz").exists()


def test_pruning_path_for_torch_models(demo, tmp_path):
    result = compress_run.compress("assay.demo:make_digits_cnn", "digits:test", calibration="digits:train",
                                   methods=["prune"], prune_ratios=[0.5], out=None, latency_budget_s=0.2,
                                   n_bootstrap=100, cache_dir=False,
                                   model_options={"weights": str(demo / "cnn.safetensors")})
    pruned = next(a for a in result.variants if a.name.startswith("pruned"))
    assert pruned.row()["flops"] <= 0.6 * result.original["flops"]  # >= 40% fewer counted FLOPs


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-accuracy-drop", "1.5"], "max_accuracy_drop must be a fraction"),
    (["--max-class-drop", "-0.1"], "max_class_drop must be a fraction"),
    (["--methods", "prune"], "ONNX"),
    (["--methods", "int9"], "unknown"),
    (["--batch-sizes", "0"], "batch sizes must be positive"),
])
def test_compress_bad_input_exits_2(demo, tmp_path, capsys, extra, message):
    code = main(["compress", str(demo / "cnn.onnx"), "--data", "digits:test", "--calibration", "digits:train",
                 "--out", str(tmp_path / "out"), "--no-cache", "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_calibration_of_the_wrong_shape(demo, tmp_path, capsys):
    np.savez(tmp_path / "calib.npz", x=np.zeros((20, 1, 9, 9), np.float32))
    code = main(["compress", str(demo / "cnn.onnx"), "--data", "digits:test", "--calibration",
                 str(tmp_path / "calib.npz"), "--out", str(tmp_path / "out"), "--no-cache", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "calibration" in err and "(1, 9, 9)" in err


def test_per_slice_damage_and_section_deltas(demo, tmp_path):
    result = compress_run.compress(str(demo / "cnn.onnx"), "digits:test", calibration="digits:train",
                                   methods=["int8-static-entropy"], out=None, latency_budget_s=0.2, n_bootstrap=100,
                                   cache_dir=False, slice_by=["ink"])
    audit = next(a for a in result.variants if a.name == "int8-static-entropy")
    assert set(audit.comparison.per_slice) == {"ink"}
    row = audit.row()
    assert row["worst_slice"].startswith("ink=")
    expected = row["ece_after_temperature"] - audit.original_evidence.sections["calibration"].metrics[
        "ece_after_temperature"].value
    assert row["ece_after_temperature_delta"] == pytest.approx(expected)


def test_compress_cli_end_to_end(demo, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compress", str(demo / "cnn.onnx"), "--data", "digits:test", "--calibration", "digits:train",
                 "--methods", "int8-static-minmax,fp16", "--latency-budget", "0.2", "--batch-sizes", "1,8",
                 "--n-bootstrap", "100", "--no-cache", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "int8-static-minmax" in printed and "fp16" in printed and "Report:" in printed
    summary = json.loads((out / "compression.json").read_text())
    assert summary["ranking_batch"] == 8 and {v["variant"] for v in summary["variants"]} == {
        "fp32", "int8-static-minmax", "fp16"}
    assert all(v["status"] for v in summary["variants"])
    assert (out / "model.onnx").exists() == (summary["recommended"] is not None)


def _fixed_timings(p50_ms: dict[str, float]):
    """A stand-in for the interleaved timing with fixed per-model times (deterministic verdicts)."""
    from assay.profiling.latency import summarize_times

    def timings(models, sample, batch, **kwargs):
        jitter = np.linspace(0.99, 1.01, 200)
        return {name: summarize_times(p50_ms[name] * jitter, batch) for name in models}
    return timings


def test_fp32_copy_is_a_negative_control_for_timing_noise(demo, tmp_path, monkeypatch):
    """If the original happens to be timed slow, the identical fp32 copy exposes it: variants must beat the
    faster of the two, so a variant as fast as the copy is not 'faster'."""
    monkeypatch.setattr(compress_run, "interleaved_latency",
                        _fixed_timings({"original": 1.0, "fp32": 0.55, "int8-static-minmax": 0.55}))
    result = compress_run.compress(str(demo / "cnn.onnx"), "digits:test", calibration="digits:train",
                                   methods=["int8-static-minmax"], out=None, latency_budget_s=0.2, n_bootstrap=100,
                                   cache_dir=False)
    int8 = next(a for a in result.variants if a.name == "int8-static-minmax")
    assert not int8.faster and int8.speedup[32] == pytest.approx(1.0) and result.recommended is None
    assert any("timing noise" in r and "1.82x" in r for r in result.reasons)


def test_a_speed_up_without_mechanism_is_suspect(demo, tmp_path, monkeypatch):
    """fp16 on a CPU without hardware fp16 runs float32 kernels behind casts: if it measures faster anyway,
    the gain is a timing artefact and the variant is not recommended."""
    from assay.environment import cpu_model_and_flags

    if any(flag in cpu_model_and_flags()[1] for flag in ("avx512_fp16", "amx_fp16")):
        pytest.skip("this CPU computes fp16 natively")
    monkeypatch.setattr(compress_run, "interleaved_latency",
                        _fixed_timings({"original": 1.0, "fp32": 1.0, "fp16": 0.3}))
    result = compress_run.compress(str(demo / "cnn.onnx"), "digits:test", calibration="digits:train",
                                   methods=["fp16"], out=None, latency_budget_s=0.2, n_bootstrap=100, cache_dir=False)
    fp16 = next(a for a in result.variants if a.name == "fp16")
    assert fp16.speedup[32] > 3 and fp16.status == "suspect" and result.recommended is None
    assert any("fp16" in reason for reason in fp16.slow_reasons)


# --------------------------------------------------------------------------- issue 10: calibration and failures


def _cli_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "Fix:" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(("methods", "message"), [
    ("int9", "unknown method 'int9'"),
    ("fp16,int9", "unknown method 'int9'"),
    ("int8-static-percentile", "no calibration data for static int8 quantization (int8-static-percentile)"),
    ("int8-static,fp16", "no calibration data"),
])
def test_whole_run_input_is_refused_up_front_without_calibration(demo, tmp_path, capsys, monkeypatch, methods,
                                                                 message):
    """No --calibration: an unknown method is named as such (not as missing calibration), static int8 asks
    for calibration; both before any data is read or model built."""
    from assay.compress import variants as variants_module

    def no_work(*args, **kwargs):
        raise AssertionError("variants were built")

    monkeypatch.setattr(variants_module, "make_variants", no_work)
    code = main(["compress", str(demo / "cnn.onnx"), "--data", "digits:test", "--methods", methods,
                 "--out", str(tmp_path / "out"), "--no-cache", "-q"])
    err = _cli_error(capsys)
    assert code == 2 and message in err
    if "unknown" in message:
        assert "calibration" not in err and "int8-static-entropy" in err and "int8-dynamic-all" in err
    else:  # the flag the command has today, never the old --calibration
        assert "pass --quantization-data DATA" in err and "--calibration " not in err
    assert not (tmp_path / "out").exists()


def test_fp16_needs_no_calibration(demo, tmp_path):
    out = tmp_path / "out"
    code = main(["compress", str(demo / "cnn.onnx"), "--data", "digits:test", "--methods", "fp16",
                 "--latency-budget", "0.2", "--latency-batch-sizes", "1,8", "--n-bootstrap", "100", "--out", str(out),
                 "--quantization-data", "digits:train", "--no-cache", "-q"])
    assert code == 0
    report = json.loads((out / "compression.json").read_text())
    rows = {v["variant"]: v for v in report["variants"]}
    assert set(rows) == {"fp32", "fp16"} and rows["fp16"]["status"] != "failed"
    assert abs(rows["fp16"]["accuracy_delta"]) <= 0.01
    # The unused quantization data is named by today's flag (and the Python parameter), not the old --calibration.
    assert ("the quantization data (--quantization-data, calibration=) was not used: only the int8-static methods "
            "calibrate") in report["reasons"]


def test_odd_calibration_size_and_one_failed_variant(demo, tmp_path, monkeypatch):
    """257 calibration samples (not a multiple of the calibration batch) build int8-static-percentile; fp16,
    broken here, is reported as failed in every output while the run goes on (exit 0)."""
    from onnxruntime.transformers import float16

    def broken(*args, **kwargs):
        raise ValueError("unsupported op")

    monkeypatch.setattr(float16, "convert_float_to_float16", broken)
    np.savez(tmp_path / "calib.npz", x=load_data("digits:train").x[:257])
    out = tmp_path / "out"
    code = main(["compress", str(demo / "cnn.onnx"), "--data", "digits:test", "--calibration",
                 str(tmp_path / "calib.npz"), "--methods", "int8-static-percentile,fp16", "--latency-budget", "0.2",
                 "--batch-sizes", "1,8", "--n-bootstrap", "100", "--out", str(out), "--no-cache", "-q"])
    assert code == 0
    summary = json.loads((out / "compression.json").read_text())
    rows = {v["variant"]: v for v in summary["variants"]}
    assert list(rows) == ["fp32", "int8-static-percentile", "fp16"]
    failure = "building the fp16 variant failed: ValueError: unsupported op"
    assert rows["fp16"]["status"] == "failed" and rows["fp16"]["verdict"] == f"failed: {failure}"
    assert rows["fp16"]["accuracy"] is None and summary["recommended"] != "fp16"
    int8 = rows["int8-static-percentile"]
    assert int8["status"] != "failed" and "all 257 calibration samples in 257 batch(es) of 1" in int8["notes"][0]
    assert abs(int8["accuracy"] - summary["original"]["accuracy"]) <= 0.02
    assert f"failed: {failure}" in (out / "compression.md").read_text()
    assert f"failed: {failure}" in (out / "report.html").read_text()
    assert sorted(p.name for p in (out / "variants").iterdir()) == ["fp32.onnx", "int8-static-percentile.onnx"]


def test_a_variant_that_fails_to_load_or_time_is_never_recommended(demo, monkeypatch):
    """Failures after the build (loading, timing) fail that variant only; even a judge that finds every
    variant eligible never sees them."""
    from assay.models import loader
    from assay.profiling.latency import summarize_times

    load = loader.load_model

    def load_model(spec, *args, **kwargs):
        if str(spec).endswith("fp16.onnx"):
            raise RuntimeError("cannot load\ndetails")
        return load(spec, *args, **kwargs)

    def timings(models, sample, batch, failures=None, **kwargs):
        failures["int8-dynamic"] = "RuntimeError: timing broke"
        times = {"original": 1.0, "fp32": 1.0, "int8-static-minmax": 0.5}
        return {name: summarize_times(times[name] * np.linspace(0.99, 1.01, 200), batch) for name in times}

    judge = compress_run._judge

    def always_eligible(audit, *args, **kwargs):
        judge(audit, *args, **kwargs)
        audit.faster, audit.feasible, audit.status = True, True, "eligible"

    monkeypatch.setattr(loader, "load_model", load_model)
    monkeypatch.setattr(compress_run, "interleaved_latency", timings)
    monkeypatch.setattr(compress_run, "_judge", always_eligible)
    result = compress_run.compress(str(demo / "cnn.onnx"), "digits:test", calibration="digits:train",
                                   methods=["fp16", "int8-dynamic", "int8-static-minmax"], out=None,
                                   latency_budget_s=0.2, batch_sizes=(1, 8), n_bootstrap=100, cache_dir=False)
    audits = {a.name: a for a in result.variants}
    assert audits["fp16"].verdict == "failed: loading the fp16 variant failed: RuntimeError: cannot load"
    assert audits["int8-dynamic"].verdict == ("failed: timing the int8-dynamic variant failed: "
                                              "RuntimeError: timing broke")
    assert audits["int8-dynamic"].row()["accuracy"] is not None  # audited before the timing failed
    assert all(audits[n].status == "failed" and not audits[n].feasible for n in ("fp16", "int8-dynamic"))
    assert result.recommended == "int8-static-minmax"


def test_console_summary_shows_a_failed_variant(demo, tmp_path, monkeypatch, capsys):
    from onnxruntime.transformers import float16

    def broken(*args, **kwargs):
        raise ValueError("unsupported op")

    monkeypatch.setattr(float16, "convert_float_to_float16", broken)
    code = main(["compress", str(demo / "cnn.onnx"), "--data", "digits:test", "--methods", "fp16,int8-dynamic",
                 "--latency-budget", "0.2", "--batch-sizes", "1,8", "--n-bootstrap", "100",
                 "--out", str(tmp_path / "out"), "--no-cache"])
    printed = " ".join(capsys.readouterr().out.split())  # no dependence on console line wrapping
    assert code == 0 and "fp16: failed: building the fp16 variant failed: ValueError: unsupported op" in printed
