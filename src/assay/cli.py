"""The ``assay`` command line: parse, call the library, render, map errors to exit codes.

Exit codes: 0 success, 1 internal error (a bug: please report it), 2 user error (bad input).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console as RichConsole
from rich.markup import escape

from assay.errors import OptionError, UserError

if TYPE_CHECKING:
    from assay.compare.gate import Comparison

# ------------------------------------------------------------------------- how commands read
# Renamed flags, per command: old -> new. The old name keeps working for one release, hidden from --help; using
# it prints a deprecation warning (after the command, so that an error still comes first). One concept, one
# name across commands: --quantization-data (int8 calibration inputs) is not --calibration-data (temperature
# fitting); seconds of timing and the batch sizes timed are --latency-budget and --latency-batch-sizes everywhere.
RENAMED_FLAGS: dict[str, dict[str, str]] = {
    "compress": {"--calibration": "--quantization-data", "--batch-sizes": "--latency-batch-sizes"},
    "profile": {"--budget": "--latency-budget", "--batch-sizes": "--latency-batch-sizes"},
}
_deprecation_notes: list[str] = []  # filled while arguments are parsed, printed by main() at the end


def _renamed(command: str, args: list[str]) -> list[str]:
    """``args`` with the old names of ``command``'s renamed flags (``--budget 3``, ``--budget=3``) replaced by
    the new ones, noting each use for the deprecation warning. Nothing after ``--`` is touched."""
    renamed = RENAMED_FLAGS.get(command, {})
    result: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return result + args[i:]
        old, eq, value = arg.partition("=")
        if old in renamed:
            note = (f"{old} is deprecated: `assay {command}` now calls it {renamed[old]} (the same name in every "
                    "command); the old name stops working in the next release")
            if note not in _deprecation_notes:
                _deprecation_notes.append(note)
        result.append(renamed[old] + eq + value if old in renamed else arg)
    return result


class _ReadsAsACommandLine:
    """Help that reads like a command line's: a flag shows no ``<bool>`` value (``--quiet``, not ``--quiet
    true``) and arguments are upper-case metavars (``assay profile [OPTIONS] MODEL``, not ``{model}``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]  # the click command this mixes into
        for param in params:
            if param.param_type_name == "option" and getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # the type column of --help shows the metavar: nothing, for a flag
            elif param.param_type_name == "argument" and param.metavar is None:
                param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []  # type: ignore[attr-defined]
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class AssayCommand(_ReadsAsACommandLine, typer.core.TyperCommand):
    """A command of ``assay``: reads as a command line (see :class:`_ReadsAsACommandLine`) and accepts the old
    names of its renamed flags (:data:`RENAMED_FLAGS`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _renamed(self.name or "", args))


class AssayGroup(_ReadsAsACommandLine, typer.core.TyperGroup):
    """``assay`` and its command groups (``assay cache``): help that reads as a command line."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.subcommand_metavar]


# What each exit code means, shown at the end of `--help` and in docs/cli.md; a command whose codes say more than
# success / bad input gives its own epilog.
EXIT_CODES = "Exit codes: 0 done; 1 internal error (a bug); 2 bad input (the message says what, where and how to fix it)."


class AssayTyper(typer.Typer):
    """A Typer app whose commands are :class:`AssayCommand` (unless a command asks for another class) and end their
    help with their exit codes (:data:`EXIT_CODES` unless a command gives its own epilog)."""

    def command(self, *args: Any, cls: type[typer.core.TyperCommand] | None = None, epilog: str | None = None,
                **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or AssayCommand, epilog=epilog or EXIT_CODES, **kwargs)


