"""Small polling helpers for API tests (bounded in time)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx

from paddock_core import ApprovalRecord, new_id, open_store, put_approval, utcnow


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


def seed_approval(database_url: str, org_id: str, timeout_s: float = 600.0) -> str:
    """A pending approval of `org_id`, as the gateway records a held call; returns its id."""
    record = ApprovalRecord(
        id=new_id("apr"),
        org_id=org_id,
        mode="queue",
        actor="key:pdk_seeded",
        endpoint="chat",
        model="fake-gpt",
        rule="model",
        message="model 'fake-gpt' needs a human's approval",
        expires_at=utcnow() + timedelta(seconds=timeout_s),
        request={"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]},
    )

    async def main() -> None:
        store = open_store(database_url)
        await store.open()
        try:
            await put_approval(store, record)
        finally:
            await store.close()

    asyncio.run(main())
    return record.id
