"""Shared by the benchmarks: run `paddock serve` as a subprocess on loopback, and stats."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Paddock:
    url: str
    gateway_port: int
    key: str
    controlplane_id: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )


@contextlib.contextmanager
def paddock_serve(**env: str) -> Iterator[Paddock]:
    """`paddock serve` with the fake provider, on free loopback ports, in a temp data dir."""
    cp_port, gw_port, fake_port = free_port(), free_port(), free_port()
    key = f"pdk_bench_{secrets.token_hex(8)}"
    cp_id = f"bench-{os.getpid()}"
    with tempfile.TemporaryDirectory() as data:
        full_env = {
            **os.environ,
            "PADDOCK_ADMIN_KEY": key,
            "PADDOCK_DATA_DIR": data,
            "PADDOCK_PORT": str(cp_port),
            "PADDOCK_GATEWAY_PORT": str(gw_port),
            "PADDOCK_CONTROLPLANE_ID": cp_id,
            "PADDOCK_FAKE_PROVIDER_PORT": str(fake_port),
            **env,
        }
        log = Path(data) / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "paddock", "serve", "--fake-provider"],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                url = f"http://127.0.0.1:{cp_port}"
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                            break
                    if proc.poll() is not None:
                        raise RuntimeError(f"paddock serve exited:\n{log.read_text()}")
                    time.sleep(0.1)
                else:
                    raise RuntimeError(f"paddock serve did not start:\n{log.read_text()}")
                yield Paddock(url, gw_port, key, cp_id)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50": pick(0.50),
        "p95": pick(0.95),
        "mean": statistics.fmean(ordered),
        "max": ordered[-1],
    }


def fmt(stats: dict[str, float], unit: str = "ms") -> str:
    return (
        f"p50 {stats['p50']:8.1f} {unit}  p95 {stats['p95']:8.1f} {unit}  "
        f"mean {stats['mean']:8.1f} {unit}  (n={int(stats['n'])})"
    )
