"""profile_model end to end on a small exported model, the efficiency Section built from it, peak RSS in a
fresh process, and the energy estimate/measurement."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from assay.checks.efficiency import efficiency_section
from assay.models.export import export_onnx
from assay.models.loader import load_model
from assay.models.spec import ModelSpec
from assay.profiling.energy import (
    DEFAULT_WATTS_PER_CORE,
    energy_per_1000,
    measure_energy,
    rapl_available,
)
from assay.profiling.flops import FlopCount
from assay.profiling.latency import LatencyProfile, measure_latency
from assay.profiling.memory import peak_rss_subprocess
from assay.profiling.profile import EfficiencyProfile, profile_model
from assay.report.plots import render_plot
from conftest import LinearModel


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)  # 1x8x8 -> 4x8x8
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


TINY_MACS = 4 * 8 * 8 * 1 * 9 + 256 * 3
TINY_PARAMS = 4 * 9 + 4 + 256 * 3 + 3
PRICE = 0.36  # per hour
SAMPLE = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
LATENCY_KEYS = {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                "latency_p50_ms[batch=4]", "latency_p95_ms[batch=4]", "latency_p99_ms[batch=4]"}
OTHER_KEYS = {"throughput_per_s", "model_size_mb", "parameters", "flops", "peak_rss_mb", "energy_j_per_1000"}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("efficiency") / "tiny.onnx"
    export_onnx(TinyNet().eval(), torch.zeros(2, 1, 8, 8), path)
    return path


@pytest.fixture(scope="module")
def profile(tiny_onnx) -> EfficiencyProfile:
    model = load_model(tiny_onnx, threads=1, sample=SAMPLE[:2])
    return profile_model(model, SAMPLE, batch_sizes=(1, 4), budget_s=0.2, price_per_hour=PRICE)


def test_profile_records_what_it_measured(profile, tiny_onnx):
    assert profile.threads == 1 and "intra_op_num_threads" in profile.threads_source
    assert profile.model_size_mb == pytest.approx(os.path.getsize(tiny_onnx) / 2**20)
    assert profile.parameters == TINY_PARAMS
    assert profile.flops == 2 * TINY_MACS
    best = profile.latency.best
    assert profile.best_batch_size == best.batch_size
    assert profile.seconds_per_inference == pytest.approx(best.p50_ms / 1e3 / best.batch_size)
    assert profile.cost_per_million == pytest.approx(PRICE / 3600 * profile.seconds_per_inference * 1e6)
    assert f"batch {best.batch_size}" in profile.cost_note
    roundtrip = EfficiencyProfile.model_validate_json(profile.model_dump_json())
    assert roundtrip.latency.batch(4).p95_ms == profile.latency.batch(4).p95_ms


def test_peak_rss_is_measured_in_a_fresh_process(profile):
    assert profile.peak_rss_mb is not None and profile.rss_baseline_mb is not None
    assert profile.peak_rss_mb > profile.rss_baseline_mb > 0  # loading onnxruntime and the model costs memory
    assert "onnxruntime" in profile.rss_note


def test_rss_failure_is_reported_not_raised(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    peak, baseline, note = peak_rss_subprocess(ModelSpec(format="onnx", path=str(broken)), SAMPLE[:1])
    assert peak is None and baseline is None and "failed" in note and "not a valid ONNX model" in note


@pytest.mark.skipif(rapl_available(), reason="RAPL readable here: energy is measured, not estimated")
def test_energy_is_a_labelled_estimate_without_rapl(profile):
    assert profile.energy.method == "tdp-estimate"
    assert "ESTIMATE" in profile.energy.detail
    expected = DEFAULT_WATTS_PER_CORE * 1 * profile.seconds_per_inference * 1000
    assert profile.energy_j_per_1000 == pytest.approx(expected)


def test_section_has_exactly_the_documented_metrics(profile):
    section = efficiency_section(profile, 0.95)
    assert section.name == "efficiency" and section.verdict == "info"
    assert set(section.metrics) == LATENCY_KEYS | OTHER_KEYS | {"cost_per_million"}
    assert section.config["threads"] == 1 and section.config["batch_sizes"] == [1, 4]
    assert section.config["flop_convention"].startswith("FLOPs = 2 x MACs")
    assert section.config["energy_method"] == profile.energy.method
    assert section.config["isa_flags"] == profile.isa_flags and section.config["cpu_model"] == profile.cpu_model


def test_section_values_agree_with_the_profile(profile):
    m = efficiency_section(profile, 0.95).metrics
    one, four = profile.latency.batch(1), profile.latency.batch(4)
    assert (m["latency_p95_ms"].value, m["latency_p95_ms"].ci_low, m["latency_p95_ms"].ci_high) == \
        (one.p95_ms, one.p95_ci_low_ms, one.p95_ci_high_ms)
    assert m["latency_p50_ms[batch=4]"].value == four.p50_ms and m["latency_p50_ms"].n == one.n_runs
    best = profile.latency.best
    assert m["throughput_per_s"].value == best.throughput_per_s
    assert m["throughput_per_s"].config["batch_size"] == best.batch_size
    assert m["model_size_mb"].value == profile.model_size_mb
    assert m["parameters"].value == TINY_PARAMS and m["flops"].value == 2 * TINY_MACS
    assert m["peak_rss_mb"].value == profile.peak_rss_mb
    assert m["energy_j_per_1000"].value == profile.energy_j_per_1000
    cost = m["cost_per_million"]
    assert cost.value == pytest.approx(PRICE / 3600 * best.p50_ms / 1e3 / best.batch_size * 1e6)
    assert cost.ci_low <= cost.value <= cost.ci_high


def test_section_plots_follow_the_plot_contract(profile):
    section = efficiency_section(profile, 0.95)
    line = section.plots["latency_vs_batch"]
    assert line["kind"] == "line" and line["series"][0]["x"] == [1, 4]
    assert line["series"][0]["y_low"][0] == profile.latency.batch(1).p50_ci_low_ms
    for plot in section.plots.values():
        assert render_plot(plot).lstrip().startswith("<svg")


def test_intervals_widen_with_the_confidence_level(profile):
    narrow = efficiency_section(profile, 0.8).metrics["latency_p50_ms"]
    wide = efficiency_section(profile, 0.99).metrics["latency_p50_ms"]
    assert wide.ci_low <= narrow.ci_low <= narrow.value <= narrow.ci_high <= wide.ci_high
    assert "80%" in narrow.method
    # Read back from JSON the raw times are gone: the profiling level is kept and said.
    stored = EfficiencyProfile.model_validate_json(profile.model_dump_json())
    section = efficiency_section(stored, 0.8)
    assert "95%" in section.metrics["latency_p50_ms"].method
    assert any("profiling level" in f.message for f in section.findings)


# ------------------------------------------------------------------------------- deterministic profiles


def _fake_latency(sigma: float, batch_sizes: tuple[int, ...], max_runs: int) -> LatencyProfile:
    rng = np.random.default_rng(0)
    state = {"now": 0}

    def costs() -> Iterator[int]:
        while True:
            yield int(1e6 * rng.lognormal(0.0, sigma))

    stream = costs()

    def run(batch):
        state["now"] += next(stream)

    return measure_latency(run, SAMPLE, batch_sizes=batch_sizes, max_runs=max_runs, budget_s=1e6,
                           clock=lambda: state["now"], threads=2)


def _profile_from(latency: LatencyProfile, **fields) -> EfficiencyProfile:
    best = latency.best
    spi = best.seconds_per_inference
    energy = energy_per_1000(spi, 2)
    base = {
        "model_path": None, "model_format": "onnx", "latency": latency, "threads": 2, "threads_source": "test",
        "model_size_mb": None, "model_size_note": "no model file (in-memory model)", "parameters": None,
        "parameters_convention": "not counted", "flops": None,
        "flop_count": FlopCount(flops=None, macs=None, method="not counted: test"), "cpu_model": "Test CPU",
        "cpu_count": 2, "isa_flags": ["avx2"], "peak_rss_mb": None, "rss_baseline_mb": None,
        "rss_note": "not measured: no model file to load in a fresh process", "best_batch_size": best.batch_size,
        "seconds_per_inference": spi, "energy": energy, "energy_j_per_1000": energy.joules,
        "price_per_hour": None, "cost_per_million": None, "cost_note": None,
    }
    base.update(fields)
    return EfficiencyProfile(**base)


def test_imprecise_latency_is_a_warning_with_the_half_width():
    latency = _fake_latency(sigma=0.5, batch_sizes=(2, 16), max_runs=100)
    section = efficiency_section(_profile_from(latency), 0.95)
    # No batch 1 profiled: the smallest batch carries the unsuffixed keys.
    assert {"latency_p95_ms", "latency_p95_ms[batch=16]"} <= set(section.metrics)
    assert section.config["latency_batch_size"] == 2
    assert "cost_per_million" not in section.metrics
    warnings = [f for f in section.findings if f.severity == "warning"]
    expected = f"{latency.batch(2).p50_rel_halfwidth:.1%}"
    assert any("precision target not met" in f.message and expected in f.message for f in warnings)
    assert any(f.evidence == "efficiency.metrics.latency_p50_ms" for f in warnings)
    messages = " ".join(f.message for f in section.findings)
    assert "ESTIMATE" in messages and "peak memory not measured" in messages and "model size not measured" in messages
    assert section.metrics["model_size_mb"].value is None and section.metrics["flops"].value is None


def test_in_memory_models_get_reasons_instead_of_sizes():
    model = LinearModel(np.ones((64, 3), np.float32), np.zeros(3), (1, 8, 8))
    prof = profile_model(model, SAMPLE, batch_sizes=(1,), budget_s=0.05, threads=3)
    assert prof.threads == 3 and "not enforced" in prof.threads_source
    assert prof.model_size_mb is None and prof.peak_rss_mb is None and "no model file" in prof.rss_note
    assert prof.parameters is None and prof.flops is None and prof.cost_per_million is None


def test_torch_threads_are_set_for_the_measurement_and_restored():
    before = torch.get_num_threads()
    model = load_model("assay.demo:make_digits_cnn", sample=SAMPLE[:2], untrained=True)
    prof = profile_model(model, SAMPLE, batch_sizes=(1,), budget_s=0.05, threads=1, measure_rss=False)
    assert prof.threads == 1 and "torch.set_num_threads" in prof.threads_source
    assert torch.get_num_threads() == before
    # DigitsCNN: conv 16x8x8x(1x9) + conv 32x8x8x(16x9) + linear 512x64 + linear 64x10 MACs.
    assert prof.flops == 2 * (16 * 64 * 9 + 32 * 64 * 144 + 512 * 64 + 64 * 10)
    assert prof.rss_note == "not measured (measure_rss=False)"


def test_onnx_session_with_other_threads_is_reloaded(tiny_onnx):
    model = load_model(tiny_onnx, threads=2, sample=SAMPLE[:2])
    prof = profile_model(model, SAMPLE, batch_sizes=(1,), budget_s=0.05, threads=1, measure_rss=False)
    assert prof.threads == 1 and any("reloaded" in n for n in prof.notes)


# ------------------------------------------------------------------------------------------- energy


def test_energy_estimate_formula_and_label():
    est = energy_per_1000(0.002, 1, watts_per_core=10.0)
    assert est.method == "tdp-estimate" and est.joules == pytest.approx(10.0 * 1 * 0.002 * 1000)
    assert est.detail.startswith("ESTIMATE")
    many = energy_per_1000(0.002, 10_000)  # more threads than cores: busy cores are capped
    assert many.joules == pytest.approx(DEFAULT_WATTS_PER_CORE * (os.cpu_count() or 1) * 2.0)


def test_energy_is_measured_with_a_readable_rapl_counter(tmp_path):
    counter = tmp_path / "energy_uj"
    (tmp_path / "max_energy_range_uj").write_text("10000000\n")
    counter.write_text("9500000\n")  # 0.5 J before the counter wraps

    def run():  # each call of 10 inferences uses 2 J (2,000,000 uJ)
        value = int(counter.read_text())
        counter.write_text(f"{(value + 2_000_000) % 10_000_000}\n")

    est = measure_energy(run, 10, 1, min_seconds=0.0, rapl_path=tmp_path)
    assert est.method == "rapl" and est.joules == pytest.approx(2.0 / 10 * 1000)
    assert "RAPL" in est.detail


def test_without_rapl_the_estimate_uses_the_given_latency(tmp_path):
    calls = []
    est = measure_energy(lambda: calls.append(1), 8, 1, seconds_per_inference=0.001, rapl_path=tmp_path / "none")
    assert est.method == "tdp-estimate" and not calls
    assert est.joules == pytest.approx(DEFAULT_WATTS_PER_CORE * 0.001 * 1000)