app = AssayTyper(
    cls=AssayGroup,
    name="assay",
    help="Is this classifier fit to ship? Metrics with confidence intervals, calibration and an evidence bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def Console(stderr: bool = False) -> RichConsole:  # noqa: N802 - stands in for rich's class
    """A Rich console that never turns user text into emoji or colours it by guesswork; user strings
    are still passed through ``escape`` wherever they meet our own markup."""
    return RichConsole(stderr=stderr, emoji=False, highlight=False)


err_console = Console(stderr=True)


class OutputKind(str, Enum):
    logits = "logits"
    probabilities = "probabilities"


# ------------------------------------------------------------------------------------- help panels
# `--help` groups options under these headings (docs/cli.md uses the same ones). Options without a panel
# stay under "Options", first: what to run (evaluate's --checks and --suite), a short command's own options.
DATA = "Data"
MODEL = "Model"
ROBUSTNESS = "Robustness"
OOD = "OOD"
PRIVACY = "Privacy"
BACKDOOR = "Backdoor & poisoning"
SLICES = "Slices & fairness"
EFFICIENCY = "Efficiency"
COMPRESSION = "Compression"
DAMAGE_AUDIT = "Damage audit"
STATISTICS = "Statistics"
EXECUTION = "Execution"
OUTPUT = "Output"

# ---------------------------------------------------------------------------- shared option blocks
# Each option that several commands take is declared once here; a command gives only its default.
ModelArg = Annotated[str, typer.Argument(
    help="Model: .onnx, TorchScript .pt, torch.export .pt2, or pkg.module:factory with --weights.")]
Weights = Annotated[str | None, typer.Option(
    help="Weights for a factory model (.safetensors or a state dict).", rich_help_panel=MODEL)]
Untrained = Annotated[bool, typer.Option(
    "--untrained", help="Use a factory without --weights on purpose (random initial weights).", rich_help_panel=MODEL)]
Threads = Annotated[int | None, typer.Option(
    help="Inference threads, fixed and recorded (default: all cores).", rich_help_panel=EXECUTION)]
Seed = Annotated[int, typer.Option(help="Seed for every randomized step.", rich_help_panel=STATISTICS)]
NBootstrap = Annotated[int, typer.Option(
    help="Bootstrap resamples per confidence interval (paired when models are compared).", rich_help_panel=STATISTICS)]
Confidence = Annotated[float, typer.Option(help="Confidence level of intervals.", rich_help_panel=STATISTICS)]
CacheDir = Annotated[Path | None, typer.Option(
    help="Output cache directory (default ~/.cache/assay).", rich_help_panel=EXECUTION)]
NoCache = Annotated[bool, typer.Option(
    "--no-cache", help="Do not read or write the output cache.", rich_help_panel=EXECUTION)]
BundleOut = Annotated[Path, typer.Option(
    "--out", "-o", help="Output directory of the evidence bundle.", rich_help_panel=OUTPUT)]
Force = Annotated[bool, typer.Option(
    "--force", help="Replace an Assay output of another kind at --out (never a folder holding other files).",
    rich_help_panel=OUTPUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or console summary.", rich_help_panel=OUTPUT)]
BackendName = Annotated[str, typer.Option(
    "--backend", help="Where forward passes, corruptions and attacks run: local (in this process), processes (worker "
    "processes that reload the model from its file) or ray (Ray actors; pip install 'assay[ray]').",
    rich_help_panel=EXECUTION)]
RayAddress = Annotated[str | None, typer.Option(
    help="Ray cluster of --backend ray: auto (the one `ray start` runs on this machine), ray://HOST:PORT (Ray Client) "
    "or HOST:PORT (default: start a local Ray).", rich_help_panel=EXECUTION)]
NumWorkers = Annotated[int | None, typer.Option(
    help="Workers of --backend processes or ray (default: 2 processes; one Ray actor per CPU of the cluster).",
    rich_help_panel=EXECUTION)]
ModelFilesSuite = Annotated[str | None, typer.Option(help="Evaluation suite for model files: quick, standard or full.")]
BatchSizes = Annotated[str, typer.Option(
    "--latency-batch-sizes", help="Batch sizes to time, comma-separated.", rich_help_panel=EFFICIENCY)]
PricePerHour = Annotated[float | None, typer.Option(
    help="Machine price per hour: cost per 1M inferences.", rich_help_panel=EFFICIENCY)]
GatePolicy = Annotated[Path | None, typer.Option(help="Gate policy YAML (default: the documented default policy).")]
ModelName = Annotated[str, typer.Argument(help="Model name.")]
# Options of how tables and image folders are read (evaluate, audit).
LabelCol = Annotated[str | None, typer.Option(help="Label column of CSV/Parquet data (default 'label').", rich_help_panel=DATA)]
TextCol = Annotated[str | None, typer.Option(help="Text column of CSV/Parquet data.", rich_help_panel=DATA)]
FeatureCols = Annotated[str | None, typer.Option(help="Comma-separated feature columns of CSV/Parquet data.", rich_help_panel=DATA)]
ImageSize = Annotated[str | None, typer.Option(help="Resize image-folder data to this size (32 or 32x48).", rich_help_panel=DATA)]


def _cache(cache_dir: Path | None, no_cache: bool) -> Path | bool:
    """The engine's cache argument: False (off), a directory, or True (the default ~/.cache/assay)."""
    return False if no_cache else (cache_dir if cache_dir is not None else True)


def _image_size(value: str | None) -> int | tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(p) for p in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise OptionError(f"--image-size {value!r} is not a size", where="--image-size",
                          fix="give one integer (square) or HxW, e.g. 32 or 32x48") from None
    if len(parts) == 1 and parts[0] > 0:
        return parts[0]
    if len(parts) == 2 and min(parts) > 0:
        return (parts[0], parts[1])
    raise OptionError(f"--image-size {value!r} is not a size", where="--image-size",
                      fix="give one positive integer (square) or HxW, e.g. 32 or 32x48")


@app.command(epilog="Exit codes: 0 the bundle was written, whatever its verdicts (gate them with `assay compare`); "
             "1 internal error (a bug); 2 bad input (nothing written).")
def evaluate(
    model: ModelArg,
    data: Annotated[str, typer.Option("--data", "-d", help="Evaluation data: .npz, image folder, .csv/.parquet, or 'digits'.", rich_help_panel=DATA)],
    calibration_data: Annotated[str | None, typer.Option(help="Held-out labelled data to fit the temperature (default: half of --data).", rich_help_panel=DATA)] = None,
    label_col: LabelCol = None,
    text_col: TextCol = None,
    feature_cols: FeatureCols = None,
    image_size: ImageSize = None,
    class_names: Annotated[str | None, typer.Option(help="Comma-separated class names in model output order (fixes folder/table label order).", rich_help_panel=DATA)] = None,
    weights: Weights = None,
    untrained: Untrained = False,
    outputs: Annotated[OutputKind, typer.Option(help="What the model returns: logits, or probabilities (log taken).", rich_help_panel=MODEL)] = OutputKind.logits,
    feature_layer: Annotated[str | None, typer.Option(help="Torch module whose output is the embedding (default: input of the last Linear).", rich_help_panel=MODEL)] = None,
    feature_output: Annotated[str | None, typer.Option(help="ONNX value to expose as the embedding (default: input of the last Gemm/MatMul).", rich_help_panel=MODEL)] = None,
    checks: Annotated[str, typer.Option(help="Comma-separated checks to run (add 'efficiency' for latency, size, FLOPs, memory, energy).")] = "performance,calibration",
    suite: Annotated[str | None, typer.Option(help="quick (performance, calibration), standard (+ the 15 standard corruptions), full (+ held-out corruptions and attacks).")] = None,
    budget: Annotated[str | None, typer.Option(help="Sample the corruption, attack and OOD views within a budget instead of running them in full: a time (90s, 5m, 1.5h), model passes (20000passes) or a share of the full run (10%); reports intervals for the full run's values. Ctrl-C writes the bundle so far.")] = None,
    budget_objective: Annotated[str, typer.Option(help="What --budget minimises: widest (the widest interval) or total (the summed variance).")] = "widest",
    corruptions: Annotated[str | None, typer.Option(help="Corruptions: all, standard, or comma-separated names.", rich_help_panel=ROBUSTNESS)] = None,
    severities: Annotated[str, typer.Option(help="Corruption severities: a range or list in 1-5.", rich_help_panel=ROBUSTNESS)] = "1-5",
    corruption_data: Annotated[str | None, typer.Option(help="Directory of a pre-computed -C set (CIFAR-10-C layout: <corruption>.npy, labels.npy).", rich_help_panel=ROBUSTNESS)] = None,
    corruption_table: Annotated[str, typer.Option(help="Image corruption parameters: auto, cifar or imagenet.", rich_help_panel=ROBUSTNESS)] = "auto",
    baseline: Annotated[str | None, typer.Option(help="Evidence bundle of a baseline model: reference of CE/mCE.", rich_help_panel=ROBUSTNESS)] = None,
    adversarial: Annotated[str | None, typer.Option(help="Attack preset: quick (APGD-CE), standard (APGD-CE, APGD-T, Square), blackbox (Square; for ONNX).", rich_help_panel=ROBUSTNESS)] = None,
    attacks: Annotated[str | None, typer.Option(help="Explicit attacks instead of the preset's: fgsm, pgd, apgd-ce, apgd-t, square (comma-separated).", rich_help_panel=ROBUSTNESS)] = None,
    eps: Annotated[str | None, typer.Option(help="Perturbation budget(s), e.g. 8/255 or 2/255,4/255,8/255.", rich_help_panel=ROBUSTNESS)] = None,
    norm: Annotated[str, typer.Option(help="Threat model: linf or l2.", rich_help_panel=ROBUSTNESS)] = "linf",
    attack_steps: Annotated[int, typer.Option(help="Iterations of white-box attacks.", rich_help_panel=ROBUSTNESS)] = 100,
    attack_restarts: Annotated[int, typer.Option(help="Random restarts of white-box attacks.", rich_help_panel=ROBUSTNESS)] = 1,
    square_queries: Annotated[int, typer.Option(help="Query budget of the Square attack.", rich_help_panel=ROBUSTNESS)] = 1000,
    backdoor_steps: Annotated[int, typer.Option(help="Adam steps of Neural Cleanse's trigger search (--checks backdoor; torch models; 0 skips it).", rich_help_panel=BACKDOOR)] = 300,
    backdoor_index: Annotated[float, typer.Option(help="MAD anomaly index above which a class's small recovered trigger is suspect (2 as in Neural Cleanse; raise it with fewer --backdoor-steps).", rich_help_panel=BACKDOOR)] = 2.0,
    poison_eps: Annotated[float, typer.Option(help="Poisoned share spectral signatures guard against: the top 1.5 x eps of each class in --train-data are flagged.", rich_help_panel=BACKDOOR)] = 0.05,
    strip_inputs: Annotated[int, typer.Option(help="Evaluation inputs STRIP blends with others (--checks backdoor).", rich_help_panel=BACKDOOR)] = 200,
    strip_overlays: Annotated[int, typer.Option(help="Overlays per STRIP input.", rich_help_panel=BACKDOOR)] = 16,
    strip_frr: Annotated[float, typer.Option(help="STRIP's false-rejection rate on clean inputs (its entropy threshold's quantile).", rich_help_panel=BACKDOOR)] = 0.01,
    ood: Annotated[list[str] | None, typer.Option(help="OOD set (repeatable): a data spec, or 'synthetic' for built-in noise/blob images.", rich_help_panel=OOD)] = None,
    train_data: Annotated[str | None, typer.Option(help="Training data: fits the feature-based OOD detectors; the members audited by --checks privacy.", rich_help_panel=OOD)] = None,
    unlabeled: Annotated[list[str] | None, typer.Option(help="Unlabeled target data (repeatable): label-free accuracy estimates.", rich_help_panel=OOD)] = None,
    nonmember_data: Annotated[str | None, typer.Option(help="Non-members for membership inference (--checks privacy): labelled data the model was not trained on (default: --data).", rich_help_panel=PRIVACY)] = None,
    reference_models: Annotated[list[str] | None, typer.Option(help="Reference model files for offline LiRA (--checks privacy): 2 or more, same task, trained WITHOUT --train-data (repeatable or comma-separated).", rich_help_panel=PRIVACY)] = None,
    slice_by: Annotated[str | None, typer.Option(help="Comma-separated metadata columns to slice by (numeric: quartiles).", rich_help_panel=SLICES)] = None,
    min_slice_size: Annotated[int, typer.Option(help="Slices smaller than this are reported as insufficient.", rich_help_panel=SLICES)] = 30,
    sensitive: Annotated[str | None, typer.Option(help="Comma-separated metadata columns for fairness metrics.", rich_help_panel=SLICES)] = None,
    latency_batch_sizes: Annotated[str, typer.Option(help="Batch sizes timed by the efficiency check, comma-separated.", rich_help_panel=EFFICIENCY)] = "1,8,32",
    latency_budget: Annotated[float, typer.Option(help="Seconds of timing per batch size (efficiency check).", rich_help_panel=EFFICIENCY)] = 10.0,
    price_per_hour: PricePerHour = None,
    seed: Seed = 0,
    n_bootstrap: NBootstrap = 1000,
    confidence: Confidence = 0.95,
    ece_bins: Annotated[int, typer.Option(help="Bins of the ECE family.", rich_help_panel=STATISTICS)] = 15,
    threads: Threads = None,
    batch_size: Annotated[int, typer.Option(help="Inference batch size.", rich_help_panel=EXECUTION)] = 256,
    backend: BackendName = "local",
    ray_address: RayAddress = None,
    num_workers: NumWorkers = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    out: BundleOut = Path("assay-out"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate MODEL on --data: accuracy/F1 with CIs, calibration, evidence bundle and report."""
    from assay.api import evaluation_inputs, run_evaluation, write_evaluation
    from assay.checks.base import EvaluateConfig
    from assay.engine.planning import apply_suite, parse_attacks, parse_eps, parse_severities
    from assay.evidence.output import check_output
    from assay.report import print_console

    robustness = apply_suite(suite, {
        "corruptions": [corruptions] if corruptions else [], "adversarial": adversarial,
    })
    # Out-of-range values are OptionErrors naming the config field, which is this command's parameter.
    config = EvaluateConfig(seed=seed, n_bootstrap=n_bootstrap, confidence=confidence, ece_bins=ece_bins,
                            batch_size=batch_size, severities=parse_severities(severities),
                            corruption_table=corruption_table, corruption_data=corruption_data, baseline=baseline,
                            eps=parse_eps(eps) if eps else [], norm=norm,
                            attacks=parse_attacks(attacks) if attacks else [],
                            slice_by=[c.strip() for c in slice_by.split(",")] if slice_by else [],
                            min_slice_size=min_slice_size, ood=list(ood or []), train_data=train_data,
                            unlabeled=list(unlabeled or []), nonmember_data=nonmember_data,
                            reference_models=[p.strip() for v in reference_models or [] for p in v.split(",") if p.strip()],
                            sensitive=[c.strip() for c in sensitive.split(",")] if sensitive else [], attack_steps=attack_steps,
                            attack_restarts=attack_restarts, square_queries=square_queries,
                            backdoor_steps=backdoor_steps, backdoor_index=backdoor_index, poison_eps=poison_eps,
                            strip_inputs=strip_inputs, strip_overlays=strip_overlays, strip_frr=strip_frr,
                            latency_batch_sizes=list(_int_list(latency_batch_sizes, "--latency-batch-sizes")),
                            latency_budget=latency_budget, price_per_hour=price_per_hour, budget=budget,
                            budget_objective=budget_objective, **robustness)
    model_options = {k: v for k, v in {"weights": weights, "outputs": outputs.value, "feature_layer": feature_layer,
                                       "feature_output": feature_output, "threads": threads,
                                       "untrained": untrained or None}.items() if v is not None}
    data_options = {k: v for k, v in {
        "label_col": label_col, "text_col": text_col, "image_size": _image_size(image_size),
        "feature_cols": [c.strip() for c in feature_cols.split(",")] if feature_cols else None,
        "class_names": [c.strip() for c in class_names.split(",")] if class_names else None,
    }.items() if v is not None}
    inputs = evaluation_inputs(model, data, calibration_data=calibration_data, config=config,
                               cache_dir=_cache(cache_dir, no_cache), model_options=model_options)
    check_output(out, "evaluate", inputs=inputs, force=force)  # before the evaluation, not after it
    run = run_evaluation(
        model, data,
        checks=[c.strip() for c in checks.split(",") if c.strip()],
        calibration_data=calibration_data,
        config=config,
        cache_dir=_cache(cache_dir, no_cache),
        backend=backend,
        ray_address=ray_address,
        num_workers=num_workers,
        progress=not quiet,
        model_options=model_options,
        data_options=data_options,
    )
    path = write_evaluation(run, out, inputs=inputs, force=force)
    if not quiet:
        print_console(run.evidence)
        Console().print(f"Evidence bundle: [bold]{escape(str(path))}[/]  (report: {escape(str(path / 'report.html'))})")


@app.command()
def demo(
    suite: Annotated[str, typer.Option(help="quick, standard (+ 15 corruptions x 5 severities) or full (+ held-out corruptions, Square attack).")] = "standard",
    seed: Seed = 0,
    out: BundleOut = Path("assay-out"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train a small CNN on the bundled digits, export it to ONNX, evaluate it, write the report."""
    from assay.demo import run_demo
    from assay.engine.planning import apply_suite
    from assay.report import print_console

    apply_suite(suite, {})  # an unknown suite is refused before the training starts
    console = Console()
    run = run_demo(out, seed=seed, progress=not quiet, suite=suite, force=force)  # says what it trains, on stderr
    if not quiet:
        print_console(run.evidence)
        console.print(f"Demo model: {escape(str(Path(out) / 'model.onnx'))}")
        console.print(f"Report: [bold]{escape(str(Path(out) / 'report.html'))}[/]  (also report.md, evidence.json, predictions.npz, reference.npz)")


@app.command(epilog="Exit codes: 0 no rule failed: the verdict is pass, or inconclusive (no regression shown, but "
             "some rule could not be settled with these samples or timing runs; comparison.md says how many would "
             "settle it); 1 the gate failed (a rule's whole CI is past its limit; with --fail-on-inconclusive, also "
             "an inconclusive verdict), and an internal error (a bug, printed as 'Internal error:'); 2 bad input.")
def compare(
    baseline: Annotated[str, typer.Argument(help="Baseline: an evidence bundle directory, or a model file (with --data).")],
    candidate: Annotated[str, typer.Argument(help="Candidate: an evidence bundle directory, or a model file (with --data).")],
    data: Annotated[str | None, typer.Option("--data", "-d", help="Evaluation data for model files (and thumbnails of flips).")] = None,
    policy: GatePolicy = None,
    suite: ModelFilesSuite = None,
    fail_on_inconclusive: Annotated[bool, typer.Option("--fail-on-inconclusive", help="Exit 1 also when the verdict is inconclusive (no rule failed, but one could not be settled).")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="Model files: also measure latency/size (efficiency check) for the cost rules.")] = False,
    seed: Seed = 0,
    n_bootstrap: NBootstrap = 1000,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: comparison.json/.md/.html, junit.xml.", rich_help_panel=OUTPUT)] = Path("assay-compare"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Regression gate: paired statistics of CANDIDATE vs BASELINE on the same data. Exit 0 pass or inconclusive, 1 gate failed."""
    from assay.compare.run import compare as run_compare

    if n_bootstrap < 100:
        raise OptionError(f"--n-bootstrap {n_bootstrap} is too small", where="n_bootstrap", fix="use 100 or more (default 1000)")
    _require_existing(baseline, "baseline")
    _require_existing(candidate, "candidate")
    result = run_compare(baseline, candidate, data=data, policy=policy, out=out, n_bootstrap=n_bootstrap, seed=seed,
                         suite=suite, profile=profile, cache_dir=_cache(cache_dir, no_cache), progress=not quiet,
                         force=force)
    if not quiet:
        _print_rules(result)
        Console().print(f"Comparison: [bold]{escape(str(out / 'comparison.md'))}[/]  (also comparison.json, comparison.html, junit.xml)")
    if result.verdict == "fail" or (fail_on_inconclusive and result.verdict == "inconclusive"):
        raise typer.Exit(1)


def _require_existing(spec: str, role: str) -> None:
    """A bundle or model path that does not exist is refused as such, naming it (a factory spec
    ``package.module:callable`` is not a path; the loader judges it)."""
    if os.path.lexists(spec) or ":" in spec:
        return
    path = Path(os.path.abspath(spec))
    parent = next((p for p in path.parents if p.exists()), None)
    hint = "" if parent is None or parent == path.parent else f" (the nearest folder that exists is {parent})"
    raise OptionError(f"the {role} {spec} does not exist{hint}", where=spec,
                      fix="give the folder `assay evaluate` wrote (it holds evidence.json), or a model file with "
                          f"--data; check the path (relative paths start at {os.getcwd()})")


def _print_rules(result: Comparison) -> None:
    from rich.markup import escape
    from rich.table import Table

    style = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "skipped": "dim"}
    table = Table(title=f"Regression gate: {result.verdict.upper()}", show_lines=False)
    for col in ("rule", "result", "value", "CI", "detail"):
        table.add_column(col, overflow="fold")
    for r in result.rules:
        ci = f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]" if r.ci_low is not None and r.ci_high is not None else ""
        table.add_row(escape(r.rule), f"[{style[r.status]}]{r.status}[/]", "" if r.value is None else f"{r.value:+.4f}",
                      ci, escape(r.message))
    Console().print(table)


@app.command(epilog="Exit codes: 0 a model was picked; 1 no model meets every --constraint, and an internal error "
             "(a bug, printed as 'Internal error:'); 2 bad input.")
def select(
    models: Annotated[list[str], typer.Argument(help="Two or more model files or evidence bundles.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Evaluation data shared by every model.")],
    constraints: Annotated[list[str] | None, typer.Option("--constraint", help="Constraint METRIC OP NUMBER (repeatable), e.g. latency_p95_ms<=5.")] = None,
    objective: Annotated[str, typer.Option(help="Metric to optimize among feasible models.")] = "accuracy",
    profile: Annotated[bool, typer.Option("--profile", help="Measure latency for model files (automatic when a constraint or the objective uses latency_p95_ms).")] = False,
    slice_by: Annotated[str | None, typer.Option(help="Metadata columns for the worst-slice column (comma-separated).")] = None,
    suite: ModelFilesSuite = None,
    seed: Seed = 0,
    n_bootstrap: NBootstrap = 1000,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: selection.json/.md/.html.", rich_help_panel=OUTPUT)] = Path("assay-select"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Leaderboard and pick: the best model on --objective among those meeting every --constraint."""
    from assay.compare.run import select as run_select

    for spec in models:
        _require_existing(spec, "model")
    selection = run_select(models, data, constraints=list(constraints or []), objective=objective, out=out, profile=profile,
                           evaluate_options={"slice_by": [c.strip() for c in slice_by.split(",")]} if slice_by else None,
                           n_bootstrap=n_bootstrap, seed=seed, suite=suite, cache_dir=_cache(cache_dir, no_cache),
                           progress=not quiet, force=force)
    if not quiet:
        from rich.table import Table

        cols = ["accuracy", "worst_class_accuracy", "ece", "latency_p95_ms", "model_size_mb"]
        table = Table(title=f"Selection: {escape(selection.pick or 'none feasible')}")
        for col in ["model", *cols, "feasible"]:
            table.add_column(col, overflow="fold")
        for r in selection.rows:
            table.add_row(escape(r["model"]) + (" *" if r["model"] == selection.pick else ""),
                          *["" if r[c] is None else f"{r[c]:.4g}" for c in cols],
                          "yes" if r["feasible"] else escape("no: " + ", ".join(r["violations"])))
        Console().print(table)
        for reason in selection.reasons:
            Console().print(f"- {escape(reason)}")
        Console().print(f"Selection: [bold]{escape(str(out / 'selection.html'))}[/]  (also selection.json, selection.md)")
    if selection.pick is None:
        raise typer.Exit(1)


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise OptionError(f"{option} {value!r} is not a comma-separated list of integers", where=option,
                          fix="e.g. 1,8,32") from None


def _float_list(value: str, option: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise OptionError(f"{option} {value!r} is not a comma-separated list of numbers", where=option,
                          fix="e.g. 0.3,0.5") from None


@app.command(epilog="Exit codes: 0 the audit was written, whatever it recommends (keeping the original "
             "included); 1 internal error (a bug); 2 bad input (nothing written).")
def compress(
    model: Annotated[str, typer.Argument(help="Model to compress: .onnx, TorchScript, torch.export, or pkg.module:factory with --weights.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Labelled evaluation data for the damage audit.", rich_help_panel=DATA)],
    calibration: Annotated[str | None, typer.Option("--quantization-data", help="Inputs that calibrate int8-static quantization: a few hundred representative samples, labels not needed (default: --train-data).", rich_help_panel=DATA)] = None,
    train_data: Annotated[str | None, typer.Option(help="Training data: short fine-tune after pruning, and default calibration.", rich_help_panel=DATA)] = None,
    weights: Weights = None,
    untrained: Untrained = False,
    methods: Annotated[str, typer.Option(help="Comma-separated: int8-static, int8-dynamic, int8-dynamic-all, fp16, prune.", rich_help_panel=COMPRESSION)] = "int8-static,int8-dynamic,fp16",
    prune_ratios: Annotated[str, typer.Option(help="Channel-pruning ratios (prune method), comma-separated.", rich_help_panel=COMPRESSION)] = "0.5",
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after pruning (needs --train-data).", rich_help_panel=COMPRESSION)] = 0,
    max_accuracy_drop: Annotated[float, typer.Option(help="Largest tolerable accuracy drop (judged with the paired CI).", rich_help_panel=DAMAGE_AUDIT)] = 0.01,
    max_class_drop: Annotated[float, typer.Option(help="Largest tolerable drop of any class's accuracy.", rich_help_panel=DAMAGE_AUDIT)] = 0.03,
    suite: Annotated[str | None, typer.Option(help="Evaluation suite of the audit: quick, standard (+ corruptions) or full.", rich_help_panel=DAMAGE_AUDIT)] = None,
    slice_by: Annotated[str | None, typer.Option(help="Metadata columns for per-slice damage (comma-separated).", rich_help_panel=DAMAGE_AUDIT)] = None,
    batch_sizes: BatchSizes = "1,32",
    ranking_batch: Annotated[int | None, typer.Option(help="Batch size whose latency ranks the variants (default: the largest).", rich_help_panel=EFFICIENCY)] = None,
    latency_budget_s: Annotated[float, typer.Option("--latency-budget", help="Seconds of timing per model and batch size (at most).", rich_help_panel=EFFICIENCY)] = 5.0,
    seed: Seed = 0,
    n_bootstrap: NBootstrap = 1000,
    threads: Threads = None,
    backend: BackendName = "local",
    ray_address: RayAddress = None,
    num_workers: NumWorkers = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: report, variants, the recommended model and its evidence.", rich_help_panel=OUTPUT)] = Path("assay-compress"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Compressed variants with a measured speed-up and a per-class damage audit; recommends the fastest safe one."""
    from assay.compress.run import compress as run_compress

    result = run_compress(
        model, data, calibration=calibration, methods=[m.strip() for m in methods.split(",") if m.strip()], out=out,
        prune_ratios=_float_list(prune_ratios, "--prune-ratios"), train_data=train_data,
        finetune_epochs=finetune_epochs, max_accuracy_drop=max_accuracy_drop, max_class_drop=max_class_drop,
        batch_sizes=_int_list(batch_sizes, "--latency-batch-sizes"), ranking_batch=ranking_batch,
        latency_budget_s=latency_budget_s, threads=threads, suite=suite, n_bootstrap=n_bootstrap, seed=seed,
        slice_by=[c.strip() for c in slice_by.split(",")] if slice_by else None,
        cache_dir=_cache(cache_dir, no_cache), progress=not quiet,
        model_options={k: v for k, v in {"weights": weights, "untrained": untrained or None}.items() if v is not None},
        backend=backend, ray_address=ray_address, num_workers=num_workers, force=force)
    if not quiet:
        from rich.table import Table

        b = result.ranking_batch
        table = Table(title=f"Compression: {'recommend ' + result.recommended if result.recommended else 'keep the original'}")
        for col in ("variant", "accuracy Δ", "worst class Δ", "changed", f"speed-up (b={b})", "status"):
            table.add_column(col, overflow="fold")
        for r in result.rows:
            speedup = r.get(f"speedup[batch={b}]")
            table.add_row(r["variant"], "—" if r["accuracy_delta"] is None else f"{r['accuracy_delta']:+.4f}",
                          "" if r["worst_class_delta"] is None else escape(f"{r['worst_class']}: {r['worst_class_delta']:+.4f}"),
                          str(r["changed_predictions"]), "—" if speedup is None else f"{speedup:.2f}x",
                          r["status"])
        Console().print(table)
        for reason in result.reasons:
            Console().print(f"- {escape(reason)}")
        for r in result.rows:
            Console().print(escape(f"- {r['variant']}: {r['verdict']}" + "".join(f"\n    {x}" for x in r["slow_reasons"])))
        Console().print(f"Report: [bold]{escape(str(out / 'report.html'))}[/]  (also compression.md/.json, exemplars.csv, variants/)")


@app.command()
def profile(
    model: ModelArg,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Inputs to time (default: uniform random inputs of the model's input shape).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full profile as JSON here.")] = None,
    weights: Weights = None,
    untrained: Untrained = False,
    batch_sizes: BatchSizes = "1,8,32",
    budget_s: Annotated[float, typer.Option("--latency-budget", help="Seconds of timing per batch size (at most).", rich_help_panel=EFFICIENCY)] = 10.0,
    price_per_hour: PricePerHour = None,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    """Latency p50/p95/p99 with CIs, throughput, peak memory, size, parameters, FLOPs, energy and cost on this machine."""
    import numpy as np

    from assay.checks.efficiency import efficiency_section
    from assay.models.loader import load_model
    from assay.profiling.profile import profile_model
    from assay.report.formatting import write_text_atomic

    sizes = _int_list(batch_sizes, "--latency-batch-sizes")
    if not sizes or min(sizes) < 1:
        raise OptionError(f"--latency-batch-sizes {batch_sizes!r} must list positive integers", where="batch_sizes",
                          fix="e.g. 1,8,32")
    if budget_s <= 0:
        raise OptionError(f"--latency-budget must be > 0, got {budget_s}", where="budget_s", fix="give seconds, e.g. 10")
    options: dict[str, Any] = {k: v for k, v in {"weights": weights, "threads": threads,
                                                 "untrained": untrained or None}.items() if v is not None}
    if json_out is not None:  # a bad output path fails before the timing, not after it
        from assay.evidence.output import check_output_file, input_paths

        check_output_file(json_out, is_ours=_is_profile_json, what="a profile written by `assay profile`",
                          inputs=input_paths(model, data, weights), where="--json")
    if data is not None:
        from assay.data.loader import load_data

        sample = np.asarray(load_data(data).x[: max(sizes)])
        loaded = load_model(model, sample=sample[:2], **options)
    else:
        try:
            loaded = load_model(model, **options)
        except UserError as exc:
            # The loader asks for its `sample` (or `num_classes`) when the model cannot tell its own shapes; on the
            # command line the sample comes from --data, and profiling needs no class count.
            if "sample" not in (exc.fix or ""):
                raise
            raise OptionError(f"{exc.what.rstrip('.')}, so `assay profile` needs inputs to run it on",
                              where=exc.where, fix="pass --data with a few real inputs (e.g. --data test.npz): the "
                              "model is run once on them, then timed on batches of them") from exc
        shape = [d for d in loaded.info.input_shape[1:] if d is not None]
        if len(shape) + 1 != len(loaded.info.input_shape) or loaded.info.input_dtype not in (
                "float32", "float64", "float16"):
            raise UserError(f"the model's input shape {loaded.info.input_shape} / dtype {loaded.info.input_dtype} "
                            "does not say what to feed it", where=model, fix="pass --data with real inputs")
        sample = np.random.default_rng(seed).random((max(sizes), *shape)).astype(loaded.info.input_dtype)
    path = loaded.info.path
    result = profile_model(loaded, sample, batch_sizes=tuple(sorted(set(sizes))), threads=threads, budget_s=budget_s,
                           price_per_hour=price_per_hour, seed=seed, progress=True,
                           model_path=path if path and os.path.isfile(path) else None)
    if json_out is not None:
        write_text_atomic(json_out, result.model_dump_json(indent=2))
    section = efficiency_section(result)
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Efficiency profile: {escape(Path(path).name or path)}")
    for col in ("metric", "value", "CI"):
        table.add_column(col)
    for name, m in section.metrics.items():
        ci = "" if m.ci_low is None or m.ci_high is None else f"[{m.ci_low:.4g}, {m.ci_high:.4g}]"
        table.add_row(escape(name), "—" if m.value is None else f"{m.value:.4g}", ci)
    Console().print(table)
    for f in section.findings:
        Console().print(f"- {f.severity}: {escape(f.message)}")


def _is_profile_json(path: Path) -> bool:
    """True for a file `assay profile --json` wrote (it validates as an EfficiencyProfile)."""
    from assay.profiling.profile import EfficiencyProfile

    try:
        if path.stat().st_size > 16 << 20:
            return False
        EfficiencyProfile.model_validate_json(path.read_bytes())
    except Exception:
        return False
    return True


@app.command()
def schema() -> None:
    """Print the JSON Schema of evidence.json."""
    from assay.evidence.schema import Evidence

    typer.echo(json.dumps(Evidence.model_json_schema(), indent=2))


@app.command()
def version() -> None:
    """Print Assay's version."""
    from assay._version import __version__

    typer.echo(__version__)


# ------------------------------------------------------------------------------------------- cache
cache_app = AssayTyper(
    cls=AssayGroup, name="cache", no_args_is_help=True, add_completion=False,
    help="The output cache of model outputs (default ~/.cache/assay, or ASSAY_CACHE_DIR): what it holds, and "
         "clearing it. Only entries the cache wrote are ever deleted; other files in the folder are left alone. "
         "Size cap: set ASSAY_CACHE_MAX_MB (megabytes) and every run deletes the least recently used entries "
         "after each write until the cache fits.")
app.add_typer(cache_app, name="cache")


def _size_text(n_bytes: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def _when_text(timestamp: float) -> str:
    """Local time and how long ago: ``2024-05-03 09:12 (3 days ago)``."""
    import time

    age = max(0.0, time.time() - timestamp)
    ago = next((f"{age / scale:.0f} {unit} ago" for unit, scale in (
        ("days", 86400), ("hours", 3600), ("minutes", 60)) if age >= 2 * scale), "just now")
    return f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(timestamp))} ({ago})"


@cache_app.command("info")
def cache_info(cache_dir: CacheDir = None) -> None:
    """Where the output cache is, its entries and their total size, and when they were last used."""
    from assay._paths import default_cache_dir
    from assay.engine.cache import MAX_MB_ENV, summarize_cache

    summary = summarize_cache(cache_dir if cache_dir is not None else default_cache_dir())
    say = functools.partial(Console().print, soft_wrap=True)  # plain lines, never wrapped mid-path
    say(f"Output cache: [bold]{escape(str(summary.directory))}[/]"
                  + ("" if summary.exists else " (does not exist yet: nothing is cached)"))
    say(f"Entries: {summary.entries} ({_size_text(summary.total_bytes)})")
    if summary.least_recently_used is not None and summary.most_recently_used is not None:
        say(f"Least recently used: {_when_text(summary.least_recently_used)}")
        say(f"Most recently used: {_when_text(summary.most_recently_used)}")
    if summary.max_bytes is None:
        say(f"Size cap: none (set {MAX_MB_ENV} to a number of megabytes to cap the cache's size)")
    else:
        say(f"Size cap: {_size_text(summary.max_bytes)} ({MAX_MB_ENV}); the least recently used entries "
                      "are deleted first")
    if summary.other_files:
        say(f"Other files: {summary.other_files} (not written by the cache; `assay cache clear` leaves "
                      "them alone)")


@cache_app.command("clear", epilog="Exit codes: 0 cleared (or nothing to clear); 1 internal error (a bug); 2 bad "
                   "input, or entries that could not be deleted (the message names one).")
def cache_clear(
    older_than: Annotated[str | None, typer.Option(
        help="Only entries last used longer ago than this: a number and a unit (s, m, h, d, w), e.g. 7d, 12h, "
             "1d12h.")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Delete the cache's entries (all, or those unused for --older-than); other files in the folder stay."""
    from assay._paths import default_cache_dir
    from assay.engine.cache import clear_cache, parse_duration
    from assay.errors import OutputError

    seconds = parse_duration(older_than) if older_than is not None else None
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    cleared = clear_cache(directory, older_than_s=seconds)
    say = functools.partial(Console().print, soft_wrap=True)  # plain lines, never wrapped mid-path
    say(f"Removed {cleared.entries} {'entry' if cleared.entries == 1 else 'entries'} "
                  f"({_size_text(cleared.bytes)}) from {escape(str(directory))}"
                  + (f"; kept {cleared.kept} used in the last {escape(older_than)}" if older_than is not None else "")
                  + (f"; also {cleared.temp_files} temp files of interrupted writes" if cleared.temp_files else "")
                  + ".")
    if cleared.failed:
        raise OutputError(f"{len(cleared.failed)} cache entries could not be deleted", where=str(cleared.failed[0]),
                          fix="check that you may write to the cache folder (its owner and permissions)")


# ------------------------------------------------------------------------------------------- registry
registry_app = AssayTyper(
    cls=AssayGroup, name="registry", no_args_is_help=True, add_completion=False,
    help="The model registry: immutable versions of a model with the evidence behind them, aliases (production, "
         "staging) moved only through the paired regression gate, one-command rollback, and a tamper-evident "
         "history of every move. SQLite at .assay/registry.db by default; --registry postgresql+psycopg://... (or "
         "ASSAY_REGISTRY) for a team.")
app.add_typer(registry_app, name="registry")

RegistryUrl = Annotated[str | None, typer.Option(
    "--registry", envvar="ASSAY_REGISTRY", show_envvar=False,
    help="Registry database: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB (or ASSAY_REGISTRY; default "
         ".assay/registry.db in the current folder).")]
ArtifactsDir = Annotated[Path | None, typer.Option(
    "--artifacts", help="Artifact store folder (or ASSAY_ARTIFACTS; default: artifacts/ beside a SQLite registry, "
                        "else .assay/artifacts).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]
RegistryReason = Annotated[str | None, typer.Option(help="Why: recorded in the history.")]
_REGISTRY_EXITS = "1 internal error (a bug); 2 bad input (unknown name, version or alias, a registry that cannot be " \
    "opened or written; nothing is changed)"


@contextlib.contextmanager
def _registry(url: str | None, artifacts: Path | None) -> Iterator[Any]:
    """The registry a command works on, closed (its connections released) when the command ends."""
    from assay.registry import open_registry

    reg = open_registry(url, artifacts=artifacts)
    try:
        yield reg
    finally:
        reg.close()


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _move_row(m: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(m)


@registry_app.command("register", epilog="Exit codes: 0 registered (or the same model and evidence already were: "
                      f"that version is printed); {_REGISTRY_EXITS}.")
def registry_register(
    name: Annotated[str, typer.Argument(help="Model name: letters, digits, '.', '_' and '-'.")],
    model: ModelArg,
    evidence: Annotated[Path, typer.Option(help="Evidence bundle of this model (`assay evaluate MODEL --data DATA "
                                           "--out BUNDLE`); with predictions.npz for gated promotion.")],
    weights: Weights = None,
    message: Annotated[str | None, typer.Option(help="What this version is (recorded with it).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag KEY=VALUE; repeat for more.")] = None,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Register MODEL (and its evidence bundle) as the next version of NAME; identical bytes reuse the version."""
    tags: dict[str, str] = {}
    for item in tag or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise OptionError(f"--tag {item!r} is not KEY=VALUE", where="--tag", fix="write a tag as KEY=VALUE, "
                              "e.g. --tag dataset=digits-v2")
        tags[key.strip()] = value.strip()
    from assay.errors import RegistryError

    with _registry(registry, artifacts) as reg:
        before: set[int] = set()
        with contextlib.suppress(RegistryError):  # a new name has no versions yet
            before = {v.version for v in reg.versions(name)}
        mv = reg.register(name, model, weights=weights, evidence=evidence, message=message, tags=tags or None)
    Console().print(f"{escape(mv.ref)}  model sha256 {mv.model_sha256[:12]}  evidence sha256 "
                    f"{mv.evidence_sha256[:12]}  data {escape(', '.join(f[:12] for f in mv.data_fingerprints))}"
                    + ("  (already registered: the same model and evidence)" if mv.version in before else ""),
                    soft_wrap=True)


@registry_app.command("promote", epilog="Exit codes: 0 the alias moved (or the version already held it); 1 the gate "
                      "failed, or was inconclusive without --allow-inconclusive (the alias did not move), and an "
                      "internal error (a bug, printed as 'Internal error:'); 2 bad input (unknown name, version or "
                      "alias, bundles the gate cannot pair, --force without --reason) or a conflict: the alias moved "
                      "while the gate ran (nothing is overwritten; run it again).")
def registry_promote(
    name: ModelName,
    version: Annotated[int, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move, e.g. production.")],
    policy: GatePolicy = None,
    allow_inconclusive: Annotated[bool, typer.Option(
        "--allow-inconclusive", help="Move the alias also when the gate is inconclusive.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Move the alias whatever the gate says (needs --reason; the gate still runs when it can, "
                        "and the move is logged as forced).")] = False,
    reason: RegistryReason = None,
    seed: Seed = 0,
    n_bootstrap: NBootstrap = 1000,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
    quiet: Quiet = False,
) -> None:
    """Move ALIAS of NAME to VERSION through the paired regression gate against the alias's current holder."""
    from assay.registry.promotion import promote

    if n_bootstrap < 100:
        raise OptionError(f"--n-bootstrap {n_bootstrap} is too small", where="n_bootstrap",
                          fix="use 100 or more (default 1000)")
    with _registry(registry, artifacts) as reg:
        result = promote(reg, name, version, alias, policy=policy, allow_inconclusive=allow_inconclusive, force=force,
                         reason=reason, n_bootstrap=n_bootstrap, seed=seed)
    say = functools.partial(Console().print, soft_wrap=True)
    if result.comparison is not None and not quiet:
        _print_rules(result.comparison)
    if result.refused:
        err_console.print(f"[bold red]Refused:[/] {escape(result.refused)}; {name}@{alias} stays at version "
                          f"{result.previous}.", soft_wrap=True)
        hint = "" if result.verdict == "fail" else "--allow-inconclusive, or "
        err_console.print(f"To move it anyway: {hint}--force --reason TEXT (logged as forced).", soft_wrap=True)
        raise typer.Exit(1)
    if result.move is None:
        say(f"{escape(name)}@{escape(alias)} already is version {version}: nothing moved.")
        return
    gate = (f"gate not run: {result.gate_error}" if result.gate_error else f"gate {result.verdict}"
            if result.verdict else "no gate: first holder")
    sha = f", comparison sha256 {result.comparison_sha256[:12]}" if result.comparison_sha256 else ""
    say(f"{escape(name)}@{escape(alias)}: {result.previous if result.previous is not None else '-'} -> {version} "
        f"({'FORCED, ' if result.forced else ''}{escape(gate)}{sha})")


@registry_app.command("rollback", epilog="Exit codes: 0 rolled back; 1 internal error (a bug); 2 bad input (unknown "
                      "name or alias, no earlier holder, --to a version that never held the alias, no --reason) or a "
                      "conflict: the alias moved meanwhile (nothing is overwritten).")
def registry_rollback(
    name: ModelName,
    alias: Annotated[str, typer.Option(help="Alias to move back, e.g. production.")],
    reason: Annotated[str | None, typer.Option(help="Why (required): recorded in the history.")] = None,
    to: Annotated[int | None, typer.Option(help="A former holder to return to (default: the previous holder).")
                  ] = None,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Move ALIAS back to its previous holder (or --to a former one) at once, without a gate: the emergency path."""
    from assay.registry.promotion import rollback

    with _registry(registry, artifacts) as reg:
        move = rollback(reg, name, alias, to=to, reason=reason or "")
    Console().print(f"{escape(name)}@{escape(alias)}: {move.from_version} -> {move.to_version} (rollback)",
                    soft_wrap=True)


@registry_app.command("history", epilog=f"Exit codes: 0 listed; {_REGISTRY_EXITS}.")
def registry_history(
    name: ModelName,
    alias: Annotated[str | None, typer.Option(help="Only this alias's moves.")] = None,
    as_json: AsJson = False,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Every alias move of NAME, oldest first: when, who, from, to, action, why, gate verdict, comparison hash."""
    from rich import box
    from rich.table import Table

    from assay.errors import RegistryError

    with _registry(registry, artifacts) as reg:
        moves = reg.history(name, alias)
        held = sorted(reg.aliases(name)) if alias and not moves else []
    if alias and not moves:  # aliases exist only through moves: one without any is unknown
        raise RegistryError(f"{name} has no alias {alias!r}", where=f"{name}@{alias}",
                            fix=f"its aliases: {', '.join(held)}" if held else
                            f"promote a version first: `assay registry promote {name} VERSION --alias {alias}`")
    if as_json:
        _print_json([_move_row(m) for m in moves])
        return
    if not moves:
        Console().print(f"No alias of {escape(name)} has moved yet.")
    for shown in dict.fromkeys(m.alias for m in moves):  # one table per alias, in order of first move
        table = Table(title=f"History of {escape(name)}@{escape(shown)} (times in UTC)", box=box.SIMPLE_HEAD)
        for col in ("when", "move", "action", "who", "why", "gate", "comparison"):
            # fixed-form columns stay on one line; when breaks between date and time; who and why fold
            table.add_column(col, no_wrap=col not in ("when", "who", "why"), overflow="fold",
                             min_width={"who": 4, "why": 12}.get(col))
        for m in moves:
            if m.alias != shown:
                continue
            action = f"[bold red]{m.action}[/]" if m.forced or m.action == "force" else m.action
            move = f"{'-' if m.from_version is None else m.from_version} -> {m.to_version}"
            table.add_row(m.created_at.replace("T", " ")[:16], move, action, escape(m.actor), escape(m.reason or ""),
                          escape(m.gate_verdict or ""), (m.comparison_sha256 or "")[:12])
        Console().print(table)


@registry_app.command("list", epilog=f"Exit codes: 0 listed; {_REGISTRY_EXITS}.")
def registry_list(
    as_json: AsJson = False,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Every model in the registry: its number of versions, the latest, and where its aliases point."""
    from rich.table import Table

    rows = []
    with _registry(registry, artifacts) as reg:
        for name in reg.models():
            versions = reg.versions(name)
            rows.append({"name": name, "versions": len(versions),
                         "latest": max((v.version for v in versions), default=None),
                         "archived": sum(v.archived for v in versions), "aliases": reg.aliases(name)})
    if as_json:
        _print_json(rows)
        return
    table = Table(title="Registered models")
    for col in ("model", "versions", "latest", "archived", "aliases"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(escape(r["name"]), str(r["versions"]), str(r["latest"]), str(r["archived"]),
                      escape(", ".join(f"{a} -> {v}" for a, v in sorted(r["aliases"].items()))))
    Console().print(table if rows else "The registry holds no model yet (`assay registry register NAME MODEL "
                    "--evidence BUNDLE`).")


@registry_app.command("show", epilog=f"Exit codes: 0 shown; {_REGISTRY_EXITS}.")
def registry_show(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION|NAME@ALIAS", help="A version: NAME@3, NAME@production, "
                                       "or NAME (its latest version).")],
    as_json: AsJson = False,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """One version: its model and evidence hashes, data fingerprints, creator, message, tags and aliases."""
    import dataclasses

    from rich.table import Table

    with _registry(registry, artifacts) as reg:
        mv = reg.resolve(ref)
        info = dataclasses.asdict(mv)
        info["aliases"] = sorted(a for a, v in reg.aliases(mv.name).items() if v == mv.version)
        info["evidence_dir"], info["model_path"] = str(reg.evidence_dir(mv)), str(reg.model_path(mv))
    if as_json:
        _print_json(info)
        return
    table = Table(title=escape(mv.ref), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in info.items():
        shown = (", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict)
                 else ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else "" if value is None
                 else str(value))
        table.add_row(key, escape(shown))
    Console().print(table)


@registry_app.command("archive", epilog=f"Exit codes: 0 archived; {_REGISTRY_EXITS}.")
def registry_archive(
    name: ModelName,
    version: Annotated[int, typer.Argument(help="Version to archive.")],
    reason: Annotated[str | None, typer.Option(help="Why (required): recorded with the version.")] = None,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Retire a version: it stays in the history and the store, but no alias may point to it again."""
    if not (reason and reason.strip()):
        raise OptionError("archiving a version needs a reason", where="--reason",
                          fix="say why with --reason TEXT; it is recorded with the version")
    with _registry(registry, artifacts) as reg:
        reg.archive(name, version, reason=reason)
    Console().print(f"{escape(name)}@{version} archived.", soft_wrap=True)


@registry_app.command("gc", epilog=f"Exit codes: 0 done; {_REGISTRY_EXITS}.")
def registry_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Remove artifacts no version or alias move refers to (left by interrupted runs); nothing referenced."""
    with _registry(registry, artifacts) as reg:
        removed = reg.gc(dry_run=dry_run)
    say = functools.partial(Console().print, soft_wrap=True)
    for sha in removed:
        say(f"{'would remove' if dry_run else 'removed'} {sha}")
    say(f"{len(removed)} unreferenced artifact{'' if len(removed) == 1 else 's'} "
        f"{'would be removed' if dry_run else 'removed'}.")


@registry_app.command("verify", epilog="Exit codes: 0 every artifact and the audit chain check out; 1 something was "
                      "changed or is missing (each problem is printed), and an internal error (a bug); 2 bad input "
                      "(a registry that cannot be opened).")
def registry_verify(
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Re-hash every artifact and the audit log's hash chain; name anything changed behind the registry's back."""
    with _registry(registry, artifacts) as reg:
        report = reg.verify()
    say = functools.partial(Console().print, soft_wrap=True)
    if report.ok:
        say(f"Registry verified: {report.artifacts_checked} artifacts and {report.audit_rows_checked} audit rows "
            "check out.")
        return
    for problem in report.problems:
        say(f"[bold red]problem:[/] {escape(problem)}")
    err_console.print(f"[bold red]Verification failed:[/] {len(report.problems)} problem"
                      f"{'' if len(report.problems) == 1 else 's'} (listed above).", soft_wrap=True)
    raise typer.Exit(1)


TrackingUri = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI, e.g. sqlite:///mlflow.db or http://HOST:5000 (default: "
                           "MLFLOW_TRACKING_URI, else MLflow's default); its model registry is used.")]
_MLFLOW_EXITS = "1 internal error (a bug); 2 bad input (unknown name, a registry that cannot be opened, MLflow not " \
    "installed or refusing a request)"


def _print_transfer(result: Any, exported: bool) -> None:
    """One line per version and alias of an export or import, then the notes and a summary."""
    say = functools.partial(Console().print, soft_wrap=True)
    name = escape(result.name)
    for link in result.versions:
        state = ("created" if exported else "registered") if link.created else "already there"
        say(f"{name}@{link.assay_version} {'->' if exported else '<-'} MLflow {name} version {link.mlflow_version} "
            f"({state})")
    for a in result.aliases:
        held = (f"{name}@{a.assay_version if a.assay_version is not None else '-'} = MLflow version "
                f"{a.mlflow_version if a.mlflow_version is not None else '-'}")
        say(f"alias {escape(a.alias)}: {held} ({a.action}{': ' + escape(a.note) if a.note else ''})")
    for note in result.notes:
        say(f"note: {escape(note)}")
    made = sum(link.created for link in result.versions)
    say(f"{'Exported' if exported else 'Imported'} {name} {'to' if exported else 'from'} "
        f"{escape(result.tracking_uri)}: {len(result.versions)} version(s), {made} new; {len(result.aliases)} "
        f"alias(es), {sum(a.action in ('set', 'forced') for a in result.aliases)} moved.")


@registry_app.command("export-mlflow", epilog="Exit codes: 0 exported (versions and aliases MLflow already has are "
                      "left as they are; aliases MLflow cannot name are listed as skipped); "
                      f"{_MLFLOW_EXITS}: running it again completes an interrupted export.")
def registry_export_mlflow(
    name: Annotated[str, typer.Argument(help="Model name (the same in MLflow).")],
    tracking_uri: TrackingUri = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment for the runs holding each version's files.")
                          ] = "assay-registry",
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Copy every version of NAME (model files and evidence bundle as run artifacts, sha256 as tags) and its aliases
    into MLflow's model registry; versions already there (same sha256) are not copied again."""
    from assay.integrations.mlflow_registry import export_to_mlflow

    with _registry(registry, artifacts) as reg:
        result = export_to_mlflow(reg, name, tracking_uri=tracking_uri, experiment=experiment)
    _print_transfer(result, exported=True)


@registry_app.command("import-mlflow", epilog="Exit codes: 0 imported (versions and aliases already here are left "
                      "as they are); 1 internal error (a bug); 2 bad input (unknown name, a version without Assay "
                      "evidence unless --skip-unevaluated, a bundle of another model, a registry that cannot be "
                      "opened, MLflow not installed or refusing a request; checked before anything is written).")
def registry_import_mlflow(
    name: Annotated[str, typer.Argument(help="Registered model name in MLflow (the same here).")],
    tracking_uri: TrackingUri = None,
    skip_unevaluated: Annotated[bool, typer.Option(
        "--skip-unevaluated", help="Import the versions that carry Assay evidence and list the others, instead of "
                                   "refusing the import.")] = False,
    seed: Seed = 0,
    n_bootstrap: NBootstrap = 1000,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Register every MLflow version of NAME that carries Assay's files (model and evidence bundle in its run, as
    export-mlflow writes them) and point NAME's aliases where MLflow's do (recorded in the history)."""
    from assay.integrations.mlflow_registry import import_from_mlflow

    if n_bootstrap < 100:
        raise OptionError(f"--n-bootstrap {n_bootstrap} is too small", where="n_bootstrap",
                          fix="use 100 or more (default 1000)")
    with _registry(registry, artifacts) as reg:
        result = import_from_mlflow(reg, name, tracking_uri=tracking_uri, skip_unevaluated=skip_unevaluated,
                                    n_bootstrap=n_bootstrap, seed=seed)
    _print_transfer(result, exported=False)


# ------------------------------------------------------------------------------------------------ card
@app.command(epilog="Exit codes: 0 the card was written (facts card.yaml does not give are marked TODO and listed, "
             "not an error); 1 internal error (a bug); 2 bad input (a bundle, card.yaml, registry reference or --out "
             "Assay cannot use; nothing written).")
def card(
    sources: Annotated[list[str], typer.Argument(help="Evaluation bundles (folders `assay evaluate` wrote) or NAME@VERSION / NAME@ALIAS of registered models: one card, one results block each.")],
    facts: Annotated[Path | None, typer.Option("--card", help="card.yaml: the facts no evaluation can know (intended use, licence, contact, authors, training data); missing ones are marked TODO.")] = None,
    datasheet: Annotated[Path | None, typer.Option("--datasheet", help="datasheet.yaml of the training data (source, SPDX licence expression, collection, consent, preprocessing, uses, distribution, maintenance): written as DATASHEET.md next to the card, which links it; missing facts are listed as gaps.")] = None,
    audit: Annotated[Path | None, typer.Option("--audit", help="Folder `assay audit` wrote: the card links it and quotes its duplicates, leakage, label-issue and integrity numbers; a partial audit's missing sections are listed.")] = None,
    scan: Annotated[Path | None, typer.Option("--scan", help="Folder `assay scan MODEL --out DIR` wrote: the card quotes the model-file scan under Security and privacy (NIST AI RMF MEASURE 2.7) and warns when it scanned another file than the evaluated model.")] = None,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: MODEL_CARD.md, model_card.html, crosswalk.json.", rich_help_panel=OUTPUT)] = Path("assay-card"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Model card (Hugging Face metadata, CIs, every number traced to its evidence file by sha256) and the NIST AI RMF / EU AI Act Annex IV crosswalk."""
    from assay.api import card as build_card

    result = build_card(sources, facts=facts, out=out, registry=registry, artifacts=artifacts, force=force,
                        datasheet=datasheet, audit=audit, scan=scan)
    if quiet:
        return
    say = functools.partial(Console().print, soft_wrap=True)
    summary = result.crosswalk["summary"]
    say(f"Model card: [bold]{escape(str(out / 'MODEL_CARD.md'))}[/]  (also model_card.html, crosswalk.json"
        + (", DATASHEET.md)" if result.datasheet is not None else ")"))
    say(f"Crosswalk: {summary['full']} entries evidenced in full, {summary['partial']} in part, {summary['gap']} gaps "
        "(listed in the card and crosswalk.json).")
    if result.todos:
        say(f"TODO in the card: {escape(', '.join(result.todos))} (facts no evaluation can know: give them in "
            "card.yaml with --card).")
    for finding in result.findings:
        if finding.severity == "warning" and not (finding.evidence or "").startswith("card.yaml:"):
            say(f"Warning: {escape(finding.message)}")


# ------------------------------------------------------------------------------------------- audit
AUDIT = "Audit"


@app.command(epilog="Exit codes: 0 the audit bundle was written, whatever it found (duplicates, leaks and label "
             "issues are findings, not errors: real data nearly always holds some; the verdicts are in report.html "
             "and evidence.json); 1 internal error (a bug); 2 bad input (train and test of another modality or "
             "shape, a missing or unreadable file, a --pred-probs that is not plain probabilities, an invalid "
             "datasheet, a --out Assay may not write; nothing written).")
def audit(
    train: Annotated[str, typer.Option("--train", help="Training data: .npz, image folder, .csv/.parquet, or 'digits:train'.", rich_help_panel=DATA)],
    test: Annotated[str | None, typer.Option("--test", help="Test data, same modality and shape: test->train leakage.", rich_help_panel=DATA)] = None,
    label_col: LabelCol = None,
    text_col: TextCol = None,
    feature_cols: FeatureCols = None,
    image_size: ImageSize = None,
    model: Annotated[str | None, typer.Option("--model", help="Model whose features embed the data (near duplicates, label probe) and whose accuracy on leaked vs clean test items is compared (default: a model-free embedding).", rich_help_panel=MODEL)] = None,
    weights: Weights = None,
    pred_probs: Annotated[Path | None, typer.Option("--pred-probs", help="Out-of-sample predicted probabilities of the training items: .npy (n_train, K), or .npz with 'train' (and 'test' for the inflation estimate without a model); never unpickled (default: k-fold linear probe on the embeddings).", rich_help_panel=AUDIT)] = None,
    datasheet: Annotated[Path | None, typer.Option("--datasheet", help="datasheet.yaml (source, SPDX licence, collection, consent, preprocessing): DATASHEET.md with the licence obligations and the gaps.", rich_help_panel=AUDIT)] = None,
    folds: Annotated[int, typer.Option(help="Folds of the cross-validated linear probe (out-of-sample probabilities).", rich_help_panel=AUDIT)] = 5,
    max_leaked_share: Annotated[float, typer.Option(help="A leaked share of the test set at or above this fails the leakage section (any leak warns).", rich_help_panel=AUDIT)] = 0.01,
    examples: Annotated[int, typer.Option(help="Flagged items of each kind shown as thumbnails or snippets in the report.", rich_help_panel=OUTPUT)] = 12,
    seed: Seed = 0,
    confidence: Confidence = 0.95,
    backend: BackendName = "local",
    ray_address: RayAddress = None,
    num_workers: NumWorkers = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: evidence.json, flagged.csv, report.html, report.md (DATASHEET.md with --datasheet).", rich_help_panel=OUTPUT)] = Path("assay-audit"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Audit training (and test) data: exact and near duplicates, test->train leakage and the accuracy it inflates, label issues, integrity, datasheet."""
    from assay.audit import AuditSettings, audit_inputs, datasheet_input, flagged_summary, run_audit, write_audit
    from assay.evidence.output import check_output
    from assay.report import print_console

    if weights is not None and model is None:
        raise OptionError("--weights was given without --model", where="--weights",
                          fix="give the factory with --model pkg.module:factory, or drop --weights")
    settings = AuditSettings(seed=seed, confidence=confidence, folds=folds, max_leaked_share=max_leaked_share,
                             examples=examples, cache_dir=_cache(cache_dir, no_cache), progress=not quiet,
                             backend=backend, ray_address=ray_address, num_workers=num_workers)
    data_options = {k: v for k, v in {
        "label_col": label_col, "text_col": text_col, "image_size": _image_size(image_size),
        "feature_cols": [c.strip() for c in feature_cols.split(",")] if feature_cols else None,
    }.items() if v is not None}
    inputs = audit_inputs(train, test, model=model, pred_probs=pred_probs, datasheet=datasheet,
                          cache_dir=settings.cache_dir if model is not None else None)
    check_output(out, "audit", inputs=inputs, force=force)  # before the audit, not after it
    sheet = None
    if datasheet is not None:
        sheet = datasheet_input(datasheet)  # an invalid licence fails here, before any work
    run = run_audit(train, test, model=model, pred_probs=pred_probs, datasheet=sheet, settings=settings,
                    data_options=data_options, model_options={"weights": weights} if weights else None)
    path = write_audit(run, out, force=force, inputs=inputs)
    if not quiet:
        print_console(run.evidence)
        say = functools.partial(Console().print, soft_wrap=True)
        say(escape(flagged_summary(run)) + ".")
        say(f"Audit bundle: [bold]{escape(str(path))}[/]  (report: {escape(str(path / 'report.html'))}; every "
            "flagged item in flagged.csv" + ("; DATASHEET.md" if sheet is not None else "") + ")")


# ---------------------------------------------------------------------------------------------- estimate


@app.command(epilog="Exit codes: 0 the queue or the bundle was written; 1 internal error (a bug); 2 bad input (a "
             "budget larger than the pool, a queue drawn for another model or pool, labels for rows not in the "
             "queue, a queued row without a label, an unknown class, an --out or --queue Assay may not write; "
             "nothing written).")
def estimate(
    model: ModelArg,
    unlabeled: Annotated[str, typer.Option("--unlabeled", help="The pool: data (.npz, image folder, .csv/.parquet) whose accuracy is estimated and from which the items to label are drawn; its labels, if any, are read only with --simulate.", rich_help_panel=DATA)],
    label_budget: Annotated[int, typer.Option(help="Labels to pay for: the number of draws (a repeated draw shares its label, so the queue holds at most this many items).")] = 200,
    queue: Annotated[Path | None, typer.Option("--queue", help="The queue CSV to write (fill in its label column; QUEUE.csv.json beside it records the design); with --labels, the original queue whose design record to read (default: beside --labels).", rich_help_panel=OUTPUT)] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="The filled-in queue: estimate the accuracy from it and write the bundle to --out.")] = None,
    simulate: Annotated[bool, typer.Option("--simulate", help="Demo or benchmark: draw the queue and take its labels from the pool's own (the pool must have labels; only the queued items' are read).")] = False,
    selection: Annotated[str, typer.Option(help="Proposal: sawade (variance-optimal for the accuracy, Sawade et al. 2010), difference (per-item centres: more precise when the model is calibrated), expected-loss (Kossen et al. 2021) or uniform.", rich_help_panel=STATISTICS)] = "sawade",
    surrogate_probs: Annotated[Path | None, typer.Option(help="Another model's class probabilities on the pool (.npy, N x C, never unpickled): the draws follow the chance that MODEL's predictions are wrong under them (default: MODEL's own softmax).", rich_help_panel=STATISTICS)] = None,
    label_col: LabelCol = None,
    text_col: TextCol = None,
    feature_cols: FeatureCols = None,
    image_size: ImageSize = None,
    weights: Weights = None,
    threads: Threads = None,
    seed: Seed = 0,
    confidence: Confidence = 0.95,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (with --labels or --simulate): evidence.json, labelled.csv, report.html, report.md.", rich_help_panel=OUTPUT)] = Path("assay-estimate"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Estimate MODEL's accuracy on an unlabelled pool from a few labels: draw the items to label by active testing (importance sampling by the model's expected errors) into --queue, then give the filled-in queue with --labels for unbiased accuracy and per-class accuracy with CIs."""
    from assay.estimate import (
        EstimateSettings,
        design_path,
        estimate_inputs,
        is_design_record,
        is_estimate_queue,
        read_surrogate_probs,
        run_estimate,
        select_queue,
        write_estimate,
        write_queue,
    )
    from assay.evidence.output import check_output, check_output_file
    from assay.report import print_console

    if labels is not None and simulate:
        raise OptionError("--labels and --simulate were both given", where="--simulate",
                          fix="give the filled-in queue with --labels, or --simulate for a pool with labels, not both")
    settings = EstimateSettings(label_budget=label_budget, seed=seed, selection=selection, confidence=confidence,
                                cache_dir=_cache(cache_dir, no_cache), progress=not quiet)
    model_options = {k: v for k, v in {"weights": weights, "threads": threads}.items() if v is not None}
    data_options = {k: v for k, v in {
        "label_col": label_col, "text_col": text_col, "image_size": _image_size(image_size),
        "feature_cols": [c.strip() for c in feature_cols.split(",")] if feature_cols else None,
    }.items() if v is not None}
    inputs = estimate_inputs(model, unlabeled, labels=labels, queue=queue if labels is not None else None,
                             weights=weights, cache_dir=settings.cache_dir if settings.cache_dir is not True else None,
                             surrogate=surrogate_probs)
    surrogate = read_surrogate_probs(surrogate_probs) if surrogate_probs is not None and labels is None else None
    say = functools.partial(Console().print, soft_wrap=True)
    writes_queue = queue is not None and labels is None
    if labels is None and not simulate and queue is None:
        raise OptionError("nothing to do: give --queue to draw the items to label, then --labels with the filled-in "
                          "queue", where="--queue", fix=f"run `assay estimate {model} --unlabeled {unlabeled} "
                          f"--label-budget {label_budget} --queue queue.csv` first")
    if writes_queue:
        assert queue is not None
        check_output_file(queue, is_ours=is_estimate_queue, inputs=inputs, where="--queue",
                          what="a labelling queue written by `assay estimate`")
        check_output_file(design_path(queue), is_ours=is_design_record, inputs=inputs, where="--queue",
                          what="a design record written by `assay estimate`")
    if labels is not None or simulate:
        check_output(out, "estimate", inputs=inputs, force=force)  # before any work
    if writes_queue and not simulate:
        assert queue is not None
        drawn = select_queue(model, unlabeled, settings, surrogate_probs=surrogate, data_options=data_options,
                             model_options=model_options)
        write_queue(drawn, queue)
        if not quiet:
            say(f"Queued {len(drawn.rows)} items to label ({drawn.design['draws_total']} draws, {selection} "
                f"proposal) of the pool's {drawn.population:,} in [bold]{escape(str(queue))}[/] (design: "
                f"{escape(design_path(queue).name)}). Fill in the label column (class names or indices), then: "
                f"`assay estimate {escape(model)} --unlabeled {escape(unlabeled)} --labels {escape(str(queue))} "
                "--out DIR`.")
        return
    run = run_estimate(model, unlabeled, labels=labels, queue=queue if labels is not None else None,
                       simulate=simulate, settings=settings, surrogate_probs=surrogate, data_options=data_options,
                       model_options=model_options)
    if simulate and queue is not None:
        write_queue(run.queue, queue)
    path = write_estimate(run, out, force=force, inputs=inputs)
    if not quiet:
        print_console(run.evidence)
        say(f"Estimate bundle: [bold]{escape(str(path))}[/] (report: {escape(str(path / 'report.html'))})")


# -------------------------------------------------------------------------------------------- scan


@app.command(epilog="Exit codes: 0 safe (every pickle imports only what torch.save writes for tensors and state dicts; "
             "no archive field, TorchScript operator or ONNX data location that would run code or read files); 1 "
             "unsafe or unknown (a dangerous finding, or something that cannot be shown safe: CI can gate on it), and "
             "an internal error (a bug, printed as 'Internal error:'); 2 bad input (a missing file, a malformed or "
             "mismatched --expect-sha256, a --out Assay may not write; nothing written).")
def scan(
    model: Annotated[str, typer.Argument(help="Model file, never loaded: .pt/.pth/.pt2 (every pickle inside), .onnx, .safetensors, a pickle or a zip.")],
    expect_sha256: Annotated[str | None, typer.Option("--expect-sha256", help="The file's sha256 must be this (64 hex digits); a mismatch is an error naming both.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory: scan.json (an evidence section) and scan.md (default: nothing written).", rich_help_panel=OUTPUT)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout instead of the summary.", rich_help_panel=OUTPUT)] = False,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Scan a model file for code it would run when loaded (pickled globals, archive fields, ONNX external data and custom operators) without loading it. Exit 0 safe, 1 unsafe or unknown."""
    from assay.security import check_scan_output, scan_model, write_scan

    if out is not None:
        check_scan_output(out, model, force=force)  # before the scan, not after it
    report = scan_model(model, expect_sha256=expect_sha256)
    if out is not None:
        write_scan(report, out, force=force)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif not quiet:
        say = functools.partial(Console().print, soft_wrap=True)
        colour = {"safe": "green", "unsafe": "red", "unknown": "yellow"}[report.verdict]
        say(f"[bold {colour}]{report.verdict.upper()}[/]  {escape(report.path)}  ({escape(report.file_kind)}, "
            f"{report.pickles} pickle(s), sha256 {report.sha256})")
        for finding in report.findings:
            where = f"  ({escape(finding.where())})" if finding.where() else ""
            say(f"  {finding.severity}: {escape(finding.message)}{where}")
        if out is not None:
            say(f"Scan report: [bold]{escape(str(out / 'scan.md'))}[/]  (also scan.json)")
    if report.verdict != "safe":
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------- serve
SERVE = "Serving"
MONITORING = "Live monitoring"


def _admin_token(path: Path | None) -> str | None:
    """The admin token from --admin-token-file, else ASSAY_ADMIN_TOKEN (never a command-line value: it would show
    in the process list and shell history)."""
    import os

    from assay.errors import OptionError

    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise OptionError(f"cannot read the admin token file ({exc.strerror})", where=str(path),
                              fix="give a readable file holding the token") from None
        if not token:
            raise OptionError("the admin token file is empty", where=str(path), fix="write a long random token in it")
        return token
    return os.environ.get("ASSAY_ADMIN_TOKEN") or None


@app.command(epilog="Exit codes: on SIGTERM/SIGINT the server finishes in-flight requests, flushes the prediction log, "
             "then ends by that signal (as uvicorn does: status 143 / 130 in a shell); 1 internal error (a bug); 2 bad "
             "input (a model, registry reference or option Assay cannot use; nothing started).")
def serve(
    model: Annotated[str, typer.Argument(help="Model file (.onnx, .pt, .pt2), or NAME@ALIAS / NAME@VERSION in the registry (an alias is followed: the server swaps to the version it points to).")],
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
    reference: Annotated[Path | None, typer.Option(help="Evidence bundle whose reference monitoring compares live traffic with.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default; 0.0.0.0 exposes the server).", rich_help_panel=SERVE)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", rich_help_panel=SERVE)] = 8000,
    shadow: Annotated[str | None, typer.Option(help="Challenger NAME@ALIAS (or file) scoring every request off the response path; logged with role shadow.", rich_help_panel=SERVE)] = None,
    canary: Annotated[str | None, typer.Option(help="Challenger NAME@ALIAS (or file) answering a sticky --canary-fraction of requests (by hash of X-Assay-Key, else the request id).", rich_help_panel=SERVE)] = None,
    canary_fraction: Annotated[float, typer.Option(help="Share of requests the --canary answers, in [0, 1].", rich_help_panel=SERVE)] = 0.0,
    max_batch: Annotated[int | None, typer.Option(help="Dynamic batching: group concurrent requests into model calls of up to this many rows (off by default).", rich_help_panel=SERVE)] = None,
    max_wait_ms: Annotated[float, typer.Option(help="Dynamic batching: the longest a request waits for others to join its batch.", rich_help_panel=SERVE)] = 2.0,
    max_batch_rows: Annotated[int, typer.Option(help="Most rows one request may send.", rich_help_panel=SERVE)] = 1024,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, in MiB (refused before it is read).", rich_help_panel=SERVE)] = 16.0,
    top_k: Annotated[int, typer.Option(help="Classes with their probabilities in each answer.", rich_help_panel=SERVE)] = 5,
    admin_token_file: Annotated[Path | None, typer.Option(help="File holding the bearer token of POST /admin/reload (or ASSAY_ADMIN_TOKEN); without one the admin endpoint is off.", rich_help_panel=SERVE)] = None,
    poll_seconds: Annotated[float | None, typer.Option(help="Check the registry alias this often and hot-swap when it moves (default: 10 s for NAME@ALIAS, 0 turns it off).", rich_help_panel=SERVE)] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(help="Allow browser requests from this origin; repeat for more (CORS is off by default).", rich_help_panel=SERVE)] = None,
    log_store: Annotated[str | None, typer.Option(help="Prediction log store: a folder (Parquet segments), sqlite:///FILE or postgresql+psycopg://... (default .assay/logs/).", rich_help_panel=SERVE)] = None,
    durability: Annotated[str, typer.Option(help="fast: answer at once, rows committed within a commit window; strict: answer only once the row is committed.", rich_help_panel=SERVE)] = "fast",
    log_queue_size: Annotated[int, typer.Option(help="Prediction log rows that may wait to be committed.", rich_help_panel=SERVE)] = 10_000,
    log_on_full: Annotated[str, typer.Option(help="When the log queue is full: shed (drop the rows, counted in /metrics as assay_log_dropped_total; the answer is not delayed) or block (the request waits for room).", rich_help_panel=SERVE)] = "shed",
    log_inputs: Annotated[bool, typer.Option("--log-inputs", help="Keep each request's inputs in the prediction log.", rich_help_panel=SERVE)] = False,
    log_features: Annotated[bool, typer.Option("--log-features", help="Keep the model's embedding of each row in the prediction log (when the model exposes features).", rich_help_panel=SERVE)] = False,
    log_retention: Annotated[str | None, typer.Option(help="Delete prediction log rows (and labels) older than this, e.g. 30d, 12h or 1d12h; checked every minute (default: keep every row).", rich_help_panel=SERVE)] = None,
    log_max_size: Annotated[str | None, typer.Option(help="Keep the Parquet prediction log under this size, e.g. 10GB or 500MiB, the oldest segments deleted first (not for SQL stores: use --log-retention).", rich_help_panel=SERVE)] = None,
    monitor: Annotated[bool, typer.Option("--monitor", help="Watch live traffic: drift windows against the model's evaluation reference, label-free and realized accuracy, the challenger's always-valid comparison; GET /dashboard and /v1/monitor.", rich_help_panel=MONITORING)] = False,
    monitor_window: Annotated[str, typer.Option(help="Drift window: rows (1000) or time (10m, 1h).", rich_help_panel=MONITORING)] = "1000",
    auto_stop: Annotated[bool, typer.Option("--auto-stop/--no-auto-stop", help="Stop the --shadow/--canary challenger once it is worse than the champion with confidence (routing off, alias unchanged, recorded in the registry's audit log).", rich_help_panel=MONITORING)] = True,
    auto_promote: Annotated[bool, typer.Option("--auto-promote", help="Promote the challenger through the registry gate once it is non-inferior (within --rollout-margin) with confidence (off by default).", rich_help_panel=MONITORING)] = False,
    auto_rollback: Annotated[bool, typer.Option("--auto-rollback", help="Roll the alias back (and hot-swap) once estimated or realized accuracy is below --accuracy-floor with confidence.", rich_help_panel=MONITORING)] = False,
    accuracy_floor: Annotated[float | None, typer.Option(help="The accuracy the production model must keep (for --auto-rollback and the dashboard).", rich_help_panel=MONITORING)] = None,
    rollout_alpha: Annotated[float, typer.Option(help="Error rate of each rollout decision over the rollout's whole life (always-valid confidence sequences).", rich_help_panel=MONITORING)] = 0.05,
    rollout_margin: Annotated[float, typer.Option(help="Accuracy a challenger may lose and still count as non-inferior.", rich_help_panel=MONITORING)] = 0.02,
) -> None:
    """Serve MODEL over HTTP: predictions, feedback labels, health, Prometheus metrics, a prediction log, hot swap when a registry alias moves, shadow and canary challengers, and (--monitor) live monitoring with automatic canary stop and rollback."""
    from assay.errors import ModelError, OptionError
    from assay.serve.app import ModelSource, create_app
    from assay.serve.server import serve as run_server

    token = _admin_token(admin_token_file)
    if canary_fraction > 0 and canary is None:
        raise OptionError("--canary-fraction was given without --canary", where="--canary-fraction",
                          fix="name the challenger with --canary NAME@ALIAS")
    if durability not in ("fast", "strict"):
        raise OptionError(f"--durability {durability!r} is not fast or strict", where="--durability",
                          fix="use --durability fast (default) or strict")
    if log_on_full not in ("shed", "block"):
        raise OptionError(f"--log-on-full {log_on_full!r} is not shed or block", where="--log-on-full",
                          fix="use --log-on-full shed (default) or block")
    from assay.engine.cache import parse_duration
    from assay.serve.log import parse_size

    retention_s = None if log_retention is None else parse_duration(log_retention, where="--log-retention")
    max_log_bytes = None if log_max_size is None else parse_size(log_max_size, where="--log-max-size")
    if max_body_mb <= 0 or max_batch_rows < 1 or top_k < 1:
        raise OptionError("--max-body-mb, --max-batch-rows and --top-k must be positive", where="--max-body-mb",
                          fix="give positive limits")
    live = None
    if monitor or auto_rollback or auto_promote:
        from assay.serve.monitoring import LiveMonitorSettings

        try:
            live = LiveMonitorSettings(window=monitor_window, alpha=rollout_alpha, margin=rollout_margin,
                                       accuracy_floor=accuracy_floor, auto_stop=auto_stop, auto_promote=auto_promote,
                                       auto_rollback=auto_rollback)
        except OptionError as exc:
            flag = {"alpha": "--rollout-alpha", "margin": "--rollout-margin", "floor": "--accuracy-floor",
                    "auto_rollback": "--auto-rollback", "window": "--monitor-window"}.get(exc.where or "", exc.where)
            raise OptionError(exc.what, where=flag, fix=exc.fix) from None
    registry_url, artifacts_dir = registry, None if artifacts is None else str(artifacts)
    sources = {}
    for role, value in (("model", model), ("--shadow", shadow), ("--canary", canary)):
        if value is None:
            continue
        source = ModelSource(value, registry=registry_url, artifacts=artifacts_dir)
        if source.is_registry:
            try:
                source.current_version()  # an unknown name or alias fails here, before the server starts
            except UserError as exc:
                raise UserError(exc.what, where=value, fix=exc.fix) from None
        elif not Path(value).exists() and ":" not in value:
            raise ModelError("model file not found", where=value, fix="check the path, or give NAME@ALIAS")
        source.preload()  # a model that cannot be loaded fails here (exit 2), not behind a 503 from /readyz
        sources[role] = source
    if poll_seconds is None:
        poll_seconds = 10.0 if any(s.is_registry for s in sources.values()) else 0.0
    from assay.serve.log import open_log

    sink = open_log(log_store, durability="strict" if durability == "strict" else "fast", queue_size=log_queue_size,
                    on_full="block" if log_on_full == "block" else "shed", retention_s=retention_s,
                    max_bytes=max_log_bytes)
    try:
        app_ = create_app(sources["model"], reference=None if reference is None else str(reference),
                          shadow=sources.get("--shadow"), canary=sources.get("--canary"),
                          canary_fraction=canary_fraction, admin_token=token, max_body_bytes=int(max_body_mb * 2**20),
                          max_batch_rows=max_batch_rows, top_k=top_k, sink=sink, cors_origins=cors_origin,
                          poll_seconds=poll_seconds or None, max_batch=max_batch, max_wait_ms=max_wait_ms,
                          log_inputs=log_inputs, log_features=log_features, monitor=live)
    except BaseException:
        sink.close()
        raise
    Console(stderr=True).print(f"Serving {escape(model)} on http://{host}:{port} (Ctrl-C or SIGTERM stops it).")
    run_server(app_, host, port)


# ------------------------------------------------------------------------------------------- feedback
feedback_app = AssayTyper(
    cls=AssayGroup, name="feedback", no_args_is_help=True, add_completion=False,
    help="The feedback loop on the prediction log of `assay serve`: which logged predictions to label next "
         "(queue), labels back into the log (import; also POST /v1/feedback), and the labelled slice of the log "
         "as --data for `assay evaluate` and `assay compare` (dataset).")
app.add_typer(feedback_app, name="feedback")

LogStoreOption = Annotated[str | None, typer.Option(
    "--log", help="The prediction log `assay serve` wrote: a folder (Parquet segments), sqlite:///FILE or "
                  "postgresql+psycopg://... (default .assay/logs/ in the current folder).")]
LogSince = Annotated[str | None, typer.Option(help="Only predictions logged at or after this time: Unix seconds or "
                                                "an ISO 8601 date/time (UTC unless it names a zone).")]
LogUntil = Annotated[str | None, typer.Option(help="Only predictions logged before this time: Unix seconds or an ISO "
                                                "8601 date/time (UTC unless it names a zone).")]


def _log_time(text: str | None, flag: str) -> float | None:
    """Unix seconds from ``--since``/``--until``: a number, or an ISO 8601 date/time (naive = UTC)."""
    from datetime import datetime, timezone

    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OptionError(f"{flag} {text!r} is neither Unix seconds nor an ISO 8601 date/time", where=flag,
                          fix="write e.g. 1767225600 or 2026-01-01T00:00:00") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
LogVersion = Annotated[str | None, typer.Option(help="Only predictions of this model version (as logged, e.g. "
                                                     "digits@3).")]
ReferenceBundle = Annotated[str | None, typer.Option(
    "--reference", metavar="NAME@ALIAS|BUNDLE", help="The served model's evaluation bundle (or its reference.npz), "
    "or NAME@ALIAS / NAME@VERSION in the registry: class names, and the sample of rows novelty is measured against.")]


def _log_frame(log: str | None, since_text: str | None = None, until_text: str | None = None,
               version: str | None = None) -> Any:
    """The prediction log's frame; a folder that does not exist is an error (the store would create it)."""
    from assay.serve.log import read_log

    since, until = _log_time(since_text, "--since"), _log_time(until_text, "--until")
    if log is not None and "://" not in log and not Path(log).is_dir():
        raise OptionError(f"there is no prediction log at {log}", where="--log",
                          fix="give the folder `assay serve --log-store` wrote to (or its sqlite:///... URL)")
    frame = read_log(log, since=since, until=until, version=version)
    if frame.empty and (since, until, version) != (None, None, None):
        everything = read_log(log)
        if not everything.empty:  # the filters, not the log, left nothing
            versions = ", ".join(sorted(map(str, everything["version"].unique()))[:10])
            raise OptionError(f"none of the {len(everything):,} logged predictions (logged between "
                              f"{everything['time'].min():.0f} and {everything['time'].max():.0f}, versions "
                              f"{versions}) matches --version/--since/--until", where="--version",
                              fix="widen the filters (times are Unix seconds) or leave them out")
    return frame


def _reference(spec: str | None, registry: str | None, artifacts: Path | None) -> Any:
    """The Reference of a bundle or registered version (as `assay monitor --reference` reads it), or None."""
    from assay.monitor import load_monitor_reference

    return None if spec is None else load_monitor_reference(spec, registry=registry, artifacts=artifacts).reference


@feedback_app.command("queue", epilog="Exit codes: 0 the queue was written (it may be empty: everything is "
                      "labelled); 1 internal error (a bug); 2 bad input (no log there, a bad --reference or --out; "
                      "nothing written).")
def feedback_queue(
    n: Annotated[int, typer.Option("--n", "-n", help="How many samples to queue for labeling.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The queue: a CSV with a blank label column to fill "
                                      "in and give to `assay feedback import`.", rich_help_panel=OUTPUT)],
    log: LogStoreOption = None,
    reference: ReferenceBundle = None,
    version: LogVersion = None,
    since: LogSince = None,
    until: LogUntil = None,
    seed: Seed = 0,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Queue the N logged samples most worth labeling: uncertain, unlike the reference, or where a shadow/canary
    disagrees with the answer; one per distinct input, labelled ones skipped, each with its reason."""
    from assay.evidence.output import check_output_file
    from assay.monitor.labeling import is_labeling_queue, select_for_labeling, write_queue_csv

    check_output_file(out, is_ours=is_labeling_queue, what="a labeling queue written by `assay feedback queue`")
    ref = _reference(reference, registry, artifacts)
    queue = select_for_labeling(_log_frame(log, since, until, version), n, reference=ref, seed=seed)
    write_queue_csv(queue, out)
    say = functools.partial(Console().print, soft_wrap=True)
    for note in queue.attrs.get("notes", []):
        say(f"note: {escape(note)}")
    say(f"Queued {len(queue)} of {queue.attrs.get('candidates', 0)} unlabelled distinct inputs in "
        f"[bold]{escape(str(out))}[/] (fill in the label column, then `assay feedback import {escape(str(out))}`).")
    for row in queue.head(5).itertuples(index=False):
        say(f"  {escape(str(row.request_id))} row {row.row}: score {row.score:.2f}: {escape(str(row.reason))}")


@feedback_app.command("import", epilog="Exit codes: 0 imported (labels naming request rows that are not in the "
                      "log are listed on stderr and not imported; lines with a blank label are skipped); 1 internal "
                      "error (a bug); 2 bad input (a missing column, an unknown label, a file that is not UTF-8 CSV, "
                      "a request row labelled twice differently, unknown request rows with --strict; nothing is "
                      "written).")
def feedback_import(
    labels: Annotated[Path, typer.Argument(help="CSV with columns request_id, label and optionally row (the index "
                                           "in the request's batch, default 0); labels are class names or indices; "
                                           "a filled-in `assay feedback queue` file works as it is.")],
    log: LogStoreOption = None,
    reference: ReferenceBundle = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse the whole file when a label names a request row "
                                         "that is not in the log.")] = False,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Import true labels into the prediction log (as POST /v1/feedback does): checked whole before anything is
    written; the latest label of a request row wins."""
    from assay.errors import DataError
    from assay.monitor.labeling import import_labels, read_label_csv
    from assay.serve.log import open_log

    frame = _log_frame(log)
    if frame.empty:
        raise DataError("the prediction log holds no predictions to label", where=log or "--log",
                        fix="give the store `assay serve` logged to")
    num_classes = len(frame["logits"].iloc[0])
    ref = _reference(reference, registry, artifacts)
    names = ref.class_names if ref is not None else None
    if names is not None and len(names) != num_classes:
        raise DataError(f"the reference has {len(names)} classes, the logged model {num_classes}",
                        where="--reference", fix="give the bundle of the model that served these predictions")
    rows, blank = read_label_csv(labels, num_classes=num_classes, class_names=names)
    if not rows:
        raise DataError("no line of the file has a label" + (f" ({blank} blank)" if blank else ""),
                        where=str(labels), fix="fill in the label column (a class name or index per line)")
    with open_log(log, durability="strict", compact_every_s=None) as sink:
        result = import_labels(rows, frame, sink, strict=strict)
    say = functools.partial(Console().print, soft_wrap=True)
    say(f"Imported {len(result.written)} labels into {escape(log or '.assay/logs')}"
        + (f"; {blank} lines with a blank label skipped" if blank else "") + ".")
    from assay.monitor.labeling import queue_estimate

    estimated = queue_estimate(labels, num_classes=num_classes, class_names=names)
    if estimated is not None:  # an importance-sampled queue (`assay monitor --export-labeling`), labelled in full
        say(f"The queue's labels estimate the logged traffic's accuracy at {estimated.value:.3f} "
            f"[{estimated.ci_low:.3f}, {estimated.ci_high:.3f}] (unbiased: {estimated.labels} labels, "
            f"{estimated.draws} importance-sampled draws).")
    if result.unknown:
        shown = ", ".join(f"{escape(u.request_id)} row {u.row} (line {u.line})" for u in result.unknown[:10])
        more = f" and {len(result.unknown) - 10} more" if len(result.unknown) > 10 else ""
        err_console.print(f"[bold yellow]Warning:[/] {len(result.unknown)} labels name request rows that are not in "
                          f"the log and were not imported: {shown}{more}.", soft_wrap=True)


@feedback_app.command("dataset", epilog="Exit codes: 0 the data set was written; 1 internal error (a bug); 2 bad "
                      "input (no log there, predictions logged without --log-inputs, no labelled row with "
                      "--labelled-only, an --out Assay must not overwrite; nothing written).")
def feedback_dataset(
    out: Annotated[Path, typer.Option("--out", "-o", help="The .npz to write (x, y, ids request_id:row, "
                                      "meta_version, meta_time).", rich_help_panel=OUTPUT)],
    log: LogStoreOption = None,
    labelled_only: Annotated[bool, typer.Option("--labelled-only", help="Only the labelled predictions (with y); "
                                                "without it every logged prediction, with y only when all are "
                                                "labelled (else unlabelled data for --unlabeled).")] = False,
    version: LogVersion = None,
    since: LogSince = None,
    until: LogUntil = None,
    reference: ReferenceBundle = None,
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
) -> None:
    """Write the logged inputs (served with --log-inputs) and their labels as an .npz that `assay evaluate --data`
    and `assay compare --data` read: one sample per request row, in time order."""
    from assay.evidence.output import check_output_file
    from assay.monitor.labeling import is_feedback_dataset, labelled_arrays, write_dataset_npz

    if out.suffix.lower() != ".npz":
        raise OptionError(f"--out {out} does not end in .npz", where="--out", fix="name the file e.g. labelled.npz")
    log_dir = [Path(log).resolve()] if log is not None and "://" not in log else []
    check_output_file(out, is_ours=is_feedback_dataset, what="a data set written by `assay feedback dataset`",
                      inputs=log_dir)
    ref = _reference(reference, registry, artifacts)
    data = labelled_arrays(_log_frame(log, since, until, version), labelled_only=labelled_only)
    write_dataset_npz(data, out, class_names=None if ref is None else ref.class_names,
                      source={"log": log or ".assay/logs", "version": version or ""})
    say = functools.partial(Console().print, soft_wrap=True)
    for note in data.notes:
        say(f"note: {escape(note)}")
    what = "labelled" if data.y is not None else "unlabelled"
    say(f"Wrote {len(data.x)} {what} samples to [bold]{escape(str(out))}[/] (inputs {data.x.shape[1:]}, "
        f"{data.x.dtype}); use it with `assay evaluate MODEL --data {escape(str(out))}`"
        + (" or `assay compare BASELINE CANDIDATE --data ...`." if data.y is not None else
           " --unlabeled, or --labelled-only for the labelled ones."))


# -------------------------------------------------------------------------------------------- monitor
MONITOR = "Monitoring"


def _is_dashboard(path: Path) -> bool:
    """An HTML file `assay monitor --html` wrote (so that it may be replaced)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in head and "monitor" in head.lower()


@app.command(epilog="Exit codes: 0 no alarm in the windows this run evaluated; 1 an alarm (a window's tests rejected "
             "after Benjamini-Hochberg, a calibrated threshold crossed, or realized accuracy from feedback labels below "
             "the reference's with confidence; see the report), or an internal "
             "error (printed as 'Internal error:'); 2 bad input (no log there, a reference Assay cannot use, bad "
             "options, a state folder built for another reference or settings; nothing written).")
def monitor(
    log: LogStoreOption = None,
    reference: Annotated[str | None, typer.Option(metavar="NAME@ALIAS|BUNDLE", help="What traffic is compared with: the evaluation bundle of the served model (its reference.npz), or NAME@ALIAS / NAME@VERSION in the registry.")] = None,
    window: Annotated[str, typer.Option(help="Window: a number of rows (1000) or a duration of log time (30s, 15m, 1h, 1d).", rich_help_panel=MONITOR)] = "1000",
    min_window: Annotated[int, typer.Option(help="Fewer rows than this in a window: 'insufficient data', no test.", rich_help_panel=MONITOR)] = 100,
    fdr: Annotated[float, typer.Option(help="False discovery rate of the Benjamini-Hochberg procedure across a window's tests (also its false-alarm rate under no drift).", rich_help_panel=MONITOR)] = 0.05,
    threshold_rule: Annotated[str, typer.Option(help="Thresholds calibrated on reference chunks (class mix of large windows): quantile (conformal order statistic) or sigma (mean + 3 sd).", rich_help_panel=MONITOR)] = "quantile",
    roles: Annotated[str, typer.Option(help="Logged roles to monitor, comma-separated: primary, shadow, canary.", rich_help_panel=MONITOR)] = "primary",
    state: Annotated[Path | None, typer.Option(help="State folder: the next run continues where this one stopped (without it, the whole log is processed every run).", rich_help_panel=MONITOR)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder: monitor.json, monitor.md, dashboard.html.", rich_help_panel=OUTPUT)] = None,
    html: Annotated[Path | None, typer.Option(help="Write the dashboard page (the one `assay serve` shows at /dashboard) to this file.", rich_help_panel=OUTPUT)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON instead of a summary.", rich_help_panel=OUTPUT)] = False,
    export_labeling: Annotated[int | None, typer.Option(help="Also write a queue of N logged samples to label to --labeling-queue (see --labeling-selection).", rich_help_panel=OUTPUT)] = None,
    labeling_selection: Annotated[str, typer.Option(help="How --export-labeling picks: estimate (importance sampling by expected error, as `assay estimate` does: the labels give an unbiased accuracy estimate of the traffic, which `assay feedback import` prints) or informative (the most uncertain, novel or disputed samples, as `assay feedback queue` does: training data, biased for accuracy).", rich_help_panel=OUTPUT)] = "estimate",
    labeling_queue: Annotated[Path, typer.Option(help="Where --export-labeling writes its CSV (fill in the label column, then `assay feedback import`).", rich_help_panel=OUTPUT)] = Path("labeling-queue.csv"),
    registry: RegistryUrl = None,
    artifacts: ArtifactsDir = None,
    seed: Seed = 0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Monitor the prediction log against the reference, window by window: output drift (class mix, confidence, entropy, near-margin share), input drift (features, embeddings: MMD), label-free accuracy (ATC, DoC) with CIs, realized accuracy from feedback labels, OOD rate; alarms with a controlled false-alarm rate."""
    from assay.evidence.output import check_output, check_output_file, input_paths
    from assay.monitor import Monitor, MonitorSettings, load_monitor_reference, parse_window, write_monitor_report

    if reference is None:
        raise OptionError("--reference is required", where="--reference",
                          fix="give the evaluation bundle of the served model, or NAME@ALIAS of a registered model")
    if threshold_rule not in ("quantile", "sigma"):
        raise OptionError(f"--threshold-rule {threshold_rule!r} is not quantile or sigma", where="--threshold-rule",
                          fix="use --threshold-rule quantile (default) or sigma")
    kind, size = parse_window(window)
    settings = MonitorSettings(window_kind=kind, window_size=int(size) if kind == "count" else size,
                               min_window=min_window, fdr=fdr, threshold_rule="sigma" if threshold_rule == "sigma"
                               else "quantile", roles=tuple(r.strip() for r in roles.split(",") if r.strip()),
                               seed=seed)
    local_inputs = input_paths(reference, log, state)
    if out is not None:  # bad output paths fail before any work
        check_output(out, "monitor", inputs=local_inputs, force=force)
    if html is not None:
        check_output_file(html, is_ours=_is_dashboard, what="a dashboard written by `assay monitor --html`",
                          inputs=local_inputs, where="--html")
    if export_labeling is not None:
        from assay.monitor.labeling import is_labeling_queue

        if export_labeling < 1:
            raise OptionError(f"--export-labeling {export_labeling} is not a positive number of samples",
                              where="--export-labeling", fix="ask for e.g. --export-labeling 100")
        if labeling_selection not in ("estimate", "informative"):
            raise OptionError(f"--labeling-selection {labeling_selection!r} is not estimate or informative",
                              where="--labeling-selection", fix="use estimate (default) or informative")
        check_output_file(labeling_queue, is_ours=is_labeling_queue, inputs=local_inputs, where="--labeling-queue",
                          what="a labeling queue written by `assay feedback queue` or `assay monitor`")
    source = load_monitor_reference(reference, registry=registry, artifacts=artifacts)
    mon = Monitor(source.reference, settings, state_dir=state, reference_logits=source.logits, info=source.info)
    frame = _log_frame(log)
    before = mon.position
    closed = mon.update(frame)
    queue = None
    if export_labeling is not None:  # over the whole log: `assay estimate`'s selection, or `assay feedback queue`'s
        from assay.monitor.labeling import select_for_estimate, select_for_labeling, write_queue_csv

        if labeling_selection == "estimate":
            queue = select_for_estimate(frame, export_labeling, seed=seed)
        else:
            queue = select_for_labeling(frame, export_labeling, reference=source.reference, seed=seed)
        write_queue_csv(queue, labeling_queue)
    snapshot = mon.snapshot()
    current = mon.open_result()
    evaluated = [*closed, *([current] if current is not None else [])]
    # The snapshot's alarms: the window's tests and, once labels arrived, realized accuracy below the reference.
    shown = {w["index"]: w["alarms"] for w in snapshot["windows"]}
    alarms_of = {w.index: shown.get(w.index, list(w.alarms)) for w in evaluated}
    alarmed = [w for w in evaluated if alarms_of[w.index]]
    if out is not None:
        write_monitor_report(snapshot, out, force=force, inputs=local_inputs)
    if html is not None:
        from assay.report.dashboard import write_dashboard

        write_dashboard(snapshot, html)
    if as_json:
        typer.echo(json.dumps(snapshot, indent=1, allow_nan=False, default=str))
    elif not quiet:
        say = functools.partial(Console().print, soft_wrap=True)
        say(f"Monitored {mon.position - before:,} new logged rows against {escape(reference)} ({mon.position:,} in "
            f"all): {len(closed)} window(s) closed this run"
            + (f", the open one holds {mon.open.n:,} rows" if mon.open is not None else "") + ".")
        for w in evaluated:
            if w.insufficient:
                continue
            est = w.estimated_accuracy
            acc = f"ATC accuracy {est['value']:.3f} [{est['ci'][0]:.3f}, {est['ci'][1]:.3f}]" if est else ""
            alarms = alarms_of[w.index]
            flag = "[bold red]ALARM[/]" if alarms else "ok"
            say(f"  window {w.index} ({w.n:,} rows): {flag} {acc}")
            for alarm in alarms[:5]:
                say(f"    {escape(alarm)}")
            if len(alarms) > 5:
                say(f"    ... and {len(alarms) - 5} more (see the report)")
        if out is not None:
            say(f"Report: [bold]{escape(str(out))}[/] (monitor.json, monitor.md, dashboard.html)")
        if html is not None:
            say(f"Dashboard: [bold]{escape(str(html))}[/]")
        if queue is not None:
            say(f"Labeling queue: [bold]{escape(str(labeling_queue))}[/] ({len(queue)} of "
                f"{queue.attrs.get('candidates', 0)} unlabelled distinct inputs; fill in the label column, then "
                f"`assay feedback import {escape(str(labeling_queue))}`)")
    if alarmed:
        raise typer.Exit(1)


# ------------------------------------------------------------------- parameter names -> flags
# Library parameters a command fills from one of its own under another name: `assay profile` hands the library
# a `sample` of the inputs its --data names.
LIBRARY_NAMES: dict[str, dict[str, str]] = {"profile": {"sample": "data"}, "registry register": {"tags": "tag"}}


def _command_path(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, as its words (``compare``, ``cache clear``): the words that are not flags, taken
    while they name a command of the group reached so far; None when they name no command."""
    command: Any = typer.main.get_command(app)
    words: list[str] = []
    for arg in argv:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            break
        if arg.startswith("-"):
            continue
        if arg not in subcommands:
            return None
        command = subcommands[arg]
        words.append(arg)
    return " ".join(words) if words and getattr(command, "commands", None) is None else None


@functools.cache
def _parameter_flags(command: str) -> dict[str, str]:
    """Python parameter name -> what sets it on the command line in ``command`` (``n_bootstrap`` ->
    ``--n-bootstrap``, ``model`` -> ``MODEL``; ``command`` may be a group's, ``cache clear``), read from the Typer
    app itself so that it cannot fall behind. A command's parameters carry the library's names
    (``latency_budget_s`` behind ``--latency-budget``); :data:`LIBRARY_NAMES` adds the others."""
    sub: Any = typer.main.get_command(app)
    for word in command.split():
        sub = getattr(sub, "commands", {}).get(word)
    flags: dict[str, str] = {}
    for param in getattr(sub, "params", []):
        if param.name is None:
            continue
        if param.param_type_name == "argument":
            flags[param.name] = param.name.upper()
        else:
            long = [o for o in param.opts if o.startswith("--")]
            flags[param.name] = (long or list(param.opts))[0]
    for library_name, own in LIBRARY_NAMES.get(command, {}).items():
        flags.setdefault(library_name, flags[own])
    return flags


def cli_where(where: str | None, argv: Sequence[str]) -> str | None:
    """The one place where a library error's ``where=`` (a Python parameter name, as library errors name
    it; ``max-accuracy-drop`` is read as ``max_accuracy_drop``) becomes the flag of the command ``argv`` runs.
    Anything else (a path, a file, a phrase) is left alone, and so is a name the user typed as a value (a
    folder called ``data`` stays ``data``)."""
    if not where:
        return where
    command = _command_path(argv)
    if command is None or where in argv:
        return where
    flags = _parameter_flags(command)
    return flags.get(where) or flags.get(where.replace("-", "_"), where)


def _current_flags(text: str | None, argv: Sequence[str]) -> str | None:
    """``text`` with the old names of the running command's renamed flags replaced by the new ones (a library
    message written before a rename still points at the flag the command has now)."""
    command = _command_path(argv)
    if not text or command is None:
        return text
    for old, new in RENAMED_FLAGS.get(command, {}).items():
        text = re.sub(rf"{re.escape(old)}(?![\w-])", new, text)
    return text


def _user_error_text(exc: UserError, argv: Sequence[str]) -> str:
    """The message of a user error as the command line shows it: ``where`` in flags, not parameter names, and
    renamed flags by their current names."""
    what, where, fix = (_current_flags(exc.what, argv), cli_where(exc.where, argv), _current_flags(exc.fix, argv))
    unchanged = (what, where, fix) == (exc.what, exc.where, exc.fix)
    return str(exc) if unchanged else str(UserError(what or exc.what, where=where, fix=fix))


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, turning UserError into exit 2 without a traceback."""
    import warnings

    # The cache's warning also reaches the report and the console header as a run-level finding: once is enough.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"assay\.engine\.")
    _deprecation_notes.clear()
    try:
        # Without standalone mode, click returns the code of a typer.Exit instead of raising it.
        code = app(args=argv, prog_name="assay", standalone_mode=False)
    except UserError as exc:
        text = _user_error_text(exc, sys.argv[1:] if argv is None else argv)
        err_console.print(f"[bold red]Error:[/] {escape(text)}", soft_wrap=True)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("Aborted.")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: missing/bad options (exit 2)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}")
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:  # internal bugs
        if os.environ.get("ASSAY_DEBUG"):
            raise
        err_console.print(
            f"[bold red]Internal error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
            "This is a bug in Assay; re-run with ASSAY_DEBUG=1 for the traceback and please report it.")
        return 1
    finally:  # after the command's own output and after any error, which stays the first line of stderr
        for note in _deprecation_notes:
            err_console.print(f"[bold yellow]Warning:[/] {escape(note)}.", soft_wrap=True)
    if code == 130:  # typer turns Ctrl-C into a silent exit code 130 (no command of ours returns it)
        err_console.print("Aborted.")
    return code if isinstance(code, int) else 0



def console_main() -> None:
    """The ``assay`` script (see :mod:`assay._entry`, which also catches Ctrl-C while this module imports)."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
