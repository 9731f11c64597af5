"""`assay serve` over loopback: requests/s and p50/p99 latency at concurrency 1, 8 and 32, for the demo model
(DigitsCNN) and a larger MLP (a few ms per call), against baselines measured in the same run: the ONNX Runtime
session called in process (no HTTP), a minimal FastAPI endpoint around the same session on the same uvicorn, and
`mlflow models serve` (MLflow's scoring server, --env-manager local) on a pyfunc model wrapping the same session
when mlflow is installed (`pip install 'assay[mlflow]'`). Assay runs without a prediction log (the log has its own
bench, bench_prediction_log.py), once plain and once with dynamic batching (--max-batch 32 --max-wait-ms 2).
Bounded: each point stops after REQUESTS requests or SECONDS.

The client (httpx, asyncio) runs on the same machine as the server, so on a small shared machine it competes
for the cores: read the ratios between rows of one run, not the absolute numbers. The overhead at concurrency 1 is
also measured with the servers taking turns request by request (bare ASGI app on uvicorn, the minimal FastAPI
endpoint, Assay; all three running at once), so that noise hits each alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine

REQUESTS, SECONDS, CONCURRENCY = 400, 4.0, (1, 8, 32)
INTERLEAVED_ROUNDS = 1000

MINIMAL = """
import sys, numpy as np, onnxruntime as ort, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
app = FastAPI()
@app.get("/readyz")
async def ready():
    return {"ok": True}
@app.post("/v1/predict")
async def predict(request: Request):
    x = np.asarray((await request.json())["inputs"], dtype=np.float32)
    logits = session.run(None, {name: x})[0]
    p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    return JSONResponse({"predictions": [{"class_index": int(i), "confidence": float(r[i])}
                                         for r, i in zip(p, p.argmax(1))]})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""

MLFLOW_MODEL = """
import mlflow
import numpy as np
import onnxruntime as ort
from mlflow.pyfunc import PythonModel


class OnnxClassifier(PythonModel):
    def load_context(self, context):
        self.session = ort.InferenceSession(context.artifacts["onnx"], providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def predict(self, context, model_input, params=None):
        logits = self.session.run(None, {self.name: np.asarray(model_input, dtype=np.float32)})[0]
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)


mlflow.models.set_model(OnnxClassifier())
"""

