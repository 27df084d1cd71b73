"""Small polling helpers for API tests (bounded in time)."""

from __future__ import annotations

import time
from typing import Any

import httpx


def wait_for_state(
    api: httpx.Client, runner_id: str, states: set[str], timeout_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    runner: dict[str, Any] = {}
    while time.monotonic() < deadline:
        runner = api.get(f"/v1/runners/{runner_id}").json()
        if runner.get("state") in states:
            return runner
        time.sleep(0.05)
    raise AssertionError(f"runner {runner_id} never reached {states}; last: {runner}")


def event_types(api: httpx.Client, runner_id: str) -> list[str]:
    events = api.get(f"/v1/runners/{runner_id}/events").json()["events"]
    return [e["type"] for e in events]


def transitions(api: httpx.Client, runner_id: str) -> list[tuple[str, str]]:
    events = api.get(f"/v1/runners/{runner_id}/events").json()["events"]
    return [
        (e["data"]["from"], e["data"]["to"]) for e in events if e["type"] == "runner.state_changed"
    ]
