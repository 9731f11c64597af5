"""`assay serve` on a real uvicorn server (a subprocess on a free loopback port, tests/serve_launcher.py) talked to
with httpx: predictions equal ONNX Runtime's outputs computed here, validation errors (and no 500 on
hypothesis-generated junk), Prometheus metrics parsed with prometheus_client's parser, 32 concurrent clients,
dynamic batching equal to unbatched answers, the admin token, shadow rows, sticky canary routing within
binomial bounds, and a graceful SIGTERM that finishes in-flight requests and closes the sink."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from scipy.special import softmax
from scipy.stats import binom

from assay.cli import main
from assay.models import export_onnx
from serve_launcher import Server

CLASSES = ["cat", "dog", "fox"]


def _onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def _tiny_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve_models")
    return {name: export_onnx(_tiny_net(seed), torch.zeros(2, 6), root / f"{name}.onnx", class_names=CLASSES)
            for seed, name in enumerate(["main", "challenger"])}


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("serve")
    with Server(tmp, str(models["main"]), top_k=2, max_batch_rows=64, max_body_bytes=20000) as srv:
        yield srv


def _rows(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


def _check_answer(answer: dict, x: np.ndarray, model: Path) -> None:
    probs = softmax(_onnx_logits(model, x).astype(np.float64), axis=1)
    assert len(answer["predictions"]) == len(x)
    for got, p in zip(answer["predictions"], probs, strict=True):
        best = int(np.argmax(p))
        assert got["class_index"] == best and got["class_name"] == CLASSES[best]
        assert got["confidence"] == pytest.approx(p[best], rel=1e-5)
        order = np.argsort(-p)[:2]
        assert [t["class_index"] for t in got["top_k"]] == order.tolist()
        assert [t["probability"] for t in got["top_k"]] == pytest.approx(p[order].tolist(), rel=1e-5)


def test_predictions_equal_onnxruntime_json_and_npy(server: Server, models: dict[str, Path]) -> None:
    x = _rows(0, 10)
    with httpx.Client(base_url=server.url) as client:
        answer = client.post("/v1/predict", json={"inputs": x.tolist()}, headers={"X-Request-ID": "req-1"}).json()
        _check_answer(answer, x, models["main"])
        assert answer["request_id"] == "req-1" and answer["model_version"].startswith("main.onnx@")
        buffer = io.BytesIO()
        np.save(buffer, x)
        npy = client.post("/v1/predict", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"})
        _check_answer(npy.json(), x, models["main"])
        one = client.post("/v1/predict", json={"inputs": x[0].tolist()}).json()  # a single row, no batch axis
        _check_answer(one, x[:1], models["main"])
        assert len(one["request_id"]) == 36  # a uuid4 when the client names none
        for bad in ("a b;<script>", "x" * 200):  # not a request id: the server names its own
            bad_id = client.post("/v1/predict", json={"inputs": x[:1].tolist()}, headers={"X-Request-ID": bad})
            assert len(bad_id.json()["request_id"]) == 36
        info = client.get("/v1/model").json()
        assert info["classes"] == CLASSES and info["input_shape"][1:] == [6] and info["format"] == "onnx"
        assert info["sha256"] == hashlib.sha256(models["main"].read_bytes()).hexdigest()
        assert client.get("/healthz").json() == {"status": "ok"}
    rows = [r for r in server.rows() if r.get("request_id") == "req-1"]
    assert [r["row"] for r in rows] == list(range(10))
    np.testing.assert_allclose([r["logits"] for r in rows], _onnx_logits(models["main"], x), rtol=1e-5, atol=1e-6)
    assert [r["top1"] for r in rows] == np.argmax(_onnx_logits(models["main"], x), axis=1).tolist()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize(("body", "content_type", "status", "where"), [
    (b"{not json", "application/json", 400, "body"),
    (b'{"rows": [[1]]}', "application/json", 422, "body"),
    (json.dumps({"inputs": [[1, 2, 3]]}).encode(), "application/json", 422, "inputs"),
    (json.dumps({"inputs": [[1, 2, 3, 4, 5, 6], [1, 2]]}).encode(), "application/json", 422, "inputs"),
    (json.dumps({"inputs": [["a"] * 6]}).encode(), "application/json", 422, "inputs"),
    (json.dumps({"inputs": []}).encode(), "application/json", 422, "inputs"),
    (b'{"inputs": [[1, 2, 3, 4, 5, NaN]]}', "application/json", 422, "inputs[0]"),
    (b'{"inputs": [[1, 2, 3, 4, 5, 1e999]]}', "application/json", 422, "inputs[0]"),
    (json.dumps({"inputs": [[1e300] * 6]}).encode(), "application/json", 422, "inputs"),
    (json.dumps({"inputs": [[0.0] * 6] * 65}).encode(), "application/json", 413, "inputs"),
    (b"\x93NUMPY garbage", "application/x-npy", 400, "body"),
    (_npy(np.array([{"a": 1}] * 6, dtype=object)), "application/x-npy", 400, "body"),
    (_npy(np.array(["abcdef"] * 6)), "application/x-npy", 422, "body"),
    (_npy(np.zeros((2, 5), np.float32)), "application/x-npy", 422, "inputs"),
    (b"x" * 30000, "application/json", 413, "body"),
])
def test_bad_inputs_are_4xx_with_what_where_fix(server: Server, body: bytes, content_type: str, status: int,
                                               where: str) -> None:
    answer = httpx.post(server.url + "/v1/predict", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error", "where", "fix"} and error["where"] == where and error["fix"]


def test_body_limit_holds_without_content_length(server: Server) -> None:
    """A chunked body (no Content-Length) is counted while it streams in and refused past the limit."""
    def chunks():
        yield b'{"inputs": ['
        for _ in range(2000):
            yield b"[0, 0, 0, 0, 0, 0],"
        yield b"[0, 0, 0, 0, 0, 0]]}"

    answer = httpx.post(server.url + "/v1/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["where"] == "body"


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                            lambda children: st.lists(children, max_size=7) | st.dictionaries(st.text(max_size=5),
                                                                                                children, max_size=3),
                            max_leaves=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300), _json_values.map(lambda v: json.dumps({"inputs": v}).encode()),
                      _json_values.map(lambda v: json.dumps(v).encode())),
       content_type=st.sampled_from(["application/json", "application/x-npy", "text/plain", ""]))
def test_junk_never_yields_a_500(server: Server, body: bytes, content_type: str) -> None:
    answer = httpx.post(server.url + "/v1/predict", content=body, headers={"Content-Type": content_type})
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert set(answer.json()) == {"error", "where", "fix"}


def test_metrics_parse_and_count(server: Server) -> None:
    x = _rows(5, 7)
    before = _metrics(server.url)
    with httpx.Client(base_url=server.url) as client:
        answers = [client.post("/v1/predict", json={"inputs": x.tolist()}).json() for _ in range(3)]
        client.post("/v1/predict", json={"inputs": [[1.0]]})
    after = _metrics(server.url)
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert delta[("assay_requests_total", (("endpoint", "/v1/predict"),))] == 4
    assert delta[("assay_errors_total", (("endpoint", "/v1/predict"), ("status", "422")))] == 1
    classes = [p["class_name"] for a in answers for p in a["predictions"]]
    for name in CLASSES:
        key = ("assay_predictions_total", (("class_name", name), ("role", "primary")))
        assert delta.get(key, 0) == classes.count(name)
    assert delta[("assay_confidence_count", (("role", "primary"),))] == 21
    assert delta[("assay_request_latency_seconds_count", (("endpoint", "/v1/predict"),))] == 4
    info = [key for key, value in after.items() if key[0] == "assay_model_info" and value == 1]
    assert len(info) == 1 and dict(info[0][1])["version"] == answers[0]["model_version"]
    assert ("assay_log_queue_depth", ()) in after and ("assay_log_dropped_total", ()) in after


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_32_concurrent_clients(server: Server, models: dict[str, Path]) -> None:
    async def client_run(client: httpx.AsyncClient, seed: int) -> list[tuple[np.ndarray, dict]]:
        out = []
        for i in range(4):
            x = _rows(1000 * seed + i, 3)
            answer = await client.post("/v1/predict", json={"inputs": x.tolist()})
            assert answer.status_code == 200, answer.text
            out.append((x, answer.json()))
        return out

    async def run() -> list[list[tuple[np.ndarray, dict]]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     limits=httpx.Limits(max_connections=32)) as client:
            return await asyncio.gather(*(client_run(client, seed) for seed in range(32)))

    results = asyncio.run(run())
    for per_client in results:
        for x, answer in per_client:
            _check_answer(answer, x, models["main"])
    assert len({a["request_id"] for per in results for _, a in per}) == 128


def test_feedback_goes_to_the_sink(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/v1/feedback", json={"request_id": "req-fb", "label": "dog"}).json()["label"] == 1
        assert client.post("/v1/feedback", json={"request_id": "req-fb2", "label": 2}).status_code == 200
        assert client.post("/v1/feedback", json={"request_id": "req-fb", "label": 7}).status_code == 422
        assert client.post("/v1/feedback", json={"label": 1}).status_code == 422
        assert client.post("/v1/feedback", content=b"[").status_code == 400
    feedback = [(r["request_id"], r["label"]) for r in server.rows() if r.get("kind") == "feedback"]
    assert feedback == [("req-fb", 1), ("req-fb2", 2)]


def test_admin_reload_needs_the_token(server: Server, models: dict[str, Path], tmp_path: Path) -> None:
    assert httpx.post(server.url + "/admin/reload").status_code == 404  # no token configured: no admin endpoint
    with Server(tmp_path, str(models["main"]), admin_token="s3cret-token") as srv:
        assert httpx.post(srv.url + "/admin/reload").status_code == 403
        assert httpx.post(srv.url + "/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
        ok = httpx.post(srv.url + "/admin/reload", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json()["changed"] == {}
        # CORS is off unless asked: no Access-Control header for a foreign origin
        answer = httpx.get(srv.url + "/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in answer.headers


def test_batching_equals_unbatched(models: dict[str, Path], tmp_path: Path) -> None:
    xs = [_rows(200 + i, 1 + i % 3) for i in range(32)]

    async def run(url: str) -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answers = await asyncio.gather(*(client.post("/v1/predict", json={"inputs": x.tolist()}) for x in xs))
        return [a.json() for a in answers]

    with Server(tmp_path, str(models["main"]), top_k=2, max_batch=16, max_wait_ms=200) as srv:
        batched = asyncio.run(run(srv.url))
        calls = _metrics(srv.url)[("assay_model_latency_seconds_count", (("role", "primary"),))]
    with Server(tmp_path, str(models["main"]), top_k=2) as srv:
        plain = asyncio.run(run(srv.url))
    for x, a, b in zip(xs, batched, plain, strict=True):
        _check_answer(a, x, models["main"])
        assert [p["class_index"] for p in a["predictions"]] == [p["class_index"] for p in b["predictions"]]
        assert [t["class_index"] for p in a["predictions"] for t in p["top_k"]] == \
            [t["class_index"] for p in b["predictions"] for t in p["top_k"]]
        assert [t["probability"] for p in a["predictions"] for t in p["top_k"]] == \
            pytest.approx([t["probability"] for p in b["predictions"] for t in p["top_k"]], rel=1e-6)
    assert calls < 32  # requests were grouped (warm-up is not counted: it does not go through the batcher)


def test_shadow_rows_and_sticky_canary(models: dict[str, Path], tmp_path: Path) -> None:
    fraction, n = 0.3, 300
    with Server(tmp_path, str(models["main"]), shadow=str(models["challenger"]), canary=str(models["challenger"]),
                canary_fraction=fraction, top_k=2) as srv, httpx.Client(base_url=srv.url) as client:
        x = _rows(9, 2)
        roles = {}
        for i in range(n):
            answer = client.post("/v1/predict", json={"inputs": x.tolist()}, headers={"X-Assay-Key": f"user-{i}"})
            roles[f"user-{i}"] = answer.json()["role"]
            model = models["challenger"] if roles[f"user-{i}"] == "canary" else models["main"]
            _check_answer(answer.json(), x, model)
        for i in range(0, n, 10):  # sticky: the same key, the same role
            again = client.post("/v1/predict", json={"inputs": x.tolist()}, headers={"X-Assay-Key": f"user-{i}"})
            assert again.json()["role"] == roles[f"user-{i}"]
        shadowed = client.post("/v1/predict", json={"inputs": x.tolist()}, headers={"X-Request-ID": "shadow-1"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(r.get("request_id") == "shadow-1" and r["role"] == "shadow"
                                                      for r in srv.rows()):
            time.sleep(0.05)
    canaries = sum(role == "canary" for role in roles.values())
    low, high = binom.interval(1 - 1e-6, n, fraction)
    assert low <= canaries <= high
    # the same assignment computed independently: first 8 bytes of sha256(key) over 2**64 below the fraction
    expected = {key: int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < fraction
                for key in roles}
    assert {key: role == "canary" for key, role in roles.items()} == expected
    rows = [r for r in srv.rows() if r.get("request_id") == "shadow-1"]
    by_role = {r["role"]: [] for r in rows}
    for r in rows:
        by_role[r["role"]].append(r["logits"])
    primary_role = shadowed.json()["role"]
    assert set(by_role) == {primary_role, "shadow"}
    np.testing.assert_allclose(by_role["shadow"], _onnx_logits(models["challenger"], x), rtol=1e-5, atol=1e-6)


def test_sigterm_finishes_in_flight_requests_and_closes_the_sink(models: dict[str, Path], tmp_path: Path) -> None:
    srv = Server(tmp_path, str(models["main"]), sink_delay_ms=1500)
    results: list[int] = []
    with srv:
        def call(i: int) -> None:
            answer = httpx.post(srv.url + "/v1/predict", json={"inputs": _rows(i, 1).tolist()},
                                headers={"X-Request-ID": f"inflight-{i}"}, timeout=30)
            results.append(answer.status_code)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(r.get("request_id", "").startswith("inflight-")
                                                  for r in srv.rows()) < 8:
            time.sleep(0.02)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        # uvicorn re-raises the signal once shut down cleanly: killed by SIGTERM, after finishing everything
        assert srv.proc.wait(30) in (0, -signal.SIGTERM)
    assert results == [200] * 8
    rows = srv.rows()
    assert rows[-1] == {"closed": True}
    assert {r["request_id"] for r in rows[:-1]} >= {f"inflight-{i}" for i in range(8)}


def test_cli_refuses_bad_serve_options(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    cases = [
        ["serve", str(models["main"]), "--canary-fraction", "0.2"],
        ["serve", str(models["main"]), "--admin-token-file", str(tmp_path / "missing")],
        ["serve", str(tmp_path / "missing.onnx")],
        ["serve", str(garbage)],
        ["serve", str(models["main"]), "--canary", str(garbage), "--canary-fraction", "0.1"],
    ]
    monitor_cases = {  # the flag each error must name
        "--accuracy-floor": ["serve", str(models["main"]), "--monitor", "--auto-rollback"],
        "--auto-rollback": ["serve", str(models["main"]), "--auto-rollback", "--accuracy-floor", "0.9"],
        "--rollout-alpha": ["serve", str(models["main"]), "--monitor", "--rollout-alpha", "1.5"],
        "--monitor-window": ["serve", str(models["main"]), "--monitor", "--monitor-window", "soon"],
    }
    for argv in [*cases, *monitor_cases.values()]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("Error:") and "Fix:" in err and "Traceback" not in err
        flag = next((f for f, a in monitor_cases.items() if a is argv), None)
        assert flag is None or flag in err, (argv, err)


@pytest.mark.parametrize("durability", ["fast", "strict"])
def test_cli_serves_and_sigterm_flushes_the_prediction_log(models: dict[str, Path], tmp_path: Path,
                                                           durability: str) -> None:
    """`python -m assay.cli serve` with the real prediction log: after SIGTERM every answered row is in the log,
    its logits equal ONNX Runtime's, and the feedback label is joined to its request."""
    import os
    import subprocess
    import sys

    from assay.serve.log import read_log
    from serve_launcher import free_port

    port, store = free_port(), tmp_path / "logs"
    token = tmp_path / "token"
    token.write_text("cli-token-456\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.pop("ASSAY_ADMIN_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "assay.cli", "serve", str(models["main"]), "--port", str(port),
                             "--log-store", str(store), "--durability", durability, "--log-inputs",
                             "--admin-token-file", str(token),
                             *(["--log-on-full", "block"] if durability == "fast" else [])], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        xs = {f"cli-{i}": _rows(500 + i, 1 + i % 4) for i in range(40)}

        async def run() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                answers = await asyncio.gather(*(client.post("/v1/predict", json={"inputs": x.tolist()},
                                                             headers={"X-Request-ID": rid}) for rid, x in xs.items()))
                assert [a.status_code for a in answers] == [200] * len(xs)
                assert (await client.post("/v1/feedback", json={"request_id": "cli-3", "label": "fox"})).status_code \
                    == 200
                reload = await client.post("/admin/reload", headers={"Authorization": "Bearer cli-token-456"})
                assert reload.status_code == 200

        asyncio.run(run())
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = read_log(str(store))
    assert len(log) == sum(len(x) for x in xs.values())
    for rid, x in xs.items():
        got = log[log["request_id"] == rid].sort_values("row")
        np.testing.assert_allclose(np.stack(got["logits"].to_numpy()), _onnx_logits(models["main"], x), rtol=1e-5,
                                   atol=1e-6)
        assert got["inputs"].map(lambda b: np.frombuffer(b, np.float32)).map(list).tolist() == x.tolist()
    labelled = log[log["label"].notna()]
    assert labelled["request_id"].unique().tolist() == ["cli-3"] and set(labelled["label"]) == {2}


