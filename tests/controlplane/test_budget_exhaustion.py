"""A session whose budget is spent ends: closed with reason `budget_exhausted`, its runner back
to ready (or stopped, as configured). Real control plane (fake backend), real gateway and
fake provider on loopback, one store; the "agent" is a loopback server that, like OpenClaw,
calls the gateway with its runner's token during a turn until it is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI, PermissionDeniedError

from tests.controlplane.agent_stack import AgentStack, run_agent_stack
from tests.controlplane.helpers import wait_for_state

_BUDGET = 0.0004  # fake-gpt: one short call fits, then not even a 16-token reply does


async def _spend_until_refused(llm: AsyncOpenAI, _said: str) -> str:
    """Calls the gateway until refused (at most 10 times), like an agent working a turn."""
    calls = 0
    for _ in range(10):
        try:
            await llm.chat.completions.create(
                model="fake-gpt", messages=[{"role": "user", "content": "hi"}]
            )
            calls += 1
        except PermissionDeniedError:
            break
    return f"made {calls} calls"


def _stack(data_dir: Path, on_exhausted: str) -> Iterator[AgentStack]:
    yield from run_agent_stack(data_dir, _spend_until_refused, on_budget_exhausted=on_exhausted)


@pytest.fixture
def stack(data_dir: Path) -> Iterator[AgentStack]:
    yield from _stack(data_dir, "ready")


@pytest.fixture
def stopping_stack(data_dir: Path) -> Iterator[AgentStack]:
    yield from _stack(data_dir, "stop")


def _running(api: httpx.Client) -> tuple[str, str]:
    rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(api, rid, {"ready"})
    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": _BUDGET}).json()["id"]
    return rid, sid


def test_a_turn_that_spends_the_budget_ends_the_session_and_frees_the_runner(
    stack: AgentStack,
) -> None:
    rid, sid = _running(stack.api)
    done = stack.api.post(f"/v1/sessions/{sid}/messages", json={"content": "go", "stream": False})
    assert done.status_code == 200, done.text
    assert done.json()["closed"] == "budget_exhausted"
    assert done.json()["reply"] == "made 1 calls"
    session = stack.api.get(f"/v1/sessions/{sid}").json()
    assert (session["state"], session["close_reason"]) == ("closed", "budget_exhausted")
    assert 0 < session["spent_usd"] <= _BUDGET
    assert stack.api.get(f"/v1/runners/{rid}").json()["state"] == "ready"
    # The runner can serve a new session right away.
    assert stack.api.post(f"/v1/runners/{rid}/sessions", json={}).status_code == 201


def test_spending_between_turns_is_noticed_and_stops_the_runner_when_configured(
    stopping_stack: AgentStack,
) -> None:
    s = stopping_stack
    rid, sid = _running(s.api)
    with OpenAI(
        base_url=f"{s.gateway_url}/v1", api_key=s.runner_token(rid), max_retries=0
    ) as llm:
        hi: list[Any] = [{"role": "user", "content": "hi"}]
        llm.chat.completions.create(model="fake-gpt", messages=hi)
        with pytest.raises(PermissionDeniedError):
            llm.chat.completions.create(model="fake-gpt", messages=hi)
    wait_for_state(s.api, rid, {"stopped"}, timeout_s=10)
    session = s.api.get(f"/v1/sessions/{sid}").json()
    assert (session["state"], session["close_reason"]) == ("closed", "budget_exhausted")
