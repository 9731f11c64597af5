"""--backend ray: the engine's units of work on Ray actors give the evidence of a local run.

One local Ray cluster (2 CPUs) serves the whole module. Each command is run on the local backend and on Ray,
and the evidence.json files must be identical apart from timings, creation time, environment, cache counters
and the backend's name; an actor killed mid-run is restarted and its shards retried, with the same result."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

import assay  # noqa: E402
from assay.audit import AuditSettings, run_audit  # noqa: E402
from assay.checks.base import EvaluateConfig  # noqa: E402
from assay.cli import main  # noqa: E402
from assay.data.loader import load_data  # noqa: E402
from assay.demo import train_digits_cnn  # noqa: E402
from assay.engine import ray_backend  # noqa: E402
from assay.engine.backends import BACKENDS, get_backend  # noqa: E402
from assay.engine.ray_backend import RayBackend  # noqa: E402
from assay.engine.run import shards_of  # noqa: E402
from assay.engine.views import CleanView  # noqa: E402
from assay.engine.work import Shard  # noqa: E402
from assay.errors import ModelError, OptionError, UserError  # noqa: E402
from assay.evaluation.pipeline import run_evaluation  # noqa: E402
from assay.models.export import export_onnx  # noqa: E402
from assay.models.loader import load_model  # noqa: E402
from assay.models.spec import ModelSpec  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local Ray of 2 CPUs for the module (RayBackend joins the Ray this process started, and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A digits CNN as an ONNX file (trained one epoch: seconds), and small train/test NPZ sets."""
    root = tmp_path_factory.mktemp("ray")
    train, test = load_data("digits:train"), load_data("digits:test")
    net = train_digits_cnn(train.x, train.y, epochs=1, seed=0)
    export_onnx(net, torch.from_numpy(test.x[:2]), root / "digits.onnx", class_names=test.class_names)
    np.savez(root / "train.npz", x=train.x[:150], y=train.y[:150])
    np.savez(root / "test.npz", x=test.x[:100], y=test.y[:100])
    return root


def comparable(evidence: dict) -> dict:
    """Evidence without what legitimately differs between two runs of one command (as test_api's)."""
    evidence = dict(evidence)
    for key in ("timings", "created_at", "environment"):
        evidence.pop(key)
    evidence["config"] = {k: v for k, v in evidence["config"].items() if k not in ("cache", "backend")}
    return evidence


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def evaluate_both(files, tmp_path, capsys, *ray_options: str) -> tuple[dict, dict]:
    bundles = {}
    for backend in ("local", "ray"):
        out = tmp_path / backend
        code, err = run_cli(["evaluate", str(files / "digits.onnx"), "--data", "digits:test", "--checks",
                             "performance,calibration,corruption", "--corruptions", "gaussian_noise,motion_blur",
                             "--severities", "2", "--attacks", "square", "--square-queries", "20", "--eps", "8/255",
                             "--n-bootstrap", "100", "--threads", "1", "--batch-size", "64", "--no-cache", "--quiet",
                             "--out", str(out), "--backend", backend, *(ray_options if backend == "ray" else ())],
                            capsys)
        assert code == 0, err
        bundles[backend] = json.loads((out / "evidence.json").read_text())
    return bundles["local"], bundles["ray"]


def test_evaluate_on_ray_writes_the_evidence_of_a_local_run(files, tmp_path, capsys):
    local, remote = evaluate_both(files, tmp_path, capsys, "--num-workers", "2")
    assert local["config"]["backend"] == "local" and remote["config"]["backend"] == "ray"
    assert remote["config"]["cache"]["forward_batches"] == local["config"]["cache"]["forward_batches"] > 3
    # Corruptions and the (black-box) Square attack ran on the workers.
    assert remote["sections"]["corruption"]["metrics"] and remote["sections"]["adversarial"]["metrics"]
    assert comparable(remote) == comparable(local)


