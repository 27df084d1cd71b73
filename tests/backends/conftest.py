"""Every `RunnerBackend`, behind one fixture, for the contract suite.

    docker  DockerBackend on the real engine (probe image, `hardened`), its host firewall on
    e2b     E2BBackend on the real `e2b` SDK against the shipped fake E2B (probe template,
            `microvm`): real HTTP, real envd protocol, a container as the VM
    fake    FakeBackend (in memory), where the contract means something for it

Runners boot against a stub gateway that answers `GET /v1/models` and records the key headers it
saw. Everything a test creates carries its control-plane id and is removed at teardown (the
id is printed when something had to be swept).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from controlplane.backends import RunnerBackend, RunnerSpec
from controlplane.backends.base import SupportsAgentTransport
from controlplane.backends.docker import DockerBackend
from controlplane.backends.e2b import RUNNER_COMMANDS, E2BBackend, E2BTemplate
from controlplane.backends.fake import FakeBackend
from paddock_core import Policies, load_policies, mint_token, new_id
from tests.backends.e2b_stack import GATEWAY_HOST, FakeE2BServer, serve_fake_e2b
from tests.conftest import PROBE_IMAGE, labelled, require_image
from tests.support.servers import serve_app

T = TypeVar("T")

READY_TIMEOUT_S = 60.0
_KEY_HEADERS = ("authorization", "x-api-key")


def run(body: Awaitable[T]) -> T:
    async def go() -> T:
        return await body

    return asyncio.run(go())


@dataclass
class StubGateway:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)
    """The key headers (Authorization, x-api-key) of every `GET /v1/models`."""


def _stub_gateway(seen: list[dict[str, str]]) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        seen.append({k: v for k, v in request.headers.items() if k in _KEY_HEADERS})
        return JSONResponse({"object": "list", "data": [{"id": "fake-gpt", "object": "model"}]})

    return Starlette(routes=[Route("/v1/models", models)])


def _stub_agent() -> Starlette:
    async def ok(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/readyz", ok), Route("/healthz", ok)])


@pytest.fixture(scope="session")
def policies() -> Policies:
    return load_policies(Path(__file__).resolve().parents[2] / "policies")


@pytest.fixture(scope="session")
def fake_e2b(docker_client: docker.DockerClient) -> Iterator[FakeE2BServer]:
    require_image(docker_client, PROBE_IMAGE)
    with serve_fake_e2b() as server:
        yield server


@pytest.fixture(scope="session")
def loopback_gateway(fake_e2b: FakeE2BServer) -> Iterator[StubGateway]:
    """For the fake E2B's VMs, which reach it through the fake's egress (from loopback)."""
    seen: list[dict[str, str]] = []
    with serve_app(_stub_gateway(seen)) as url, fake_e2b.route(GATEWAY_HOST, url):
        yield StubGateway(url, seen)


@pytest.fixture(scope="session")
def bridge_gateway() -> Iterator[StubGateway]:
    """For Docker runners, which reach the host at their bridge's address."""
    seen: list[dict[str, str]] = []
    with serve_app(_stub_gateway(seen), host="0.0.0.0") as url:
        yield StubGateway(url, seen)


@pytest.fixture(scope="session")
def stub_agent() -> Iterator[str]:
    with serve_app(_stub_agent()) as url:
        yield url


@dataclass
class Harness:
    """One implementation: how to open it for a control plane, and a spec it can run."""

    name: str
    open: Callable[[str], contextlib.AbstractAsyncContextManager[RunnerBackend]]
    sandbox: str
    image: str
    policies: Policies

    def spec(self, profile: str = "minimal", **env: str) -> RunnerSpec:
        runner_id = new_id("rn")
        base = {
            "PADDOCK_RUNNER_ID": runner_id,
            "PADDOCK_RUNNER_TOKEN": mint_token("prt"),
            "PADDOCK_MODEL": "fake-gpt",
            "OPENCLAW_GATEWAY_TOKEN": secrets.token_urlsafe(16),
        }
        return RunnerSpec(
            runner_id,
            "org_contract",
            self.image,
            self.policies.profile(profile),
            self.policies.sandbox_level(self.sandbox),
            {**base, **env},
        )


def agent_client(backend: RunnerBackend) -> httpx.AsyncClient:
    """How the control plane talks to agents: through the backend's transport when it has one."""
    if isinstance(backend, SupportsAgentTransport):
        return httpx.AsyncClient(transport=backend.agent_transport(), timeout=5)
    return httpx.AsyncClient(timeout=5)


async def wait_ready(backend: RunnerBackend, ref: dict[str, Any]) -> None:
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await backend.probe(ref)
        if last.state == "ready":
            return
        assert last.state == "starting", f"runner did not start: {last}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"runner not ready within {READY_TIMEOUT_S} s: {last}")


