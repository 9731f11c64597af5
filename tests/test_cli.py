"""The CLI end to end: a good run, and every kind of bad input (exit 2, clear message, no traceback,
no partial output directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from assay.cli import main
from assay.demo import DigitsCNN, train_digits_cnn
from assay.evidence.schema import SCHEMA_VERSION
from assay.models.export import export_onnx


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    """A quickly trained DigitsCNN exported to ONNX."""
    from assay.data.loader import load_data

    train = load_data("digits:train")
    net = train_digits_cnn(train.x, train.y, epochs=3)
    path = tmp_path_factory.mktemp("models") / "digits.onnx"
    export_onnx(net, torch.from_numpy(train.x[:2]), path, class_names=train.class_names)
    return path


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_user_error(code: int, err: str, out_dir: Path, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("Error:"), err
    flat = " ".join(err.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {flat!r}"
    assert "Fix:" in flat
    assert not out_dir.exists(), "no partial output may be left behind"
    assert not list(out_dir.parent.glob(f".{out_dir.name}.tmp-*"))


def test_evaluate_writes_bundle(digits_model, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, stdout, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out),
                              "--cache-dir", str(tmp_path / "cache"), "--n-bootstrap", "200"], capsys)
    assert code == 0, err
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["schema_version"] == SCHEMA_VERSION
    acc = evidence["sections"]["performance"]["metrics"]["accuracy"]
    assert 0.5 < acc["value"] <= 1 and acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert "ece" in evidence["sections"]["calibration"]["metrics"]
    with np.load(out / "predictions.npz") as z:
        assert z["logits"].shape == (evidence["data"]["n"], 10)
        assert len(z["labels"]) == len(z["ids"]) == evidence["data"]["n"]
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Performance" in html
    assert (out / "report.md").exists()
    assert "accuracy" in stdout.lower()


def test_schema_command_prints_json_schema(capsys):
    code, out, _ = _run(["schema"], capsys)
    schema = json.loads(out)
    assert code == 0 and "sections" in schema["properties"] and "schema_version" in schema["properties"]


def test_missing_model_file(tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(tmp_path / "nope.onnx"), "--data", "digits", "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "nope.onnx")


def test_missing_data_file(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", str(tmp_path / "nope.npz"),
                         "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "nope.npz")


def test_random_bytes_onnx(tmp_path, capsys):
    bad = tmp_path / "random.onnx"
    bad.write_bytes(os.urandom(2048))
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(bad), "--data", "digits", "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "random.onnx", "ONNX")


def test_input_shape_mismatch_names_both_shapes(digits_model, tmp_path, capsys):
    data = tmp_path / "big.npz"
    np.savez(data, x=np.random.default_rng(0).random((20, 1, 10, 10)).astype(np.float32), y=np.zeros(20, int))
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "(1, 8, 8)", "(1, 10, 10)")


def test_labels_out_of_range(digits_model, tmp_path, capsys):
    data = tmp_path / "labels.npz"
    y = np.arange(20) % 10
    y[3] = 12
    np.savez(data, x=np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32), y=y)
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "outside [0, 10)", "12")


def test_nan_inputs(digits_model, tmp_path, capsys):
    x = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
    x[5, 0, 2, 2] = np.nan
    data = tmp_path / "nan.npz"
    np.savez(data, x=x, y=np.arange(20) % 10)
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "NaN", "rows [5]")


def test_empty_dataset(digits_model, tmp_path, capsys):
    data = tmp_path / "empty.npz"
    np.savez(data, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, int))
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "empty")


class _SoftmaxNet(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


def test_probabilities_as_logits_refused_then_accepted(tmp_path, capsys):
    from assay.data.loader import load_data

    train = load_data("digits:train")
    net = train_digits_cnn(train.x, train.y, epochs=2)
    path = tmp_path / "softmax.onnx"
    export_onnx(_SoftmaxNet(net).eval(), torch.from_numpy(train.x[:2]), path)
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(path), "--data", "digits", "--out", str(out), "--no-cache"], capsys)
    _assert_user_error(code, err, out, "probabilities", "--outputs probabilities")
    code, _, err = _run(["evaluate", str(path), "--data", "digits", "--out", str(out), "--no-cache",
                         "--outputs", "probabilities", "--n-bootstrap", "100", "-q"], capsys)
    assert code == 0, err
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["model"]["outputs"] == "probabilities"


def test_pickled_full_module_refused(tmp_path, capsys):
    path = tmp_path / "full.pt"
    torch.save(DigitsCNN(), path)
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(path), "--data", "digits", "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "pickle", "safetensors")


def test_bad_option_value(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out),
                         "--confidence", "1.5"], capsys)
    _assert_user_error(code, err, out, "--confidence")


def test_existing_bundle_survives_a_failed_run(digits_model, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "-q",
                         "--n-bootstrap", "100", "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0, err
    before = (out / "evidence.json").read_text()
    code, _, err = _run(["evaluate", str(tmp_path / "missing.onnx"), "--data", "digits", "--out", str(out)], capsys)
    assert code == 2
    assert (out / "evidence.json").read_text() == before


def test_console_script_subprocess_exit_codes(tmp_path):
    """The installed entry point itself: a user error exits 2 with a one-line message."""
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "assay.cli", "evaluate", str(tmp_path / "x.onnx"), "--data",
                           "digits", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "x.onnx" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "assay.cli", "evaluate"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Missing" in proc.stderr


def test_white_box_attack_on_onnx_offers_blackbox(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--adversarial",
                         "quick"], capsys)
    _assert_user_error(code, err, out, "--adversarial blackbox", "gradients")


def test_bad_eps(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--adversarial",
                         "blackbox", "--eps", "8/two"], capsys)
    _assert_user_error(code, err, out, "--eps", "8/255")


def test_unknown_corruption_lists_valid_ones(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--corruptions",
                         "gaussian_noize"], capsys)
    _assert_user_error(code, err, out, "gaussian_noize", "gaussian_noise")


def test_corruption_of_another_modality(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--corruptions",
                         "keyboard_typo"], capsys)
    _assert_user_error(code, err, out, "is a text corruption")


def test_bad_severities(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--corruptions",
                         "contrast", "--severities", "2-9"], capsys)
    _assert_user_error(code, err, out, "--severities")


def test_suite_standard_end_to_end(digits_model, tmp_path, capsys):
    out = tmp_path / "std"
    code, stdout, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--suite",
                              "standard", "--severities", "1,5", "--n-bootstrap", "100", "--no-cache"], capsys)
    assert code == 0, err
    evidence = json.loads((out / "evidence.json").read_text())
    section = evidence["sections"]["corruption"]
    assert len(section["tables"]["per_corruption"]) == 15  # the standard ImageNet-C types
    assert not any(r["held_out"] for r in section["tables"]["per_corruption"])
    html = (out / "report.html").read_text()
    assert "Corruption robustness" in html and "data:image/png;base64," in html
    assert (out / "report.html").stat().st_size < 3 * 2**20


def test_several_corruptions_by_name(digits_model, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--corruptions",
                         "fog, contrast", "--severities", "2", "--n-bootstrap", "100", "-q", "--no-cache"], capsys)
    assert code == 0, err
    rows = json.loads((out / "evidence.json").read_text())["sections"]["corruption"]["tables"]["per_view"]
    assert [(r["corruption"], r["severity"]) for r in rows] == [("fog", 2), ("contrast", 2)]


def test_user_text_is_never_console_markup_or_emoji(digits_model, tmp_path, capsys):
    """Paths with Rich markup (`[/]`, `[bold]`) and emoji codes (`:fire:`) print literally, in errors and in
    the success message."""
    missing = tmp_path / "no[/]such [bold]:fire:.npz"
    code, _, err = _run(["evaluate", str(digits_model), "--data", str(missing), "--out", str(tmp_path / "o")], capsys)
    flat = "".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "no[/]such[bold]:fire:.npz" in flat and "\U0001f525" not in err
    out = tmp_path / "out [/] :fire:"
    code, stdout, err = _run(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--n-bootstrap",
                              "100", "--no-cache"], capsys)
    assert code == 0, err
    assert "out[/]:fire:" in "".join(stdout.split()) and "\U0001f525" not in stdout  # wrapping moves spaces


# ------------------------------------------------------------------ shared options, parameter names -> flags
SHARED_FLAGS = ("--seed", "--n-bootstrap", "--confidence", "--cache-dir", "--no-cache", "--quiet", "--threads",
                "--force", "--weights", "--untrained")


def test_no_option_is_declared_twice():
    """Shared options are declared once (cli.py's option blocks): no two typer.Option/Argument calls in cli.py
    have the same text."""
    import ast
    import collections

    import assay.cli

    tree = ast.parse(Path(assay.cli.__file__).read_text(encoding="utf-8"))
    calls = [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr in ("Option", "Argument")]
    assert len(calls) > 50
    assert [c for c, n in collections.Counter(calls).items() if n > 1] == []


def test_shared_options_read_the_same_in_every_command():
    """--seed, --n-bootstrap, --cache-dir, ... have one help text and one help panel wherever they appear."""
    import typer

    from assay.cli import app

    group = typer.main.get_command(app)
    seen: dict[str, set[tuple]] = {flag: set() for flag in SHARED_FLAGS}
    users: dict[str, list[str]] = {flag: [] for flag in SHARED_FLAGS}
    for name, command in group.commands.items():
        for param in command.params:
            for flag in set(param.opts) & set(SHARED_FLAGS):
                seen[flag].add((param.name, param.help, param.rich_help_panel, tuple(param.opts)))
                users[flag].append(name)
    for flag in SHARED_FLAGS:
        assert len(seen[flag]) == 1, (flag, seen[flag])
    assert len(users["--seed"]) >= 5 and len(users["--n-bootstrap"]) >= 4 and len(users["--threads"]) >= 3


def test_evaluate_help_groups_options_in_panels():
    import typer

    from assay.cli import app

    params = {p.name: p for p in typer.main.get_command(app).commands["evaluate"].params}
    panels = {p.rich_help_panel for p in params.values() if p.param_type_name == "option"}
    assert {"Data", "Model", "Robustness", "OOD", "Slices & fairness", "Efficiency", "Statistics",
            "Output"} <= panels
    assert params["n_bootstrap"].rich_help_panel == "Statistics" and params["ood"].rich_help_panel == "OOD"
    assert params["sensitive"].rich_help_panel == "Slices & fairness"
    assert params["attacks"].rich_help_panel == "Robustness" and params["data"].rich_help_panel == "Data"


def test_evaluate_help_renders_the_panels(capsys):
    code = main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert code == 0
    for title in ("Data", "Model", "Robustness", "OOD", "Slices & fairness", "Efficiency", "Statistics", "Output"):
        assert f"─ {title} ─" in out, title
    assert out.index("─ Statistics ─") < out.index("--n-bootstrap") < out.index("─ Execution ─")


@pytest.mark.parametrize(("argv", "where", "shown"), [
    (["evaluate", "m.onnx", "--data", "d"], "n_bootstrap", "--n-bootstrap"),
    (["evaluate", "m.onnx", "--data", "d"], "checks", "--checks"),
    (["evaluate", "m.onnx", "--data", "d"], "out", "--out"),
    (["evaluate", "m.onnx", "--data", "d"], "model", "MODEL"),
    (["compress", "m.onnx", "--data", "d"], "latency_budget_s", "--latency-budget"),
    (["profile", "m.onnx"], "budget_s", "--budget"),
    (["profile", "m.onnx"], "json_out", "--json"),
    (["select", "a", "b", "--data", "d"], "constraints", "--constraint"),
    (["-q", "compare", "a", "b"], "seed", "--seed"),  # the command is the first word that is not a flag
    # left alone: paths, phrases, names another command has, a value the user typed, no command at all
    (["evaluate", "m.onnx", "--data", "d"], "/data/x.npz", "/data/x.npz"),
    (["evaluate", "m.onnx", "--data", "d"], "measure_latency", "measure_latency"),
    (["evaluate", "m.onnx", "--data", "d"], "budget_s", "budget_s"),
    (["compare", "a", "b"], "confidence", "confidence"),
    (["evaluate", "m.onnx", "--data", "data"], "data", "data"),
    (["evaluate", "m.onnx", "--data", "d"], None, None),
    ([], "seed", "seed"),
    (["no-such-command"], "seed", "seed"),
])
def test_where_names_the_flag_of_the_running_command(argv, where, shown):
    from assay.cli import cli_where

    assert cli_where(where, argv) == shown


def test_library_error_naming_a_parameter_prints_the_flag(tmp_path, capsys, monkeypatch):
    """A library error with where='n_bootstrap' reaches the user as 'Where: --n-bootstrap.'"""
    import assay.compare.run
    from assay.errors import OptionError

    def refuse(*args, **kwargs):
        raise OptionError("n_bootstrap must be at least 100", where="n_bootstrap", fix="use n_bootstrap >= 100")

    monkeypatch.setattr(assay.compare.run, "compare", refuse)
    out = tmp_path / "o"
    code, _, err = _run(["compare", "a", "b", "--out", str(out)], capsys)
    _assert_user_error(code, err, out, "n_bootstrap must be at least 100.", "Where: --n-bootstrap.")
    assert "Where: n_bootstrap" not in " ".join(err.split())


def test_evaluate_config_error_names_the_flag(tmp_path, capsys):
    """An out-of-range value checked by the run config names the flag (through the same mapping)."""
    out = tmp_path / "o"
    code, _, err = _run(["evaluate", "m.onnx", "--data", "digits", "--out", str(out), "--n-bootstrap", "5"], capsys)
    _assert_user_error(code, err, out, "greater than or equal to 100", "Where: --n-bootstrap.")


class _StopError(Exception):
    pass


@pytest.mark.parametrize(("module", "function", "argv", "derived"), [
    ("assay.compare.run", "compare", ["compare", "a", "b"], {"progress"}),
    ("assay.compare.run", "select", ["select", "a", "b", "--data", "digits"], {"progress", "evaluate_options"}),
    ("assay.compress.run", "compress", ["compress", "m.onnx", "--data", "digits", "--slice-by", "g"],
     {"progress", "model_options"}),
])
def test_cli_passes_library_parameters_under_their_own_names(module, function, argv, derived, tmp_path, capsys,
                                                            monkeypatch):
    """Every keyword the CLI hands the library function is the name of one of the command's parameters (or is
    built from several), so a library error naming that parameter maps back to its flag."""
    import importlib

    from assay.cli import _parameter_flags

    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise _StopError

    monkeypatch.setattr(importlib.import_module(module), function, record)
    main([*argv, "--out", str(tmp_path / "o")])
    capsys.readouterr()
    assert seen, "the library function was not called"
    flags = _parameter_flags(argv[0])
    assert set(seen) - derived <= set(flags), set(seen) - derived - set(flags)
