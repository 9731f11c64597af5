"""The CLI end to end: a good run, and every kind of bad input (exit 2, clear message, no traceback,
no partial output directory)."""

from __future__ import annotations

import json
import os
import re
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
from cli_helpers import assert_user_error, run_cli


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    """A quickly trained DigitsCNN exported to ONNX."""
    from assay.data.loader import load_data

    train = load_data("digits:train")
    net = train_digits_cnn(train.x, train.y, epochs=3)
    path = tmp_path_factory.mktemp("models") / "digits.onnx"
    export_onnx(net, torch.from_numpy(train.x[:2]), path, class_names=train.class_names)
    return path


_run = run_cli


def _assert_user_error(code: int, err: str, out_dir: Path, *fragments: str) -> None:
    """assert_user_error, and no output (nor a temporary one) left behind."""
    assert_user_error(code, err, *fragments)
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
    (["profile", "m.onnx"], "budget_s", "--latency-budget"),
    (["profile", "m.onnx"], "batch_sizes", "--latency-batch-sizes"),
    (["profile", "m.onnx"], "sample", "--data"),  # the library's sample is what profile reads from --data
    (["compress", "m.onnx", "--data", "d"], "calibration", "--quantization-data"),
    (["compress", "m.onnx", "--data", "d"], "max-accuracy-drop", "--max-accuracy-drop"),
    (["cache", "clear", "--older-than", "7x"], "older_than", "--older-than"),
    (["cache", "info"], "cache_dir", "--cache-dir"),
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
    (["cache"], "cache_dir", "cache_dir"),  # a group, not a command
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
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
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
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    main([*argv, "--out", str(tmp_path / "o")])
    capsys.readouterr()
    assert seen, "the library function was not called"
    flags = _parameter_flags(argv[0])
    assert set(seen) - derived <= set(flags), set(seen) - derived - set(flags)


# ------------------------------------------------------------------ issue 12 item 5: consistent words
ROOT = Path(__file__).parents[1]


def _commands() -> list[tuple[list[str], object]]:
    """Every command of the app as (words after `assay`, click command), groups walked into."""
    import typer

    from assay.cli import app

    def walk(command, path):
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield path, command
        else:
            for name, sub in subcommands.items():
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


@pytest.fixture(scope="module")
def torchscript_model(tmp_path_factory) -> Path:
    """A TorchScript model: it declares neither its input shape nor its number of classes."""
    import warnings

    path = tmp_path_factory.mktemp("ts") / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's: TorchScript files still load
        torch.jit.script(DigitsCNN().eval()).save(str(path))
    return path


