"""Run an ASGI app on a real uvicorn server in a background thread, on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve_app"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


@contextmanager
def serve_app(app: ASGIApp, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` (lifespan included) on an ephemeral port; yield its base URL.

    The server runs in its own thread with its own event loop, so sync clients (httpx.Client,
    the OpenAI SDK) can call it from the test. At exit it stops accepting, lets in-flight
    requests finish for up to a few seconds, runs the lifespan shutdown and joins the thread.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=0,
        lifespan="on",
        log_config=None,  # leave logging as pytest configured it
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # SystemExit on a failed startup, anything else too
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{type(app).__name__}", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if failure or not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(_STOP_TIMEOUT_S)
            cause = failure[0] if failure else None
            raise RuntimeError(f"uvicorn did not start serving {app!r}") from cause
        time.sleep(0.01)

    port = server.servers[0].sockets[0].getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown_host}:{port}"
    finally:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"uvicorn serving {app!r} did not stop within {_STOP_TIMEOUT_S}s")
        if failure:
            raise RuntimeError(f"uvicorn serving {app!r} crashed") from failure[0]
