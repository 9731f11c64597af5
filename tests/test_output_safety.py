"""`--out` never loses a user's files: only Assay outputs of the same kind are replaced, inputs are never
the output (nor inside it, nor around it), bad paths fail before any work, and killed runs leave nothing
that the next run does not clean up."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from assay.cli import main
from assay.errors import OutputError
from assay.evidence.output import MANIFEST, atomic_directory, check_output, read_manifest, recover_debris
from assay.models.export import export_onnx

# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tabular(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny linear ONNX model on 4 features, and a labelled NPZ for it."""
    root = tmp_path_factory.mktemp("tabular")
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    model = export_onnx(net, torch.zeros(2, 4), root / "linear.onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    y[:10] = (y[:10] + 1) % 3
    data = root / "data.npz"
    np.savez(data, x=x, y=y)
    return model, data


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``root`` (byte-identical check)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _user_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.md").write_text("my notes\n")
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "train.py").write_text("print('hello')\n")
    return root


def _evaluate(model: Path, data: Path, out: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["evaluate", str(model), "--data", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--n-bootstrap", "100", "-q", *extra]


def _run(args, capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, " ".join(captured.err.split())


def _assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("Error:") and "Traceback" not in err and "Fix:" in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def _no_debris(parent: Path) -> None:
    leftovers = [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name or ".probe-" in p.name]
    assert not leftovers, leftovers


# ------------------------------------------------------------------------------------------- user folders


def test_a_project_folder_is_never_replaced(tabular, tmp_path, capsys):
    model, data = tabular
    project = _user_folder(tmp_path / "project")
    before = _tree(project)
    for extra in ((), ("--force",)):
        code, err = _run(_evaluate(model, data, project, tmp_path, *extra), capsys)
        _assert_refused(code, err, "was not written by Assay", "never replaces")
        assert _tree(project) == before
    _no_debris(tmp_path)


def test_the_folder_holding_the_model_or_the_data_is_refused(tabular, tmp_path, capsys):
    model, data = tabular
    folder = _user_folder(tmp_path / "work")
    local_model = folder / "m.onnx"
    local_model.write_bytes(model.read_bytes())
    local_data = folder / "d.npz"
    local_data.write_bytes(data.read_bytes())
    before = _tree(folder)
    code, err = _run(_evaluate(local_model, data, folder, tmp_path), capsys)
    _assert_refused(code, err, "contains an input", "m.onnx")
    code, err = _run(_evaluate(model, local_data, folder, tmp_path, "--force"), capsys)
    _assert_refused(code, err, "contains an input", "d.npz")
    assert _tree(folder) == before


def test_the_image_folder_being_evaluated_is_refused_as_output_and_as_parent(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / label / f"{i}.png")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    model = export_onnx(net, torch.zeros(2, 1, 8, 8), tmp_path / "img.onnx")
    before = _tree(root)
    code, err = _run(_evaluate(model, root, root, tmp_path), capsys)
    _assert_refused(code, err, "is an input")
    code, err = _run(_evaluate(model, root, root / "a" / "out", tmp_path), capsys)
    _assert_refused(code, err, "lies inside an input")
    assert _tree(root) == before


def test_out_dot_and_parents_of_the_working_directory_are_refused(tabular, tmp_path, capsys, monkeypatch):
    model, data = tabular
    work = _user_folder(tmp_path / "cwd")
    monkeypatch.chdir(work)
    before = _tree(work)
    for out in (".", "..", str(tmp_path)):
        code, err = _run(["evaluate", str(model), "--data", str(data), "--out", out, "--no-cache", "-q"], capsys)
        _assert_refused(code, err, "current directory")
    assert _tree(work) == before
    _no_debris(tmp_path)
    assert not list(tmp_path.glob("..*"))


def test_compare_out_equal_to_an_input_bundle_is_refused(tabular, tmp_path, capsys):
    model, data = tabular
    bundle = tmp_path / "base"
    assert _run(_evaluate(model, data, bundle, tmp_path), capsys)[0] == 0
    before = _tree(bundle)
    for out in (bundle, bundle / "cmp"):
        code, err = _run(["compare", str(bundle), str(bundle), "--out", str(out), "-q", "--n-bootstrap", "100"], capsys)
        _assert_refused(code, err, "input")
    assert _tree(bundle) == before
    code, err = _run(["select", str(model), str(bundle), "--data", str(data), "--out", str(bundle), "-q",
                      "--n-bootstrap", "100", "--cache-dir", str(tmp_path / "cache")], capsys)
    _assert_refused(code, err, "is an input")
    assert _tree(bundle) == before


def test_output_inside_or_around_the_cache_is_refused(tabular, tmp_path, capsys):
    model, data = tabular
    cache = tmp_path / "cache"
    cache.mkdir()
    code, err = _run(["evaluate", str(model), "--data", str(data), "--out", str(cache / "out"), "--cache-dir",
                      str(cache), "-q"], capsys)
    _assert_refused(code, err, "lies inside an input")
    code, err = _run(["evaluate", str(model), "--data", str(data), "--out", str(tmp_path), "--cache-dir",
                      str(cache / "inner"), "-q"], capsys)
    _assert_refused(code, err, "input")


# ------------------------------------------------------------------------------------------- Assay folders


def test_same_kind_is_replaced_other_kind_needs_force_foreign_files_never(tabular, tmp_path, capsys):
    model, data = tabular
    out = tmp_path / "out"
    assert _run(_evaluate(model, data, out, tmp_path), capsys)[0] == 0
    manifest = read_manifest(out)
    assert manifest["kind"] == "evaluate"
    assert set(manifest["files"]) == set(_tree(out)) - {MANIFEST}
    assert manifest["files"]["evidence.json"]["sha256"] == _tree(out)["evidence.json"]
    first = json.loads((out / "evidence.json").read_text())["created_at"]

    assert _run(_evaluate(model, data, out, tmp_path, "--seed", "1"), capsys)[0] == 0  # same kind: replaced
    assert json.loads((out / "evidence.json").read_text())["seed"] == 1 and first

    cmp_out = tmp_path / "cmp"
    assert _run(["compare", str(out), str(out), "--out", str(cmp_out), "-q", "--n-bootstrap", "100"], capsys)[0] == 0
    assert read_manifest(cmp_out)["kind"] == "compare"
    before = _tree(cmp_out)
    code, err = _run(_evaluate(model, data, cmp_out, tmp_path), capsys)
    _assert_refused(code, err, "compare output", "--force")
    assert _tree(cmp_out) == before
    assert _run(_evaluate(model, data, cmp_out, tmp_path, "--force"), capsys)[0] == 0
    assert read_manifest(cmp_out)["kind"] == "evaluate"

    (out / "my-notes.txt").write_text("keep me")
    before = _tree(out)
    code, err = _run(_evaluate(model, data, out, tmp_path, "--force"), capsys)
    _assert_refused(code, err, "did not write", "my-notes.txt")
    assert _tree(out) == before
    _no_debris(tmp_path)


def test_an_empty_folder_is_used(tabular, tmp_path, capsys):
    model, data = tabular
    out = tmp_path / "empty"
    out.mkdir()
    assert _run(_evaluate(model, data, out, tmp_path), capsys)[0] == 0
    assert (out / "evidence.json").is_file() and read_manifest(out) is not None


# ------------------------------------------------------------------------------------------- bad paths, early


def test_bad_output_paths_fail_before_the_evaluation(tabular, tmp_path, capsys, monkeypatch):
    model, data = tabular
    import assay.api

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the evaluation ran although the output path is bad")

    monkeypatch.setattr(assay.api, "run_evaluation", no_evaluation)
    file = tmp_path / "file.txt"
    file.write_text("x")
    link_target = tmp_path / "real"
    link_target.mkdir()
    (tmp_path / "link").symlink_to(link_target)
    cases = {
        file / "out": "is a file",
        file / "deeper" / "out": "is a file",
        file: "not a folder",
        tmp_path / "link": "symbolic link",
    }
    for out, fragment in cases.items():
        code, err = _run(_evaluate(model, data, out, tmp_path), capsys)
        _assert_refused(code, err, fragment)
    assert file.read_text() == "x"


def test_unwritable_and_full_disks_are_user_errors(tabular, tmp_path, capsys, monkeypatch):
    """Read-only parent: refused up front. Disk full while writing: OutputError, nothing left behind."""
    model, data = tabular
    import tempfile

    import assay.evidence.output as output

    real_mkdtemp = tempfile.mkdtemp

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(output.tempfile, "mkdtemp", read_only)
    code, err = _run(_evaluate(model, data, tmp_path / "ro", tmp_path), capsys)
    _assert_refused(code, err, "Read-only file system", "writable disk")
    monkeypatch.setattr(output.tempfile, "mkdtemp", real_mkdtemp)

    out = tmp_path / "full"
    with pytest.raises(OutputError, match="No space left") as info, atomic_directory(out, "evaluate") as tmp:
        (tmp / "a.txt").write_text("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert "free disk space" in info.value.fix
    assert not out.exists()
    _no_debris(tmp_path)


def test_a_real_full_disk(tabular, tmp_path, capsys):
    """A 1 MiB tmpfs (needs mount rights; skipped without them): the bundle cannot fit, exit 2, nothing left."""
    model, data = tabular
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        code, err = _run(_evaluate(model, data, mount / "out", tmp_path), capsys)
        _assert_refused(code, err, "No space left")
        assert sorted(p.name for p in mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ------------------------------------------------------------------------------------------- crashes


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_debris(target: Path, tag: str, pid: int, suffix: str = "x") -> Path:
    """A temporary folder as a writer with process id ``pid`` on this host names it."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    folder = target.parent / f".{target.name}.{tag}-{pid}.0.{host}-{suffix}"
    folder.mkdir()
    return folder


def _write(out: Path, text: str) -> None:
    with atomic_directory(out, "evaluate") as tmp:
        (tmp / "evidence.json").write_text(text)


@pytest.mark.parametrize("new_complete", [True, False])
def test_a_crash_between_the_two_renames_is_recovered(tmp_path, new_complete):
    out = tmp_path / "bundle"
    _write(out, "old")
    old = _fake_debris(out, "old", _dead_pid())
    os.replace(out, old / out.name)
    tmp = _fake_debris(out, "tmp", _dead_pid())
    (tmp / "content").mkdir()
    (tmp / "content" / "evidence.json").write_text("new")
    if new_complete:
        output_manifest = {"tool": "assay", "kind": "evaluate", "files": {"evidence.json": {}}}
        (tmp / "content" / MANIFEST).write_text(json.dumps(output_manifest))
    done = recover_debris(out)
    assert (out / "evidence.json").read_text() == ("new" if new_complete else "old")
    assert any("interrupted" in d for d in done)
    _no_debris(tmp_path)


def test_debris_of_a_live_writer_or_of_another_tool_is_left_alone(tmp_path):
    out = tmp_path / "bundle"
    live = _fake_debris(out, "tmp", os.getpid(), "live")
    foreign = tmp_path / f".{out.name}.tmp-foreign"
    foreign.mkdir()
    (foreign / "data.bin").write_bytes(b"\x00")
    dead = _fake_debris(out, "tmp", _dead_pid(), "dead")
    _write(out, "x")
    assert live.exists() and foreign.exists() and not dead.exists()


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from assay.evidence.output import atomic_directory
    out = Path(sys.argv[1])
    i = 0
    while True:
        i += 1
        with atomic_directory(out, "evaluate") as tmp:
            for k in range(20):
                (tmp / f"part{k}.txt").write_text(f"{i}:{k}\\n" * 200)
            (tmp / "evidence.json").write_text(str(i))
""")


def test_runs_killed_at_random_points_leave_a_valid_folder_and_no_debris(tmp_path):
    """SIGKILL a writer looping over replacements at random moments; after each kill the next write
    recovers: the folder is a complete Assay output (manifest matches its files) and no debris is left."""
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "bundle"
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, str(script), str(out)])
        time.sleep(float(rng.uniform(0.3, 0.9)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recover_debris(out)
        if out.exists():
            manifest = read_manifest(out)
            assert manifest is not None
            files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST}
            assert files == set(manifest["files"])
            seen.add((out / "evidence.json").read_text())
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]
        assert not leftovers, leftovers
    _write(out, "final")
    assert (out / "evidence.json").read_text() == "final"
    assert len(seen) >= 2  # the writer got through several replacements between kills


def test_check_output_rejects_unknown_kinds(tmp_path):
    with pytest.raises(ValueError):
        check_output(tmp_path / "x", "nonsense")


def test_profile_json_never_overwrites_a_user_file_or_an_input(tabular, tmp_path, capsys):
    model, data = tabular
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    for target, fragment in ((notes, "is not a profile"), (model, "is an input"), (tmp_path, "is a folder"),
                             (notes / "x.json", "is a file")):
        before = model.read_bytes()
        code, err = _run(["profile", str(model), "--budget", "0.1", "--batch-sizes", "1",
                          "--json", str(target)], capsys)
        _assert_refused(code, err, fragment)
        assert model.read_bytes() == before
    assert notes.read_text() == '{"mine": true}'
    out = tmp_path / "profile.json"
    for _ in range(2):  # the second run replaces the profile the first one wrote
        code, err = _run(["profile", str(model), "--budget", "0.1", "--batch-sizes", "1", "--json", str(out)], capsys)
        assert code == 0, err
    assert json.loads(out.read_text())["latency"]["batches"]


def test_compress_and_demo_check_the_output_before_any_work(tabular, tmp_path, capsys, monkeypatch):
    """compress refuses the folder holding its model before building a variant; demo refuses a user folder
    before training."""
    import assay.compress.variants as variants
    import assay.demo as demo

    model, data = tabular
    monkeypatch.setattr(variants, "make_variants", lambda *a, **k: pytest.fail("a variant was built"))
    monkeypatch.setattr(demo, "train_digits_cnn", lambda *a, **k: pytest.fail("the demo trained"))
    before = _tree(model.parent)
    code, err = _run(["compress", str(model), "--data", str(data), "--methods", "fp16", "--out", str(model.parent),
                      "--no-cache", "-q"], capsys)
    _assert_refused(code, err, "contains an input")
    assert _tree(model.parent) == before
    project = _user_folder(tmp_path / "project")
    before = _tree(project)
    code, err = _run(["demo", "--out", str(project), "-q"], capsys)
    _assert_refused(code, err, "was not written by Assay")
    assert _tree(project) == before
