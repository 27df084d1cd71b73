"""Run the control plane, the gateway and (for demos) the fake provider in one process.

One event loop, one uvicorn server per app; SIGINT/SIGTERM stop all of them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

__all__ = ["AppServer", "serve_apps"]

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `serve_apps`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class AppServer:
    name: str
    app: FastAPI
    host: str
    port: int


async def serve_apps(
    apps: list[AppServer],
    *,
    on_started: Callable[[], Awaitable[None]] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
    stopping_timeout_s: float = 30.0,
) -> None:
    """Serve every app until SIGINT/SIGTERM; `on_stopping` runs while they still serve."""
    servers = [
        _Server(uvicorn.Config(a.app, host=a.host, port=a.port, log_level="warning", lifespan="on"))
        for a in apps
    ]

    def _stop() -> None:
        for server in servers:
            server.should_exit = True

    async def _stop_gracefully() -> None:
        if on_stopping is not None:
            try:
                await asyncio.wait_for(on_stopping(), stopping_timeout_s)
            except Exception:
                logger.exception("shutdown hook failed")
        _stop()

    stopping: list[asyncio.Task[None]] = []

    def _on_signal() -> None:
        if stopping:  # a second signal: stop now
            _stop()
            return
        stopping.append(asyncio.create_task(_stop_gracefully()))

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal)
    tasks = [
        asyncio.create_task(s.serve(), name=a.name) for s, a in zip(servers, apps, strict=True)
    ]
    try:
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                _stop()
                break
            await asyncio.sleep(0.05)
        else:
            for a in apps:
                logger.info("%s listening on http://%s:%d", a.name, a.host, a.port)
            if on_started is not None:
                await on_started()
        await asyncio.gather(*tasks)
    finally:
        _stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if any(not s.started for s in servers):
        raise SystemExit("a Paddock server failed to start (port in use?)")
