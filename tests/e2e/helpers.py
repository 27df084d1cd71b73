"""Helpers for end-to-end tests: bounded polling, SSE parsing, a runner's container."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from docker.models.containers import Container

from tests.e2e.conftest import Stack


def wait_ready(api: httpx.Client, runner_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    runner: dict[str, Any] = {}
    while time.monotonic() < deadline:
        runner = api.get(f"/v1/runners/{runner_id}").json()
        if runner["state"] != "provisioning":
            break
        time.sleep(0.1)
    assert runner.get("state") == "ready", f"runner not ready: {runner}"
    return runner


def container_of(stack: Stack, runner_id: str) -> Container:
    return stack.docker.containers.get(f"paddock-{runner_id}")


def runner_env(stack: Stack, runner_id: str) -> dict[str, str]:
    env = container_of(stack, runner_id).attrs["Config"]["Env"]
    return dict(item.split("=", 1) for item in env)


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events, kind = [], ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
    return events