class KillingRayBackend(RayBackend):
    """Kills one actor (Ray restarts it) just before the driver waits for the first shard: the shards queued on
    it (its first one still loading the model) die with it and are retried on the restarted actor."""

    pids: list[int] | None = None
    killed_pid: int | None = None

    def _start(self, ray_):
        actors = super()._start(ray_)
        if self.pids is None:
            self.pids = ray.get([a.pid.remote() for a in actors])
        return actors

    def _result(self, ray_, ref):
        if self.killed_pid is None:
            assert self.pids is not None
            self.killed_pid = self.pids[-1]
            ray.kill(self._actors[-1], no_restart=False)
        return super()._result(ray_, ref)


def test_a_killed_actor_is_restarted_and_the_evidence_is_unchanged(files):
    config = EvaluateConfig(corruptions=["gaussian_noise"], severities=[3], n_bootstrap=100, batch_size=20)
    options = {"threads": 1}
    data = str(files / "test.npz")  # 5 shards per view
    local = run_evaluation(str(files / "digits.onnx"), data, checks=["performance", "corruption"],
                           config=config, cache_dir=False, model_options=options).evidence
    backend = KillingRayBackend(workers=2)
    try:
        remote = run_evaluation(str(files / "digits.onnx"), data, checks=["performance", "corruption"],
                                config=config, cache_dir=False, model_options=options, backend=backend).evidence
        pids = ray.get([a.pid.remote() for a in backend._actors])
    finally:
        backend.close()
    assert backend.killed_pid is not None and backend.killed_pid not in pids  # a new process took over
    assert len(pids) == 2
    assert comparable(remote.model_dump(mode="json")) == comparable(local.model_dump(mode="json"))


