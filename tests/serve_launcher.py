"""Start ``assay serve``'s app on a real uvicorn server in a subprocess, for tests/test_serve*.py.

``python tests/serve_launcher.py CONFIG.json``: CONFIG holds create_app's keyword arguments plus ``model``,
``port``, ``rows_file`` (a JSON-lines sink: every submitted row written at once, ``{"closed": true}`` last
when the sink is closed) and ``sink_delay_ms`` (each submit answers after this delay, as a strict-durability
log would: keeps requests in flight for the shutdown test). :class:`Server` starts it and waits for /readyz.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class JsonlSink:
    def __init__(self, path: str, delay_ms: float) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.delay = delay_ms / 1000.0
        self.queued = self.dropped = self.committed = 0

    def submit(self, rows: list[dict[str, Any]]) -> Any:
        for row in rows:
            self.file.write(json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()})
                            + "\n")
        self.file.flush()
        self.committed += len(rows)
        return asyncio.sleep(self.delay) if self.delay else None

    def close(self) -> None:
        self.file.write(json.dumps({"closed": True}) + "\n")
        self.file.close()


def main(config_path: str) -> None:
    from assay.serve import create_app, serve

    config = json.loads(Path(config_path).read_text())
    model, port = config.pop("model"), config.pop("port")
    rows_file, delay = config.pop("rows_file", None), config.pop("sink_delay_ms", 0)
    sink = JsonlSink(rows_file, delay) if rows_file else None
    serve(create_app(model, sink=sink, **config), "127.0.0.1", port, graceful_seconds=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A launcher subprocess serving ``model`` with ``options``; ``url``; stopped (SIGTERM) on exit."""

    def __init__(self, tmp: Path, model: str, **options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rows_file = tmp / f"rows_{self.port}.jsonl"
        config = {"model": model, "port": self.port, "rows_file": str(self.rows_file), **options}
        self.config = tmp / f"serve_{self.port}.json"
        self.config.write_text(json.dumps(config))
        self.log = tmp / f"serve_{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        import httpx

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                            os.environ.get("PYTHONPATH", "")])}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, __file__, str(self.config)], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not become ready: {self.log.read_text()}")

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return None if self.proc is None else self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rows(self) -> list[dict[str, Any]]:
        if not self.rows_file.exists():
            return []
        return [json.loads(line) for line in self.rows_file.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main(sys.argv[1])