BARE_ASGI = """
import json, sys, numpy as np, onnxruntime as ort, uvicorn
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/readyz":
        answer = b'{"ok": true}'
    else:
        logits = session.run(None, {name: np.asarray(json.loads(body)["inputs"], dtype=np.float32)})[0]
        answer = json.dumps({"class_index": logits.argmax(1).tolist()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""

ASSAY = """
import json, sys
from assay.serve import create_app, serve
serve(create_app(sys.argv[1], top_k=1, **json.loads(sys.argv[3])), "127.0.0.1", int(sys.argv[2]))
"""


def _models(folder: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """The demo's model (`assay demo`'s DigitsCNN, 1x8x8 inputs; untrained weights: latency does not depend on
    them) and a larger MLP whose forward pass takes ~5-15 ms here; each with the shape of one input row."""
    import torch

    from assay.demo import DigitsCNN
    from assay.models import export_onnx

    torch.manual_seed(0)
    demo = DigitsCNN().eval()
    large = torch.nn.Sequential(torch.nn.Linear(3072, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 2048),
                                torch.nn.ReLU(), torch.nn.Linear(2048, 10))
    return {"demo DigitsCNN 1x8x8": (export_onnx(demo, torch.zeros(2, 1, 8, 8), folder / "demo.onnx"), (1, 8, 8)),
            "larger MLP 3072-4096-2048-10": (export_onnx(large, torch.zeros(2, 3072), folder / "large.onnx"),
                                             (3072,))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(args: list[str], port: int, ready: str = "/readyz") -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from PATH
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + ready, timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"server did not start: {' '.join(args[:3])}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # mlflow's CLI runs uvicorn as a child: stop the whole group
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def _start(code: str, model: Path, options: dict | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    args = [sys.executable, "-c", code, str(model), str(port)] + ([json.dumps(options)] if options is not None else [])
    return _launch(args, port)


def _mlflow_model(model: Path) -> Path | None:
    """A pyfunc model (models-from-code: nothing pickled) wrapping the same ONNX session; None without mlflow."""
    try:
        import mlflow.pyfunc
    except ImportError:
        return None
    code = model.with_name(model.stem + "_mlflow_model.py")
    code.write_text(MLFLOW_MODEL)
    target = model.with_name(model.stem + "_mlflow")
    mlflow.pyfunc.save_model(str(target), python_model=str(code), artifacts={"onnx": str(model)})
    return target


def _start_mlflow(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder), "-p", str(port),
            "--env-manager", "local"]
    return _launch(args, port, ready="/ping")


async def _load(url: str, row: list[float], concurrency: int, path: str = "/v1/predict") -> tuple[float, np.ndarray]:
    import httpx

    latencies: list[float] = []
    body = json.dumps({"inputs": [row]}).encode()
    headers = {"Content-Type": "application/json"}
    stop = time.monotonic() + SECONDS

    async def worker(client: httpx.AsyncClient) -> None:
        while len(latencies) < REQUESTS and time.monotonic() < stop:
            start = time.perf_counter()
            answer = await client.post(url + path, content=body, headers=headers)
            latencies.append(time.perf_counter() - start)
            assert answer.status_code == 200, answer.text

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        for _ in range(3):  # warm the connections
            await client.post(url + path, content=body, headers=headers)
        begin = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - begin
    return len(latencies) / wall, np.asarray(latencies)


def _interleaved(targets: dict[str, tuple[str, str]], row: list[float], rounds: int) -> dict[str, np.ndarray]:
    """Concurrency 1, the servers taking turns request by request (all of them running at once): machine noise
    hits every server alike, so the differences of their latencies are fair even on a busy machine."""
    import httpx

    body = json.dumps({"inputs": [row]}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: dict[str, list[float]] = {label: [] for label in targets}
    with httpx.Client(timeout=30) as client:
        for url, path in targets.values():  # warm each connection
            for _ in range(20):
                client.post(url + path, content=body, headers=headers)
        for _ in range(rounds):
            for label, (url, path) in targets.items():
                start = time.perf_counter()
                answer = client.post(url + path, content=body, headers=headers)
                latencies[label].append(time.perf_counter() - start)
                assert answer.status_code == 200, answer.text
    return {label: np.asarray(values) for label, values in latencies.items()}


def _in_process(model: Path, row: np.ndarray) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = row[None, ...]
    for _ in range(10):
        session.run(None, {name: x})
    times = []
    begin = time.perf_counter()
    while len(times) < REQUESTS and time.perf_counter() - begin < SECONDS:
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return len(times) / (time.perf_counter() - begin), np.asarray(times)


def _line(label: str, rps: float, lat: np.ndarray, base_p99: float) -> str:
    p50, p99 = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3
    return (f"  {label:<34} {rps:8.0f} req/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   "
            f"p99 over in-process {p99 - base_p99 * 1e3:+7.2f} ms  (n={len(lat)})")


def _overhead(model: Path, row: np.ndarray, base_p99: float) -> None:
    """The c=1 overhead with the three servers running at once, taking turns request by request."""
    started = [(label, _start(code, model, options)) for label, code, options in
               (("bare ASGI on uvicorn", BARE_ASGI, None), ("minimal FastAPI + ORT", MINIMAL, None),
                ("assay serve", ASSAY, {}))]
    try:
        times = _interleaved({label: (url, "/v1/predict") for label, (_, url) in started}, row.tolist(),
                             INTERLEAVED_ROUNDS)
    finally:
        for _, (proc, _) in started:
            _stop(proc)
    print(f"  interleaved, c=1, {INTERLEAVED_ROUNDS} requests each (servers taking turns):")
    for label, lat in times.items():
        print(_line(label, len(lat) / lat.sum(), lat, base_p99))
    for base in ("bare ASGI on uvicorn", "minimal FastAPI + ORT"):
        p50 = (np.percentile(times["assay serve"], 50) - np.percentile(times[base], 50)) * 1e3
        p99 = (np.percentile(times["assay serve"], 99) - np.percentile(times[base], 99)) * 1e3
        print(f"  assay serve over {base}: p50 {p50:+.2f} ms, p99 {p99:+.2f} ms")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the interleaved c=1 overhead of the demo model (about a minute)")
    args = parser.parse_args()
    print(f"# bench_serve — {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for title, (model, shape) in _models(Path(tmp)).items():
            row = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
            rps, lat = _in_process(model, row)
            base_p99 = float(np.percentile(lat, 99))
            print(f"## {title}")
            print(_line("ORT session in process (c=1)", rps, lat, base_p99))
            if args.overhead_only:
                _overhead(model, row, base_p99)
                return
            servers = {"minimal FastAPI + ORT": (MINIMAL, None), "assay serve": (ASSAY, {}),
                       "assay serve --max-batch 32": (ASSAY, {"max_batch": 32, "max_wait_ms": 2})}
            results: dict[tuple[str, int], float] = {}
            for label, (code, options) in servers.items():
                proc, url = _start(code, model, options)
                try:
                    for c in CONCURRENCY:
                        rps, lat = asyncio.run(_load(url, row.tolist(), c))
                        results[label, c] = rps
                        print(_line(f"{label} c={c}", rps, lat, base_p99))
                finally:
                    _stop(proc)
            folder = _mlflow_model(model)
            if folder is None:
                print("  mlflow models serve: skipped (mlflow is not installed: pip install 'assay[mlflow]')")
            else:
                proc, url = _start_mlflow(folder)
                try:
                    for c in CONCURRENCY:
                        rps, lat = asyncio.run(_load(url, row.tolist(), c, path="/invocations"))
                        results["mlflow", c] = rps
                        print(_line(f"mlflow models serve c={c}", rps, lat, base_p99))
                finally:
                    _stop(proc)
            _overhead(model, row, base_p99)
            for c in CONCURRENCY:
                plain, batched = results["assay serve", c], results["assay serve --max-batch 32", c]
                minimal = results["minimal FastAPI + ORT", c]
                versus_mlflow = (f", assay / mlflow models serve {plain / results['mlflow', c]:.2f}x"
                                 if ("mlflow", c) in results else "")
                print(f"  c={c}: assay / minimal FastAPI throughput {plain / minimal:.2f}x, "
                      f"batched / unbatched {batched / plain:.2f}x{versus_mlflow}")


if __name__ == "__main__":
    main()