def test_help_shows_flags_without_a_value_and_arguments_as_metavars(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    usages = {}
    for path in [[], ["cache"], *(p for p, _ in _commands())]:
        assert main([*path, "--help"]) == 0
        out = capsys.readouterr().out
        assert "<bool>" not in out, path
        usages[" ".join(path)] = " ".join(next(line for line in out.splitlines() if "Usage:" in line).split())
        assert "{" not in usages[" ".join(path)], usages[" ".join(path)]
        if path == ["compare"]:  # a flag's row runs from its name straight into its help text
            assert re.search(r"--fail-on-inconclusive +Exit 1 also", out) and re.search(r"-q +No progress bar", out)
            assert re.search(r"--policy +<path> +Gate policy", out)  # an option with a value keeps its type
    assert usages["compare"] == "Usage: assay compare [OPTIONS] BASELINE CANDIDATE"
    assert usages["select"] == "Usage: assay select [OPTIONS] MODELS..."
    assert usages["profile"] == "Usage: assay profile [OPTIONS] MODEL"
    assert usages["cache clear"] == "Usage: assay cache clear [OPTIONS]"
    assert usages["cache"] == "Usage: assay cache [OPTIONS] COMMAND [ARGS]..."
    assert main(["profile"]) == 2
    assert "Missing argument 'MODEL'" in capsys.readouterr().err


def test_cli_reference_shows_flags_without_a_value():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "<bool>" not in text and "{model}" not in text.lower()
    assert "| `--quiet` / `-q` |  |  | No progress bar" in text
    assert "| `BASELINE` | `<str>` | required |" in text
    assert "1 the gate failed" in text.split("## `assay compare`")[1].split("## ")[0]  # compare's exit codes


def test_one_name_per_concept_across_commands():
    """The same flag means the same thing in every command: timing seconds and batch sizes are --latency-*, the
    int8 calibration inputs (--quantization-data) are not the temperature-fitting data (--calibration-data)."""
    flags = {" ".join(path): {o for p in command.params for o in getattr(p, "opts", [])}
             for path, command in _commands()}
    for name in ("evaluate", "compress"):
        assert {"--latency-budget", "--latency-batch-sizes"} <= flags[name]
    assert {"--latency-budget", "--latency-batch-sizes"} <= flags["profile"]
    assert not any({"--batch-sizes", "--calibration"} & f for f in flags.values())
    # issue 19's compute budget; profile's deprecated --budget (now --latency-budget) is a hidden alias
    assert [name for name, f in flags.items() if "--budget" in f] == ["evaluate"]
    assert "--quantization-data" in flags["compress"] and "--calibration-data" in flags["evaluate"]


@pytest.mark.parametrize(("old", "new", "value", "keyword", "expected"), [
    ("--calibration", "--quantization-data", "calib.npz", "calibration", "calib.npz"),
    ("--batch-sizes", "--latency-batch-sizes", "1,4", "batch_sizes", (1, 4)),
])
def test_compress_renamed_flags_work_and_old_names_warn(old, new, value, keyword, expected, tmp_path, capsys,
                                                        monkeypatch):
    import assay.compress.run

    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise _StopError

    monkeypatch.setattr(assay.compress.run, "compress", record)
    for flag, deprecated in ((new, False), (old, True), (f"{old}={value}", True)):
        seen.clear()
        argv = ["compress", "m.onnx", "--data", "digits", "--out", str(tmp_path / "o")]
        argv += [flag] if "=" in flag else [flag, value]
        main(argv)
        err = capsys.readouterr().err
        assert seen[keyword] == expected, flag
        assert (f"Warning: {old} is deprecated" in err) is deprecated
        if deprecated:
            assert f"now calls it {new}" in " ".join(err.split())
    assert main(["compress", "--help"]) == 0
    assert old not in capsys.readouterr().out.replace(new, "")  # hidden from --help


def test_profile_renamed_flags_work_old_names_warn_after_the_error(digits_model, capsys, monkeypatch):
    import assay.profiling.profile

    seen: dict = {}

    def record(model, sample, **kwargs):
        seen.update(kwargs)
        raise _StopError

    monkeypatch.setattr(assay.profiling.profile, "profile_model", record)
    main(["profile", str(digits_model), "--latency-budget", "0.5", "--latency-batch-sizes", "2,4"])
    assert (seen["budget_s"], seen["batch_sizes"]) == (0.5, (2, 4))
    assert "deprecated" not in capsys.readouterr().err
    main(["profile", str(digits_model), "--budget=0.25", "--batch-sizes", "1,3"])
    assert (seen["budget_s"], seen["batch_sizes"]) == (0.25, (1, 3))
    err = " ".join(capsys.readouterr().err.split())
    assert "Warning: --budget is deprecated" in err and "Warning: --batch-sizes is deprecated" in err
    code = main(["profile", str(digits_model), "--budget", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("Error: --latency-budget must be > 0") and "Fix:" in err
    assert err.index("Error:") < err.index("Warning: --budget is deprecated")


def test_library_messages_show_renamed_flags_by_their_new_names():
    from assay.cli import _user_error_text
    from assay.errors import OptionError

    exc = OptionError("batch size 7 is not in --batch-sizes", where="calibration",
                      fix="pass --calibration DATA or add 7 to --batch-sizes; --calibration-data is evaluate's")
    assert _user_error_text(exc, ["compress", "m.onnx"]) == (
        "batch size 7 is not in --latency-batch-sizes. Where: --quantization-data. Fix: pass --quantization-data "
        "DATA or add 7 to --latency-batch-sizes; --calibration-data is evaluate's.")
    assert _user_error_text(exc, ["evaluate", "m.onnx"]) == str(exc)  # evaluate renamed nothing


def test_profile_without_data_names_the_data_flag(torchscript_model, capsys):
    code = main(["profile", str(torchscript_model)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and err.startswith("Error:") and "Traceback" not in err
    assert "Fix: pass --data" in err and "sample" not in err and "num_classes" not in err
    assert f"Where: {torchscript_model}." in err


@pytest.mark.parametrize("missing", ["baseline", "candidate"])
def test_compare_on_a_path_that_does_not_exist(missing, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    gone = tmp_path / "no" / "such-bundle"
    sides = [str(gone), str(bundle)] if missing == "baseline" else [str(bundle), str(gone)]
    out = tmp_path / "o"
    code, _, err = _run(["compare", *sides, "--out", str(out)], capsys)
    _assert_user_error(code, err, out, f"the {missing} {gone} does not exist", f"Where: {gone}.",
                       f"the nearest folder that exists is {tmp_path}", "evidence.json")


# Per command, inputs that make it refuse: each printed Where: must be a flag or argument of that command, or a
# path the user gave, never a Python parameter name. Every command that takes input has a case.
WHERE_CASES = [
    ("evaluate", ["m.onnx", "--data", "digits", "--severities", "9", "--out", "{tmp}/o"]),
    ("evaluate", ["m.onnx", "--data", "digits", "--n-bootstrap", "5", "--out", "{tmp}/o"]),
    ("evaluate", ["{ts}", "--data", "digits", "--threads", "0", "--out", "{tmp}/o"]),
    ("evaluate", ["{ts}", "--data", "digits", "--checks", "nonsense", "--out", "{tmp}/o"]),
    ("demo", ["--suite", "nonsense", "--out", "{tmp}/o"]),
    ("compare", ["{tmp}/a", "{tmp}/b", "--n-bootstrap", "5", "--out", "{tmp}/o"]),
    ("compare", ["{tmp}/a", "{tmp}/missing", "--out", "{tmp}/o"]),
    ("select", ["{tmp}/a", "{tmp}/b", "--data", "digits", "--constraint", "x<=1", "--out", "{tmp}/o"]),
    ("compress", ["{ts}", "--data", "digits", "--max-accuracy-drop", "1.5", "--out", "{tmp}/o"]),
    ("compress", ["{ts}", "--data", "digits", "--methods", "int9", "--out", "{tmp}/o"]),
    ("compress", ["{ts}", "--data", "digits", "--methods", "int8-static", "--out", "{tmp}/o"]),
    ("profile", ["{ts}"]),
    ("profile", ["{ts}", "--data", "digits", "--threads", "0"]),
    ("profile", ["{ts}", "--latency-budget", "0"]),
    ("cache info", ["--cache-dir", "{ts}"]),
    ("cache clear", ["--older-than", "7x", "--cache-dir", "{tmp}/c"]),
    ("card", ["{tmp}/missing", "--out", "{tmp}/o"]),
    ("audit", ["--train", "{tmp}/missing.npz", "--out", "{tmp}/o"]),
    ("audit", ["--train", "digits:train", "--folds", "1", "--out", "{tmp}/o"]),
    ("scan", ["{tmp}/missing.pt"]),
    ("estimate", ["{ts}", "--unlabeled", "digits", "--label-budget", "100000", "--queue", "{tmp}/q.csv"]),
    ("evaluate", ["{ts}", "--data", "digits", "--budget", "5 parsecs", "--out", "{tmp}/o"]),
    ("scan", ["{ts}", "--expect-sha256", "xyz"]),
    ("registry register", ["bad name", "{ts}", "--evidence", "{tmp}/a", "--registry", "{tmp}/r.db"]),
    ("registry register", ["m", "{ts}", "--evidence", "{tmp}/a", "--tag", "bad key=v", "--registry", "{tmp}/r.db"]),
    ("registry promote", ["m", "1", "--alias", "production", "--registry", "{tmp}/r.db"]),
    ("registry rollback", ["m", "--alias", "production", "--reason", "x", "--registry", "{tmp}/r.db"]),
    ("registry history", ["m", "--registry", "{tmp}/r.db"]),
    ("registry list", ["--registry", "{tmp}/a"]),
    ("registry show", ["bad name@1", "--registry", "{tmp}/r.db"]),
    ("registry archive", ["m", "1", "--reason", "x", "--registry", "{tmp}/r.db"]),
    ("registry gc", ["--registry", "{tmp}/a"]),
    ("registry verify", ["--registry", "{tmp}/a"]),
    ("registry export-mlflow", ["m", "--registry", "{tmp}/r.db", "--tracking-uri", "sqlite:///{tmp}/ml.db"]),
    ("registry import-mlflow", ["m", "--registry", "{tmp}/r.db", "--tracking-uri", "sqlite:///{tmp}/ml.db"]),
    ("serve", ["{ts}", "--canary-fraction", "0.2"]),
    ("serve", ["m@production", "--registry", "{tmp}/r.db"]),
    ("serve", ["{ts}", "--monitor", "--auto-rollback"]),
    ("monitor", ["--log", "{tmp}/missing", "--reference", "{tmp}/a"]),
    ("feedback queue", ["--log", "{tmp}/missing", "--n", "5", "--out", "{tmp}/q.csv"]),
    ("feedback import", ["{tmp}/missing.csv", "--log", "{tmp}/a"]),
    ("feedback dataset", ["--log", "{tmp}/missing", "--out", "{tmp}/d.npz"]),
]
NO_INPUT = {"schema", "version"}


def test_every_command_that_takes_input_has_a_where_case():
    assert {" ".join(path) for path, _ in _commands()} - NO_INPUT == {command for command, _ in WHERE_CASES}


@pytest.mark.parametrize(("command", "args"), WHERE_CASES)
def test_where_names_a_flag_of_the_command_or_a_path(command, args, torchscript_model, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    args = [a.format(tmp=tmp_path, ts=torchscript_model) for a in args]
    code, _, err = _run([*command.split(), *args], capsys)
    flat = " ".join(err.split())
    assert code == 2 and flat.startswith("Error:") and "Fix:" in flat and "Traceback" not in flat, flat
    where = re.search(r" Where: (.+?)\. Fix: ", flat)
    assert where, flat
    params = next(c for p, c in _commands() if p == command.split()).params
    flags = {o for p in params for o in getattr(p, "opts", []) if o.startswith("-")}
    flags |= {p.name.upper() for p in params if p.param_type_name == "argument"}
    assert where[1] in flags or where[1] in args, (where[1], flat)
    assert where[1] not in {p.name for p in params} - flags
