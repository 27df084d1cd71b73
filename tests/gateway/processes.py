"""Gateway processes for tests that need several: `python -m paddock gateway` on loopback
ports, sharing one SQLite file and one Redis, beside `python -m paddock fake-provider`; and a
loopback TCP relay in front of Redis that a test can cut, to take Redis away mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

_WORKTREE = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    pytest.fail(f"{url} did not start in {_START_TIMEOUT_S}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def paddock_process(
    args: list[str], env: Mapping[str, str], health_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m paddock <args>` with `env` over this one's; its output goes to `log`
    (printed when the test fails to start it)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paddock", *args],
            cwd=_WORKTREE,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(health_url, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def gateway_env(
    *, port: int, database_url: str, redis_url: str, prefix: str, fake_url: str, admin_key: str
) -> dict[str, str]:
    return {
        "PADDOCK_GATEWAY_HOST": "127.0.0.1",
        "PADDOCK_GATEWAY_PORT": str(port),
        "PADDOCK_DATABASE_URL": database_url,
        "PADDOCK_REDIS_URL": redis_url,
        "PADDOCK_COUNTERS_PREFIX": prefix,
        "PADDOCK_ADMIN_KEY": admin_key,
        "PADDOCK_PROVIDER_BASE_URLS": json.dumps({"fake": f"{fake_url}/v1"}),
        "PADDOCK_PROVIDER_KEYS": json.dumps({"fake": "fk_any"}),
        "PADDOCK_MAX_RETRIES": "0",
        "PADDOCK_ORG_SETTINGS_TTL_S": "0",
        "PADDOCK_DEFAULT_MAX_TOKENS": "256",
    }


class RedisRelay:
    """Forwards loopback connections to Redis until `cut()`, which closes every connection and
    refuses new ones: to the gateways, Redis has gone away."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port: int = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
