"""Progress of long work (assay.progress): plain rate-bounded lines off a terminal, a Rich bar on one, nothing
when quiet; and the commands that do long work show it."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from assay.progress import format_seconds, scope, stage, track

ANSI = re.compile(r"\x1b\[")


class FakeClock:
    """Seconds set by the test: no sleeping, no real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, force_interactive=False), buffer


def terminal_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, force_interactive=True, width=120), buffer


@pytest.fixture(autouse=True)
def _no_terminal_overrides(monkeypatch):
    """Rich reads these to decide what a terminal is; the tests decide it themselves."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------- plain lines


def test_plain_lines_have_name_elapsed_eta_and_a_done_line_and_are_rate_bounded():
    """1000 batches of 0.1 s on a fake clock: a start line, a progress line every 5 s (at 5, 10, ..., 95 s:
    19 of them; the last batch ends at 100 s, which the done line reports), a done line -- 21 in all."""
    console, buffer = plain_console()
    clock = FakeClock()
    with stage("inference", total=1000, unit="batches", enabled=True, console=console, clock=clock) as advance:
        advance.detail("[clean]")
        for i in range(1000):
            clock.now = (i + 1) * 0.1
            advance()
    text = buffer.getvalue()
    assert not ANSI.search(text) and "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 21, text
    assert lines[0] == "assay: inference started (1000 batches)"
    # Hand-computed: at 5.0 s, 50 of 1000 done -> 0.1 s each -> 950 left take 95 s.
    assert lines[1] == "assay: inference [clean] 50/1000 batches, 5.0 s elapsed, ETA 1 min 35 s"
    assert lines[-2] == "assay: inference [clean] 950/1000 batches, 1 min 35 s elapsed, ETA 5.0 s"
    assert all(" elapsed, ETA " in line for line in lines[1:-1])
    assert lines[-1] == "assay: inference done in 1 min 40 s (1000 batches)"


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.floats(0.0, 20.0, allow_nan=False), min_size=1, max_size=300),
       interval=st.floats(0.5, 30.0))
def test_progress_lines_are_at_least_one_interval_apart(steps, interval):
    """Whatever the step durations, progress lines come at most once per interval: their count is at most
    the run's length / interval, and consecutive ones are an interval apart (read from their elapsed time)."""
    console, buffer = plain_console()
    clock = FakeClock()
    with stage("work", total=len(steps) + 1, enabled=True, console=console, clock=clock, interval=interval) as advance:
        for seconds in steps:
            clock.now += seconds
            advance()
    lines = buffer.getvalue().splitlines()
    progress_lines = lines[1:-1]
    assert lines[0].startswith("assay: work started") and lines[-1].startswith("assay: work done in")
    assert len(progress_lines) <= clock.now / interval + 1e-9
    # Every step is counted once: the k-th progress line shows how many steps were done when it was written.
    counts = [int(re.search(r" (\d+)/\d+ steps", line).group(1)) for line in progress_lines]
    assert counts == sorted(set(counts))
    times = np.cumsum(steps)
    written_at = [times[c - 1] for c in counts]
    assert all(b - a >= interval - 1e-9 for a, b in zip([0.0, *written_at], written_at, strict=False))


def test_no_total_no_eta_and_a_failure_says_stopped():
    console, buffer = plain_console()
    clock = FakeClock()
    with pytest.raises(RuntimeError), stage("scan", unit="files", enabled=True, console=console,
                                            clock=clock) as advance:
        for _ in range(3):
            clock.now += 4.0
            advance()
        raise RuntimeError("boom")
    assert buffer.getvalue().splitlines() == [
        "assay: scan started",
        "assay: scan 2 files, 8.0 s elapsed",  # first line at >= 5 s; no total, so no ETA
        "assay: scan stopped after 12.0 s (3 files)",
    ]


def test_note_is_said_up_front():
    console, buffer = plain_console()
    with stage("training", total=40, unit="epochs", enabled=True, console=console, note="usually ~10 s"):
        pass
    assert buffer.getvalue().splitlines()[0] == "assay: training started (40 epochs, usually ~10 s)"


