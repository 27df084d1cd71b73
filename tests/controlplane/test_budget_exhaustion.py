"""A session whose budget is spent ends: closed with reason `budget_exhausted`, its runner back
to ready (or stopped, as configured). Real control plane (fake backend), real gateway and
fake provider on loopback, one store; the "agent" is a loopback server that, like OpenClaw,
calls the gateway with its runner's token during a turn until it is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI, PermissionDeniedError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from gateway import create_gateway
from paddock.fake_provider import create_fake_provider
from tests.controlplane.conftest import ADMIN_KEY
from tests.controlplane.helpers import wait_for_state
from tests.gateway.conftest import fake_settings
from tests.gateway.harness import FAKE_PROVIDER_KEY, loopback_transport
from tests.support.servers import serve_app

_BUDGET = 0.0004  # fake-gpt: one short call fits, then not even a 16-token reply does


@dataclass
class Stack:
    api: httpx.Client
    backend: FakeBackend
    gateway_url: str

    def runner_token(self, runner_id: str) -> str:
        return self.backend.runners[runner_id].spec.env["PADDOCK_RUNNER_TOKEN"]


def _agent(backend: FakeBackend, gateway: list[str]) -> Starlette:
    """Answers a turn after calling the gateway as its runner until refused (at most 10)."""

    async def turn(request: Request) -> Response:
        presented = request.headers["authorization"].removeprefix("Bearer ")
        [runner] = [
            r for r in backend.runners.values() if r.spec.env["OPENCLAW_GATEWAY_TOKEN"] == presented
        ]
        token = runner.spec.env["PADDOCK_RUNNER_TOKEN"]
        calls = 0
        async with AsyncOpenAI(base_url=f"{gateway[0]}/v1", api_key=token, max_retries=0) as llm:
            for _ in range(10):
                try:
                    await llm.chat.completions.create(
                        model="fake-gpt", messages=[{"role": "user", "content": "hi"}]
                    )
                    calls += 1
                except PermissionDeniedError:
                    break
        chunk = {"choices": [{"index": 0, "delta": {"content": f"made {calls} calls"}}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", turn, methods=["POST"])])


def _stack(data_dir: Path, on_exhausted: str) -> Iterator[Stack]:
    settings = ControlPlaneSettings(
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        backend="fake",
        probe_interval_s=0.02,
        ready_timeout_s=5,
        watch_interval_s=0.05,
        on_budget_exhausted=on_exhausted,  # type: ignore[arg-type]
    )
    gateway: list[str] = []
    backend = FakeBackend(ready_after=0)
    with (
        serve_app(_agent(backend, gateway)) as agent_url,
        serve_app(create_fake_provider(api_key=FAKE_PROVIDER_KEY)) as provider_url,
    ):
        backend.agent_base_url = agent_url
        gw = fake_settings(settings.resolved_database_url(), provider_url)
        with (
            serve_app(create_gateway(gw, upstream_transport=loopback_transport())) as gateway_url,
            serve_app(create_app(settings, backend=backend)) as url,
        ):
            gateway.append(gateway_url)
            headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
            with httpx.Client(base_url=url, headers=headers, timeout=15) as api:
                yield Stack(api, backend, gateway_url)


@pytest.fixture
def stack(data_dir: Path) -> Iterator[Stack]:
    yield from _stack(data_dir, "ready")


@pytest.fixture
def stopping_stack(data_dir: Path) -> Iterator[Stack]:
    yield from _stack(data_dir, "stop")


def _running(api: httpx.Client) -> tuple[str, str]:
    rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(api, rid, {"ready"})
    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": _BUDGET}).json()["id"]
    return rid, sid


def test_a_turn_that_spends_the_budget_ends_the_session_and_frees_the_runner(
    stack: Stack,
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
    stopping_stack: Stack,
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