def _docker_harness(gateway: StubGateway, policies: Policies) -> Harness:
    port = int(gateway.url.rsplit(":", 1)[1])

    @contextlib.asynccontextmanager
    async def open_docker(controlplane_id: str) -> AsyncIterator[RunnerBackend]:
        backend = DockerBackend(
            controlplane_id=controlplane_id,
            gateway_port=port,
            nflog_group=None,
            kernel_log=None,
        )
        await backend.start()
        try:
            yield backend
        finally:
            await backend.close()

    return Harness("docker", open_docker, "hardened", PROBE_IMAGE, policies)


def _e2b_harness(fake: FakeE2BServer, policies: Policies, **options: Any) -> Harness:
    @contextlib.asynccontextmanager
    async def open_e2b(controlplane_id: str) -> AsyncIterator[RunnerBackend]:
        backend = e2b_backend(fake, controlplane_id, **options)
        try:
            yield backend
        finally:
            await backend.close()

    return Harness("e2b", open_e2b, "microvm", PROBE_IMAGE, policies)


def e2b_backend(fake: FakeE2BServer, controlplane_id: str, **options: Any) -> E2BBackend:
    settings: dict[str, Any] = {
        "controlplane_id": controlplane_id,
        "gateway_url": fake.gateway_url(),
        "templates": {PROBE_IMAGE: E2BTemplate("paddock-probe", RUNNER_COMMANDS["probe"])},
        "lease_s": 120,
        **fake.sdk_options(),
        **options,
    }
    return E2BBackend(**settings)


def _fake_harness(agent_url: str, policies: Policies) -> Harness:
    shared = FakeBackend(agent_base_url=agent_url, sandboxes=frozenset({"hardened"}))

    @contextlib.asynccontextmanager
    async def open_fake(_: str) -> AsyncIterator[RunnerBackend]:
        yield shared  # in memory: one instance is all there is

    return Harness("fake", open_fake, "hardened", "fake/image", policies)


@pytest.fixture
def controlplane_id(request: pytest.FixtureRequest) -> str:
    return f"contract-{os.getpid()}-{secrets.token_hex(3)}"


def _make(name: str, request: pytest.FixtureRequest, policies: Policies) -> Harness:
    if name == "docker":
        client: docker.DockerClient = request.getfixturevalue("docker_client")
        require_image(client, PROBE_IMAGE)
        return _docker_harness(request.getfixturevalue("bridge_gateway"), policies)
    if name == "e2b":
        request.getfixturevalue("loopback_gateway")
        return _e2b_harness(request.getfixturevalue("fake_e2b"), policies)
    return _fake_harness(request.getfixturevalue("stub_agent"), policies)


def _sweep(name: str, request: pytest.FixtureRequest, controlplane_id: str) -> None:
    """Remove what a test's control plane left, Docker's or the fake E2B's, and name it."""
    if name == "docker":
        client: docker.DockerClient = request.getfixturevalue("docker_client")
        containers, networks = labelled(client, controlplane_id)
        filters: dict[str, Any] = {"label": [f"io.paddock.controlplane-id={controlplane_id}"]}
        for c in client.containers.list(all=True, filters=filters):
            c.remove(force=True)
        for n in client.networks.list(filters=filters):
            n.remove()
        if containers or networks:
            print(f"swept docker leftovers of {controlplane_id}: {containers} {networks}")
    elif name == "e2b":
        server: FakeE2BServer = request.getfixturevalue("fake_e2b")
        if left := server.kill_all(controlplane_id):
            print(f"swept fake E2B sandboxes of {controlplane_id}: {left}")


def _harness(
    request: pytest.FixtureRequest, policies: Policies, controlplane_id: str
) -> Iterator[Harness]:
    name = str(request.param)
    harness = _make(name, request, policies)
    yield harness
    _sweep(name, request, controlplane_id)


@pytest.fixture(params=["docker", "e2b", "fake"])
def harness(
    request: pytest.FixtureRequest, policies: Policies, controlplane_id: str
) -> Iterator[Harness]:
    """Every implementation."""
    yield from _harness(request, policies, controlplane_id)


@pytest.fixture(params=["docker", "e2b", "fake"])
def stoppable(
    request: pytest.FixtureRequest, policies: Policies, controlplane_id: str
) -> Iterator[Harness]:
    yield from _harness(request, policies, controlplane_id)


@pytest.fixture(params=["docker", "e2b"])
def durable(
    request: pytest.FixtureRequest, policies: Policies, controlplane_id: str
) -> Iterator[Harness]:
    """Implementations whose runners outlive the backend object and carry labels/metadata."""
    yield from _harness(request, policies, controlplane_id)