def test_bad_input_never_reaches_the_model_and_readyz_waits_for_the_load() -> None:
    """In process (starlette's TestClient): a model that counts its forward passes is not called by any refused
    request; /readyz answers 503 until the (slow) load and warm-up are done, then 200; with --log-features the
    rows carry the model's features."""
    from fastapi.testclient import TestClient

    from assay.serve.app import ModelSource, create_app
    from conftest import LinearModel

    model = LinearModel(np.eye(4, 3), np.zeros(3), (4,))
    release = threading.Event()

    class SlowSource(ModelSource):
        def load(self):  # type: ignore[no-untyped-def]
            release.wait(10)
            return super().load()

    class ListSink:
        def __init__(self) -> None:
            self.rows: list[dict] = []
            self.queued, self.dropped, self.committed = 3, 7, 11  # what a prediction log reports

        def submit(self, rows: list[dict]) -> None:
            self.rows.extend(rows)

        def close(self) -> None:
            pass

    sink = ListSink()
    app = create_app(SlowSource(model), sink=sink, max_body_bytes=2000, max_batch_rows=8, log_features=True)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/predict", json={"inputs": [[0, 0, 0, 0]]}).status_code == 503
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/readyz").status_code == 200
        warmed = model.calls
        assert warmed == 6  # the warm-up pass, then five timed ones (the inline decision)
        refused = [b"{", b'{"inputs": [[1, 2, 3]]}', b'{"inputs": [[1, 2, 3, NaN]]}', b'{"inputs": [[1, 2, 3, "4"]]}',
                   json.dumps({"inputs": [[0] * 4] * 9}).encode(), b"[" * 3000, _npy(np.zeros((1, 4), complex))]
        for body in refused:
            answer = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"
                                                                      if not body.startswith(b"\x93") else
                                                                      "application/x-npy"})
            assert 400 <= answer.status_code < 500, (body[:40], answer.text)
        assert model.calls == warmed
        ok = client.post("/v1/predict", json={"inputs": [[1, 2, 3, 4]]})
        assert ok.status_code == 200 and model.calls == warmed + 1
        samples = {sample.name: sample.value for family in text_string_to_metric_families(client.get("/metrics").text)
                   for sample in family.samples}
        assert (samples["assay_log_queue_depth"], samples["assay_log_dropped_total"],
                samples["assay_log_committed_total"]) == (3, 7, 11)
    assert sink.rows[-1]["features"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(sink.rows[-1]["logits"], [1, 2, 3])


def test_batched_path_logs_features_and_failed_reloads_are_counted() -> None:
    """With --max-batch and --log-features the batched rows carry the model's features (each request its own
    rows); a poll that cannot load the new version keeps the old model serving, counts the failure in /metrics
    (assay_model_reload_failures_total) and names it in /readyz; the log's failed and pruned rows are exported."""
    from fastapi.testclient import TestClient

    from assay.serve.app import LoadedModel, ModelSource, create_app
    from conftest import LinearModel

    model = LinearModel(np.eye(4, 3), np.zeros(3), (4,))

    class FlakyRegistrySource(ModelSource):
        """Claims to follow an alias that moved to v2, whose load fails."""

        def __init__(self) -> None:
            super().__init__(model)
            self.is_registry = True
            self.loads = 0

        def current_version(self) -> str:
            return "clf@1" if self.loads == 0 else "clf@2"

        def load(self) -> LoadedModel:
            self.loads += 1
            if self.loads > 1:
                raise RuntimeError("artifact clf@2 is damaged")
            warm_model = super().load()
            return LoadedModel("clf@1", warm_model.model)

    class ListSink:
        def __init__(self) -> None:
            self.rows: list[dict] = []
            self.failed, self.pruned_rows = 13, 17

        def submit(self, rows: list[dict]) -> None:
            self.rows.extend(rows)

        def close(self) -> None:
            pass

    sink, source = ListSink(), FlakyRegistrySource()
    app = create_app(source, sink=sink, max_batch=8, max_wait_ms=50, log_features=True, poll_seconds=0.02)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        while source.loads < 3 and time.monotonic() < deadline:  # the poller tried (and failed) at least twice
            time.sleep(0.02)
        answer = client.post("/v1/predict", json={"inputs": x.tolist()})
        assert answer.status_code == 200 and answer.json()["model_version"] == "clf@1"
        ready = client.get("/readyz").json()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(client.get("/metrics").text) for s in family.samples}
    assert "artifact clf@2 is damaged" in ready["last_reload_error"]
    assert samples[("assay_model_reload_failures_total", (("trigger", "poll"),))] >= 2
    assert samples[("assay_log_failed_total", ())] == 13 and samples[("assay_log_pruned_total", ())] == 17
    logged = [r for r in sink.rows if r["role"] == "primary"]
    assert [r["features"].tolist() for r in logged] == x.tolist()  # the identity model's features are its inputs
    np.testing.assert_allclose(np.stack([r["logits"] for r in logged]), x[:, :3])