def test_a_nested_stage_names_where_it_runs():
    console, buffer = plain_console()
    with stage("auditing variants", total=2, unit="variants", enabled=True, console=console) as outer:
        for name in ("fp16", "int8"):
            outer.detail(f"[{name}]")
            with stage("inference", total=1, unit="batches", enabled=True, console=console) as inner:
                inner()
            outer()
        with stage("after", enabled=False, console=console):
            pass
    lines = [re.sub(r"\d+\.\d s", "T", line) for line in buffer.getvalue().splitlines()]
    assert lines == [
        "assay: auditing variants started (2 variants)",
        "assay: auditing variants [fp16] > inference started (1 batches)",
        "assay: auditing variants [fp16] > inference done in T (1 batches)",
        "assay: auditing variants [int8] > inference started (1 batches)",
        "assay: auditing variants [int8] > inference done in T (1 batches)",
        "assay: auditing variants done in T (2 variants)",
    ]


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0.0 s"), (3.14, "3.1 s"), (59.94, "59.9 s"), (59.96, "1 min 00 s"), (95.0, "1 min 35 s"),
    (3599.4, "59 min 59 s"), (3725.0, "1 h 02 min"), (float("nan"), "?"), (-1.0, "?"),
])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


# ------------------------------------------------------------------------------------------- terminal, quiet


def test_a_terminal_gets_a_bar_not_lines():
    console, buffer = terminal_console()
    with stage("inference", total=4, unit="batches", enabled=True, console=console) as advance:
        advance.detail("[clean]")
        for _ in range(4):
            advance()
    text = buffer.getvalue()
    assert ANSI.search(text) and "━" in text and "inference" in text and "4/4" in text
    assert "assay: " not in text


def test_the_terminal_bar_runs_no_thread_of_its_own():
    """A refresh thread would draw while the latency harness times a call: the bar is redrawn only when
    work advances."""
    import threading

    console, _ = terminal_console()
    before = threading.active_count()
    with stage("latency timing", total=2, enabled=True, console=console) as advance:
        assert threading.active_count() == before
        advance()


def test_stages_inside_a_stage_share_the_terminal_display():
    """Rich allows one live display per console: an inner stage joins the outer one as a row (no LiveError)
    and disappears when it ends; the outer stage's bar stays."""
    console, buffer = terminal_console()
    with stage("auditing variants", total=2, unit="variants", enabled=True, console=console) as outer:
        for _ in range(2):
            with stage("inference", total=3, unit="batches", enabled=True) as inner:
                for _ in range(3):
                    inner()
            outer()
    text = buffer.getvalue()
    assert "inference" in text  # drawn while it ran
    final = text.rsplit("\r", 1)[-1]
    assert "auditing variants" in final and "2/2" in final and "inference" not in final


@pytest.mark.parametrize("make_console", [plain_console, terminal_console])
def test_quiet_prints_nothing(make_console):
    console, buffer = make_console()
    with stage("inference", total=10, enabled=False, console=console) as advance:
        advance.detail("[clean]")
        for _ in range(10):
            advance()
    with scope(False), stage("inference", total=10, console=console) as advance:
        advance()
    with stage("inference", total=10, console=console) as advance:  # outside any scope: off
        advance()
    assert buffer.getvalue() == ""


def test_scope_turns_on_stages_opened_deeper_and_an_explicit_value_wins():
    console, buffer = plain_console()
    with scope(True):
        with stage("timing", total=1, console=console) as advance:
            advance()
        with stage("hidden", total=1, console=console, enabled=False) as advance:
            advance()
    text = buffer.getvalue()
    assert "assay: timing started" in text and "assay: timing done in" in text and "hidden" not in text


def test_track_steps_through_items_and_writes_plain_lines_to_stderr(capsys):
    seen = list(track(range(3), "evaluating models", unit="models", enabled=True, label=lambda i: f"m{i}"))
    assert seen == [0, 1, 2]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0] == "assay: evaluating models started (3 models)"
    assert captured.err.splitlines()[-1].startswith("assay: evaluating models done in ")


# ------------------------------------------------------------------------------------------- where it is used


def test_latency_progress_is_written_between_timings_never_inside_one(monkeypatch):
    """The harness times single calls: progress output may come only between batch sizes."""
    from assay.profiling.latency import measure_latency

    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    written_during_call: dict[int, set[int]] = {}

    def run_batch(batch):
        written_during_call.setdefault(len(batch), set()).add(len(stderr.getvalue()))

    measure_latency(run_batch, np.zeros((8, 3), np.float32), batch_sizes=(1, 4, 8), warmup=1, min_runs=5,
                    max_runs=30, budget_s=0.05, progress=True)
    assert all(len(sizes) == 1 for sizes in written_during_call.values()), written_during_call
    lines = stderr.getvalue().splitlines()
    assert lines[0] == "assay: latency timing started (3 batch sizes, at most 0.05 s each)"
    assert lines[-1].startswith("assay: latency timing done in ") and lines[-1].endswith("(3 batch sizes)")
    assert not ANSI.search(stderr.getvalue())