def test_unreachable_address_is_a_bad_input_error(files, tmp_path, capsys, monkeypatch):
    # Nothing listens on a port just released; a bounded connect (here 2 s) fails, then exit 2.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray_backend, "CONNECT_TIMEOUT_S", 2.0)
    code, err = run_cli(["evaluate", str(files / "digits.onnx"), "--data", "digits:test", "--backend", "ray",
                         "--ray-address", f"ray://127.0.0.1:{port}", "--no-cache", "--quiet",
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("Error:") and "Fix:" in err and "Traceback" not in err
    assert f"127.0.0.1:{port}" in err and "--ray-address" in err
    assert not (tmp_path / "o").exists()
    for address in ("ray://", "nohost:port", "ray://host:12ab"):
        with pytest.raises(OptionError, match="not auto, ray://HOST:PORT"):
            RayBackend(address=address)


def test_ray_options_need_the_ray_backend_and_sensible_values(files, tmp_path, capsys):
    code, err = run_cli(["evaluate", str(files / "digits.onnx"), "--data", "digits:test", "--ray-address", "auto",
                         "--no-cache", "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("Error:") and "--backend ray" in err and "Traceback" not in err
    with pytest.raises(OptionError, match="local backend has no workers"):
        get_backend("local", workers=2)
    with pytest.raises(OptionError, match="at least 1"):
        get_backend("ray", workers=0)
    with pytest.raises(OptionError, match="need 6 CPUs; the Ray cluster has 2"):
        list(RayBackend(workers=3, threads=2).run(load_model(str(files / "digits.onnx")), CleanView(), []))
    assert BACKENDS["ray"] is RayBackend and isinstance(get_backend("ray"), RayBackend)
    assert get_backend("processes", workers=3).workers == 3


def test_no_cluster_at_auto_says_how_to_start_one():
    """ray.init(address="auto") without a cluster raises ConnectionError: an OptionError saying `ray start --head`
    (a stand-in for ray: this module's own Ray is running)."""

    class NoCluster:
        __version__ = ray.__version__

        @staticmethod
        def init(**kwargs):
            assert kwargs["address"] == "auto"
            raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    backend = RayBackend(address="auto")
    with pytest.raises(OptionError, match="cannot connect to the Ray cluster at auto") as info:
        backend._connect(NoCluster, "auto")
    assert "ray start --head" in (info.value.fix or "") and info.value.where == "ray_address"
    assert not backend._owns_ray


def test_the_python_api_takes_the_ray_keywords(blobs):
    """assay.evaluate(backend="ray", ...) reaches the Ray backend, which refuses a model built in memory before any
    worker starts."""
    ds, model = blobs
    with pytest.raises(ModelError, match="built in memory"):
        assay.evaluate(model, ds, backend="ray", num_workers=1, cache_dir=None, n_bootstrap=100)


def test_a_model_the_worker_cannot_read_names_the_path_and_the_node(files, tmp_path):
    path = tmp_path / "gone.onnx"
    shutil.copy(files / "digits.onnx", path)
    test = load_data("digits:test")
    model = load_model(str(path), sample=test.x[:2])
    path.unlink()  # the driver has it loaded; the workers look for the file
    backend = RayBackend(workers=1)
    try:
        with pytest.raises(ModelError) as info:
            list(backend.run(model, CleanView(), shards_of(CleanView(), test, 100)))
    finally:
        backend.close()
    message = str(info.value)
    assert str(path) in message and "Ray node" in message and socket.gethostname() in message
    assert "same path" in (info.value.fix or "")


def test_a_worker_reports_a_user_error_as_data_and_the_driver_raises_it():
    """The actor's class run in process: a factory the worker cannot import comes back as plain data (not a Ray
    traceback), which the driver raises as the same UserError, naming the node."""
    worker = ray_backend._ShardWorker({}, 1)
    spec = ModelSpec(format="factory", path="no_such_module_here:make")
    found = worker.run(spec, CleanView().spec.to_json(), Shard(0, 1, np.zeros((1, 1, 8, 8), np.float32)))
    assert isinstance(found, ray_backend._WorkerError) and found.where == "no_such_module_here:make"
    with pytest.raises(UserError, match="no_such_module_here") as info:
        found.raise_here()
    assert ray.get_runtime_context().get_node_id()[:12] in str(info.value)
    assert socket.gethostname() in str(info.value) and "same path" in (info.value.fix or "")


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(OptionError, match="not installed") as info:
        RayBackend()
    assert "pip install 'assay[ray]'" in (info.value.fix or "")


def test_compress_runs_its_damage_audits_on_ray(files, tmp_path, capsys, monkeypatch):
    """The original and every variant are evaluated through the Ray backend (compress writes no evidence.json:
    the models each RayBackend.run saw are the proof)."""
    seen: list[str] = []
    real_run = RayBackend.run

    def recording_run(self, model, view, shards):
        seen.append(model.spec().path)
        yield from real_run(self, model, view, shards)

    monkeypatch.setattr(RayBackend, "run", recording_run)
    out = tmp_path / "c"
    code, err = run_cli(["compress", str(files / "digits.onnx"), "--data", str(files / "test.npz"), "--methods",
                         "fp16", "--latency-batch-sizes", "8", "--latency-budget", "0.1", "--n-bootstrap", "100",
                         "--no-cache", "-q", "--out", str(out), "--backend", "ray", "--num-workers", "1"], capsys)
    assert code == 0, err
    assert str(files / "digits.onnx") in seen and any(path.endswith("fp16.onnx") for path in seen)
    result = json.loads((out / "compression.json").read_text())
    assert "fp16" in json.dumps(result)


def test_audit_with_a_model_on_ray_matches_local(files):
    runs = {}
    for backend in ("local", "ray"):
        settings = AuditSettings(examples=0, backend=backend, num_workers=2 if backend == "ray" else None)
        runs[backend] = run_audit(str(files / "train.npz"), str(files / "test.npz"), model=str(files / "digits.onnx"),
                                  settings=settings, model_options={"threads": 1}).evidence.model_dump(mode="json")
    assert runs["ray"]["config"]["backend"] == "ray" and runs["ray"]["config"]["embedding"] == "model features"
    assert comparable(runs["ray"]) == comparable(runs["local"])