@pytest.mark.parametrize(("inline_below_ms", "on_loop"), [(1000.0, True), (0.0, False)])
def test_fast_models_run_on_the_event_loop_slow_ones_in_the_pool(inline_below_ms: float, on_loop: bool) -> None:
    """A model faster than inline_below_ms (one-row time measured at warm-up, times the rows) is called on the
    event loop's thread (the pool hop costs more than the call); with 0 every call goes to a worker thread. The
    answers are the same either way."""
    from fastapi.testclient import TestClient

    from assay.serve.app import create_app
    from conftest import LinearModel

    threads: list[int] = []

    class Recording(LinearModel):
        def _forward(self, x, want_features):  # type: ignore[no-untyped-def]
            threads.append(threading.get_ident())
            return super()._forward(x, want_features)

    model = Recording(np.eye(4, 3), np.zeros(3), (4,))
    app = create_app(model, inline_below_ms=inline_below_ms)
    loop_thread: list[int] = []

    @app.get("/loop-thread")
    async def loop_thread_endpoint() -> dict:
        loop_thread.append(threading.get_ident())
        return {}

    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.get("/loop-thread")
        answer = client.post("/v1/predict", json={"inputs": [[0.1, 0.9, 0.3, 0.0]]}).json()
    assert answer["predictions"][0]["class_index"] == 1
    assert (threads[-1] == loop_thread[0]) is on_loop


def test_logits_that_look_like_probabilities_are_served_and_a_failing_model_is_a_json_500() -> None:
    """The load-time refusal of probability outputs is not repeated per request (one row of logits may happen to
    be non-negative and sum to 1); a model that raises on valid input answers a JSON 500 naming the model, not a
    traceback."""
    from fastapi.testclient import TestClient

    from assay.serve.app import create_app
    from conftest import LinearModel

    class Fragile(LinearModel):
        def _forward(self, x, want_features):  # type: ignore[no-untyped-def]
            if x[0, 3] == 7:
                raise FloatingPointError("planted failure")
            return super()._forward(x, want_features)

    app = create_app(Fragile(np.eye(4, 3), np.zeros(3), (4,)))
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        sums_to_one = client.post("/v1/predict", json={"inputs": [[0, 1, 0, 0]]})
        failing = client.post("/v1/predict", json={"inputs": [[0, 1, 0, 7]]})
    assert sums_to_one.status_code == 200 and sums_to_one.json()["predictions"][0]["class_index"] == 1
    assert failing.status_code == 500
    body = failing.json()
    assert "FloatingPointError" in body["error"] and body["where"] == "model" and "Traceback" not in failing.text
