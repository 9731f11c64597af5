"""Running the app: ``serve(app, host, port)`` starts uvicorn in this process with graceful shutdown.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets in-flight requests finish (up to
``graceful_seconds``), then runs the app's shutdown, which closes the prediction sink so it flushes every
queued row before the process exits.
"""

from __future__ import annotations

from typing import Any

__all__ = ["serve"]


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, *, graceful_seconds: int = 30,
          log_level: str = "warning") -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM/SIGINT (then shut down gracefully)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=graceful_seconds, lifespan="on")
    uvicorn.Server(config).run()