def test_head_to_head_timing_shows_rounds(capsys):
    from assay.profiling.latency import interleaved_latency

    class Fast:
        def logits(self, batch):
            return batch

    interleaved_latency({"a": Fast(), "b": Fast()}, np.zeros((4, 2), np.float32), 4, budget_s=0.05,
                        confidence=0.95, rounds=2, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "assay: head-to-head timing started (4 timings, 2 models x 2 rounds at batch 4, at most 0.05 s)"
    assert err[-1].startswith("assay: head-to-head timing done in ") and err[-1].endswith("(4 timings)")


def test_demo_training_shows_epochs_and_says_how_long(capsys):
    from assay.data.loader import load_data
    from assay.demo import TRAINING_TIME_NOTE, train_digits_cnn

    train = load_data("digits:train")
    train_digits_cnn(train.x[:128], train.y[:128], epochs=2, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"assay: training the demo CNN on digits started (2 epochs, {TRAINING_TIME_NOTE})"
    assert re.fullmatch(r"assay: training the demo CNN on digits done in \d+\.\d s \(2 epochs\)", err[-1])
    train_digits_cnn(train.x[:64], train.y[:64], epochs=1)  # a library call: silent by default
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory) -> Path:
    from assay.data.loader import load_data
    from assay.demo import train_digits_cnn
    from assay.models.export import export_onnx

    train = load_data("digits:train")
    net = train_digits_cnn(train.x, train.y, epochs=1)
    path = tmp_path_factory.mktemp("models") / "digits.onnx"
    export_onnx(net, torch.from_numpy(train.x[:2]), path, class_names=train.class_names)
    return path


def test_evaluate_off_a_terminal_writes_plain_stage_lines(digits_onnx, tmp_path):
    """`assay evaluate ... 2> log` as CI runs it: stderr is a pipe, so the log holds plain lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}

    def assay(out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-c", "from assay._entry import console_main; console_main()", "evaluate",
                str(digits_onnx), "--data", "digits", "--out", str(tmp_path / out), "--cache-dir",
                str(tmp_path / "cache"), "--n-bootstrap", "100", *extra]
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)

    done = assay("bundle")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert not ANSI.search(err) and "\r" not in err, err
    lines = err.splitlines()
    assert re.fullmatch(r"assay: inference started \(\d+ batches, view clean\)", lines[0]), err
    assert any(re.fullmatch(r"assay: inference done in \d+\.\d s \(\d+ batches\)", line) for line in lines), err
    assert all(line.startswith("assay: ") for line in lines), err
    assert "assay: " not in done.stdout  # progress never mixes into the results on stdout

    quiet = assay("quiet", "--no-cache", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


def test_profile_shows_its_timing_stages(digits_onnx, capsys):
    from assay.cli import main

    code = main(["profile", str(digits_onnx), "--data", "digits", "--latency-batch-sizes", "1,4",
                 "--latency-budget", "0.2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.err.splitlines()
    assert "assay: latency timing started (2 batch sizes, at most 0.2 s each)" in lines
    assert any(re.fullmatch(r"assay: latency timing done in \d+\.\d s \(2 batch sizes\)", line) for line in lines)
    assert "assay: peak memory in a fresh process started" in lines
    assert "assay: " not in captured.out and not ANSI.search(captured.err)


def test_compare_names_the_model_each_inference_belongs_to(digits_onnx, tmp_path, capsys):
    from assay.cli import main

    code = main(["compare", str(digits_onnx), str(digits_onnx), "--data", "digits", "--out", str(tmp_path / "cmp"),
                 "--cache-dir", str(tmp_path / "cache"), "--n-bootstrap", "100"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    lines = captured.err.splitlines()
    assert lines[0] == "assay: evaluating models started (2 models)"
    assert "assay: evaluating models [baseline] > inference started (3 batches, view clean)" in lines
    assert any(re.fullmatch(r"assay: evaluating models done in \d+\.\d s \(2 models\)", line) for line in lines)
    # the candidate is the same file: its outputs come from the cache, so no inference stage opens for it
    assert not any(line.startswith("assay: evaluating models [candidate] > inference") for line in lines)
