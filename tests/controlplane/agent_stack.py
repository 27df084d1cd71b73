"""A real control plane (fake backend), a real gateway and the fake provider on loopback over
one store, with a scripted agent: a loopback server that, like OpenClaw, answers each turn after
calling the gateway with its runner's token (`turn` decides how)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from gateway import create_gateway
from paddock.fake_provider import create_fake_provider
from tests.controlplane.conftest import ADMIN_KEY
from tests.gateway.conftest import fake_settings
from tests.gateway.harness import FAKE_PROVIDER_KEY, loopback_transport
from tests.support.servers import serve_app

Turn = Callable[[AsyncOpenAI, str], Awaitable[str]]
"""(the agent's gateway client, the user's message) -> the agent's reply."""


@dataclass
class AgentStack:
    api: httpx.Client
    backend: FakeBackend
    gateway_url: str

    def runner_token(self, runner_id: str) -> str:
        return self.backend.runners[runner_id].spec.env["PADDOCK_RUNNER_TOKEN"]


def _agent(backend: FakeBackend, gateway: list[str], turn: Turn) -> Starlette:
    async def handle(request: Request) -> Response:
        presented = request.headers["authorization"].removeprefix("Bearer ")
        [runner] = [
            r for r in backend.runners.values() if r.spec.env["OPENCLAW_GATEWAY_TOKEN"] == presented
        ]
        said = (await request.json())["messages"][-1]["content"]
        token = runner.spec.env["PADDOCK_RUNNER_TOKEN"]
        async with AsyncOpenAI(base_url=f"{gateway[0]}/v1", api_key=token, max_retries=0) as llm:
            reply = await turn(llm, said)
        chunk = {"choices": [{"index": 0, "delta": {"content": reply}}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"])])


def run_agent_stack(
    data_dir: Path, turn: Turn, gateway_overrides: dict[str, Any] | None = None, **cp: Any
) -> Iterator[AgentStack]:
    settings = ControlPlaneSettings(
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        backend="fake",
        probe_interval_s=0.02,
        ready_timeout_s=5,
        watch_interval_s=0.05,
        **cp,
    )
    gateway: list[str] = []
    backend = FakeBackend(ready_after=0)
    with (
        serve_app(_agent(backend, gateway, turn)) as agent_url,
        serve_app(create_fake_provider(api_key=FAKE_PROVIDER_KEY)) as provider_url,
    ):
        backend.agent_base_url = agent_url
        gw = fake_settings(
            settings.resolved_database_url(), provider_url, **(gateway_overrides or {})
        )
        with (
            serve_app(create_gateway(gw, upstream_transport=loopback_transport())) as gateway_url,
            serve_app(create_app(settings, backend=backend)) as url,
        ):
            gateway.append(gateway_url)
            headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
            with httpx.Client(base_url=url, headers=headers, timeout=15) as api:
                yield AgentStack(api, backend, gateway_url)
