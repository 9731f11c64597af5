"""The feedback loop of issue 15, end to end on digits with a planted shift: `make loop-demo`.

1. train the demo CNN (the champion), evaluate it on digits:test, register it and promote it to production;
2. serve ``digits@production`` with ``assay serve --log-inputs --log-features``;
3. send two weeks of traffic whose digits are shifted one pixel to the right (a shift the model never saw);
4. ``assay feedback queue``: the week-1 samples most worth labeling (uncertain, unlike the reference);
5. label them from the known ground truth (the annotators), ``assay feedback import`` the CSV;
6. label week 2 in full (the audit sample that will judge the candidate: never used for training);
7. ``assay feedback dataset``: week 1's labelled slice (fine-tuning) and week 2's (evaluation) as .npz;
8. fine-tune a candidate from the champion on digits:train plus the labelled week-1 slice;
9. ``assay compare`` champion vs candidate on the week-2 audit slice (where the shift is), and, for scale, a
   candidate fine-tuned on as many week-1 samples drawn at random;
10. ``assay evaluate`` the candidate on digits:test, register it, and ``assay registry promote`` it through the
    paired gate against the champion's evidence (no regression on the clean test set); the server, polling its
    alias, hot-swaps to the new version.

Run: ``python examples/feedback_loop.py [--workdir DIR]`` (a temporary folder by default). Everything but the
training (which calls the library, as a user's training script would) goes through the ``assay`` command line,
printed before it runs. About a minute on two idle cores; the training dominates on a loaded machine.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Sizes of the full demo (`make loop-demo`) and of the reduced run tests/test_feedback.py makes.
FULL: dict[str, Any] = {"epochs": 20, "finetune_epochs": 8, "n_queue": 150, "week1": 340, "rows_per_request": 4}
SMALL: dict[str, Any] = {"epochs": 5, "finetune_epochs": 2, "n_queue": 80, "week1": 300, "rows_per_request": 10,
                         "random_baseline": False}


def _cli(args: list[str], say: Callable[[str], None]) -> int:
    """Run one `assay` command in this process (as the console script would), printing it first."""
    from assay.cli import main

    say("$ assay " + shlex.join(args))
    return main(args)


def _http(url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, JSON answer) of a GET, or of a POST of ``body`` as JSON (the standard library: no client to
    install for `make loop-demo`)."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(args: list[str], log_file: Path, say: Callable[[str], None]) -> Iterator[str]:
    """`assay serve ARGS` in a subprocess until /readyz answers; its URL; SIGTERM on exit."""
    port = _free_port()
    command = [*args, "--port", str(port)]
    say("$ assay " + shlex.join(command) + " &")
    with open(log_file, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from assay.cli import console_main; console_main()",
                                 *command], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"assay serve exited: {log_file.read_text()}")
            with contextlib.suppress(OSError, ValueError):
                if _http(url + "/readyz", timeout=1)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"assay serve did not become ready: {log_file.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _send(url: str, x: np.ndarray, prefix: str, rows_per_request: int) -> dict[tuple[str, int], int]:
    """POST ``x`` in requests of ``rows_per_request`` rows with ids ``prefix-0000``...; (request_id, row) -> the
    index of the sample in ``x``."""
    sent: dict[tuple[str, int], int] = {}
    for number, start in enumerate(range(0, len(x), rows_per_request)):
        rid = f"{prefix}-{number:04d}"
        batch = x[start:start + rows_per_request]
        status, answer = _http(url + "/v1/predict", {"inputs": batch.tolist()}, {"X-Request-ID": rid})
        if status != 200:
            raise RuntimeError(f"/v1/predict answered {status}: {answer}")
        for row in range(len(batch)):
            sent[(rid, row)] = start + row
    return sent


def _wait_for_rows(store: Path, expected: int, timeout_s: float = 30.0) -> None:
    """Fast durability commits within a commit window: wait until the log holds ``expected`` primary rows."""
    from assay.serve.log import read_log

    deadline = time.monotonic() + timeout_s
    while True:
        frame = read_log(str(store))
        if int((frame["role"] == "primary").sum()) >= expected or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _write_labels(path: Path, keys: list[tuple[str, int]], truth: dict[tuple[str, int], int]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["request_id", "row", "label"])
        for rid, row in keys:
            writer.writerow([rid, row, truth[(rid, row)]])


def _fine_tune(champion: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int) -> Any:
    """A copy of ``champion`` trained ``epochs`` more epochs on (x, y) with Adam at a lower rate."""
    import copy

    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = copy.deepcopy(champion).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def _accuracy(model_path: Path, data_path: Path) -> float:
    """Accuracy of an ONNX model on an .npz, with onnxruntime directly (a check independent of Assay)."""
    import onnxruntime as ort

    from assay.data.loader import load_data

    data = load_data(str(data_path))
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: data.x})[0]
    return float((logits.argmax(axis=1) == data.y).mean())


def run_loop(workdir: str | os.PathLike[str], *, epochs: int = 20, finetune_epochs: int = 8, n_queue: int = 150,
             week1: int = 340, rows_per_request: int = 4, seed: int = 0, random_baseline: bool = True,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole loop in ``workdir`` (see the module docstring); a summary of what happened at each step."""
    import torch

    from assay.data.loader import load_data
    from assay.demo import shifted_digits, train_digits_cnn
    from assay.models.export import export_onnx
    from assay.serve.log import read_log

    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    registry = ["--registry", f"sqlite:///{work / 'registry.db'}", "--artifacts", str(work / "artifacts")]
    store = work / "prediction-log"
    summary: dict[str, Any] = {}
    started = time.perf_counter()

    def step(text: str) -> None:
        say(f"\n== [{time.perf_counter() - started:5.1f} s] {text}")

    def run(args: list[str], *, ok: tuple[int, ...] = (0,)) -> int:
        code = _cli(args, say)
        if code not in ok:
            raise RuntimeError(f"`assay {' '.join(args)}` exited with {code}")
        return code

    step(f"1. Train the champion: the demo CNN on digits:train ({epochs} epochs), exported to ONNX")
    train, test = load_data("digits:train"), load_data("digits:test")
    assert train.y is not None and test.y is not None
    champion = train_digits_cnn(train.x, train.y, epochs=epochs, seed=seed, progress=False)
    champion_onnx = export_onnx(champion, torch.from_numpy(test.x[:2]), work / "champion.onnx",
                                class_names=test.class_names)
    run(["evaluate", str(champion_onnx), "--data", "digits", "--checks", "performance,calibration", "--n-bootstrap",
         "200", "--no-cache", "--out", str(work / "champion-bundle"), "--quiet"])
    run(["registry", "register", "digits", str(champion_onnx), "--evidence", str(work / "champion-bundle"),
         "--message", "champion: demo CNN", *registry])
    run(["registry", "promote", "digits", "1", "--alias", "production", "--quiet", *registry])

    step("2. Serve digits@production, logging inputs and embeddings")
    shifted = shifted_digits(test)  # the planted shift: every digit one pixel to the right
    assert shifted.y is not None
    order = np.random.default_rng(seed).permutation(len(shifted.x))
    week1_idx, week2_idx = order[:week1], order[week1:]
    serve_args = ["serve", "digits@production", *registry, "--log-store", str(store), "--log-inputs",
                  "--log-features", "--poll-seconds", "1"]
    with _server(serve_args, work / "serve.log", say) as url:
        step(f"3. Traffic with the planted shift: week 1 ({len(week1_idx)} digits), then week 2 "
             f"({len(week2_idx)} digits), {rows_per_request} rows per request")
        sent1 = _send(url, shifted.x[week1_idx], "week1", rows_per_request)
        _wait_for_rows(store, len(sent1))
        split_time = time.time()
        time.sleep(0.05)
        sent2 = _send(url, shifted.x[week2_idx], "week2", rows_per_request)
        _wait_for_rows(store, len(sent1) + len(sent2))
        truth = {key: int(shifted.y[week1_idx[i]]) for key, i in sent1.items()}
        truth.update({key: int(shifted.y[week2_idx[i]]) for key, i in sent2.items()})
        frame = read_log(str(store))
        summary["logged_rows"] = len(frame)
        labels = np.array([truth[key] for key in zip(frame["request_id"], frame["row"], strict=True)])
        live = float((frame["top1"].to_numpy() == labels).mean())
        evidence = json.loads((work / "champion-bundle" / "evidence.json").read_text())
        clean = evidence["sections"]["performance"]["metrics"]["accuracy"]["value"]
        summary["live_accuracy"] = live
        say(f"logged {len(frame)} predictions; the champion's live accuracy (only this demo knows the truth) is "
            f"{live:.3f}, against {clean:.3f} on the clean test digits")

        step(f"4. The labeling queue: the {n_queue} week-1 samples most worth labeling")
        queue = work / "queue.csv"
        run(["feedback", "queue", "--log", str(store), "--n", str(n_queue), "--out", str(queue), "--reference",
             str(work / "champion-bundle"), "--until", repr(split_time)])

        step("5. Annotators label the queue (simulated from the ground truth) and the labels are imported")
        with open(queue, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            row["label"] = str(truth[(row["request_id"], int(row["row"]))])
        with open(queue, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        queued_wrong = sum(int(r["top1"]) != int(r["label"]) for r in rows)
        say(f"the champion was wrong on {queued_wrong} of the {len(rows)} queued samples "
            f"({queued_wrong / max(len(rows), 1):.0%}; {1 - live:.0%} of all traffic)")
        run(["feedback", "import", str(queue), "--log", str(store), "--reference", str(work / "champion-bundle")])
        summary["labels_imported"] = len(rows)
        summary["queue_error_rate"] = queued_wrong / max(len(rows), 1)

        step("6. An audit sample: every week-2 request labelled (it judges the candidate; never trained on)")
        audit_csv = work / "audit-labels.csv"
        _write_labels(audit_csv, sorted(sent2), truth)
        run(["feedback", "import", str(audit_csv), "--log", str(store)])

        step("7. The labelled slices of the log as data sets")
        finetune_npz, audit_npz = work / "week1-labelled.npz", work / "week2-audit.npz"
        run(["feedback", "dataset", "--log", str(store), "--labelled-only", "--until", repr(split_time), "--out",
             str(finetune_npz)])
        run(["feedback", "dataset", "--log", str(store), "--labelled-only", "--since", repr(split_time), "--out",
             str(audit_npz)])
        tuned = load_data(str(finetune_npz))
        summary["dataset_rows"] = len(tuned.x)
        assert tuned.y is not None

        step(f"8. Fine-tune a candidate from the champion: digits:train + {len(tuned.x)} labelled week-1 samples "
             f"({finetune_epochs} epochs)")
        x = np.concatenate([train.x, np.repeat(tuned.x, 3, axis=0)])  # the few new samples weigh three times
        y = np.concatenate([train.y, np.repeat(tuned.y, 3)])
        candidate = _fine_tune(champion, x, y, epochs=finetune_epochs, seed=seed)
        candidate_onnx = export_onnx(candidate, torch.from_numpy(test.x[:2]), work / "candidate.onnx",
                                     class_names=test.class_names)

        if random_baseline:  # what the queue bought: the same budget of labels drawn at random from week 1
            picked = np.random.default_rng(seed + 1).choice(len(week1_idx), size=len(tuned.x), replace=False)
            xr = np.concatenate([train.x, np.repeat(shifted.x[week1_idx[picked]], 3, axis=0)])
            yr = np.concatenate([train.y, np.repeat(shifted.y[week1_idx[picked]], 3)])
            random_onnx = export_onnx(_fine_tune(champion, xr, yr, epochs=finetune_epochs, seed=seed),
                                      torch.from_numpy(test.x[:2]), work / "random-candidate.onnx",
                                      class_names=test.class_names)

        step("9. Compare champion and candidate on the week-2 audit slice")
        summary["compare_exit"] = run(["compare", str(champion_onnx), str(candidate_onnx), "--data", str(audit_npz),
                                       "--n-bootstrap", "500", "--out", str(work / "compare-audit"), "--quiet"],
                                      ok=(0, 1))
        comparison = json.loads((work / "compare-audit" / "comparison.json").read_text())
        summary["compare_verdict"] = comparison["verdict"]
        summary["champion_accuracy"] = _accuracy(champion_onnx, audit_npz)
        summary["candidate_accuracy"] = _accuracy(candidate_onnx, audit_npz)
        delta = comparison["metrics"]["accuracy_delta"]
        say(f"audit accuracy: champion {summary['champion_accuracy']:.3f}, candidate "
            f"{summary['candidate_accuracy']:.3f} (paired difference {delta['value']:+.3f}, 95% CI "
            f"[{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}]); verdict {comparison['verdict']}")
        if random_baseline:
            summary["random_labels_accuracy"] = _accuracy(random_onnx, audit_npz)
            say(f"(a candidate fine-tuned on {len(tuned.x)} week-1 samples drawn at random instead of the queue: "
                f"{summary['random_labels_accuracy']:.3f}; one seed, an illustration rather than a measurement)")

        step("10. Evaluate the candidate on digits:test, register it, promote it through the gate")
        run(["evaluate", str(candidate_onnx), "--data", "digits", "--checks", "performance,calibration",
             "--n-bootstrap", "200", "--no-cache", "--out", str(work / "candidate-bundle"), "--quiet"])
        run(["registry", "register", "digits", str(candidate_onnx), "--evidence", str(work / "candidate-bundle"),
             "--message", f"fine-tuned on {len(tuned.x)} labelled samples of shifted traffic", *registry])
        say("(digits:test has 54 digits per class: too few to settle the per-class rule either way, so the gate may "
            "be inconclusive; --allow-inconclusive accepts that, given the audit comparison above. A failed rule "
            "still refuses the move.)")
        summary["promote_exit"] = run(["registry", "promote", "digits", "2", "--alias", "production",
                                       "--allow-inconclusive", "--reason", "feedback loop: better on the shifted "
                                       "traffic, no regression shown on digits:test", *registry], ok=(0, 1))
        if summary["promote_exit"] == 0:
            deadline = time.monotonic() + 20
            version = None
            while time.monotonic() < deadline:
                version = _http(url + "/v1/model", timeout=5)[1].get("version")
                if version is not None and str(version).endswith("2"):
                    break
                time.sleep(0.5)
            summary["served_version"] = version
            say(f"the server now answers with {version}")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    step(f"done in {summary['seconds']} s: " + json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="Folder for the models, bundles, log and registry (default: temporary).")
    parser.add_argument("--small", action="store_true", help="The reduced sizes the test runs.")
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else FULL
    if args.workdir:
        run_loop(args.workdir, **sizes)
    else:
        with tempfile.TemporaryDirectory(prefix="assay-loop-") as tmp:
            run_loop(tmp, **sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
