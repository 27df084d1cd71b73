"""What only the E2B backend does, against the shipped fake E2B with the real SDK: metadata,
leases, rate limits, vanishing sandboxes, SDK errors, the confinement it can and cannot hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, Template
from e2b.sandbox.sandbox_api import SandboxNetworkUpdate

from controlplane.backends import LABEL_CONTROLPLANE, LABEL_MANAGED, LABEL_ORG, LABEL_RUNNER
from controlplane.backends.e2b import RUNNER_COMMANDS, E2BBackend, E2BTemplate
from controlplane.backends.e2b_policy import TOKEN_PLACEHOLDER
from paddock.fake_e2b import FakeTemplate
from paddock_core import BackendError, Policies
from tests.backends.conftest import (
    Harness,
    StubGateway,
    _e2b_harness,
    agent_client,
    e2b_backend,
    run,
    wait_ready,
)
from tests.backends.e2b_stack import FAKE_KEY, E2BStack, FakeE2BServer, run_e2b_stack, wait_state
from tests.conftest import PROBE_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture
def e2b(
    fake_e2b: FakeE2BServer,
    loopback_gateway: StubGateway,
    policies: Policies,
    controlplane_id: str,
) -> Iterator[Harness]:
    yield _e2b_harness(fake_e2b, policies)
    fake_e2b.knob("reset")
    if left := fake_e2b.kill_all(controlplane_id):
        print(f"swept fake E2B sandboxes of {controlplane_id}: {left}")


@pytest.fixture
def stack(fake_e2b: FakeE2BServer, data_dir: Path, controlplane_id: str) -> Iterator[E2BStack]:
    with run_e2b_stack(data_dir, controlplane_id, fake_e2b) as s:
        yield s


def _sandbox_of(fake: FakeE2BServer, runner_id: str) -> str:
    return next(
        s.sandbox_id
        for s in fake.fake.sandboxes.values()
        if s.metadata.get(LABEL_RUNNER) == runner_id
    )


def test_metadata_lets_a_restarted_plane_re_adopt_its_sandboxes(
    e2b: Harness, fake_e2b: FakeE2BServer, controlplane_id: str
) -> None:
    async def body() -> None:
        spec = e2b.spec()
        async with e2b.open(controlplane_id) as first:
            ref = await first.provision(spec)
        sandbox = fake_e2b.fake.sandboxes[ref["sandbox_id"]]
        assert sandbox.metadata == {
            LABEL_MANAGED: "true",
            LABEL_RUNNER: spec.runner_id,
            LABEL_CONTROLPLANE: controlplane_id,
            LABEL_ORG: spec.org_id,
        }
        async with e2b.open(controlplane_id) as second:  # knows nothing but what E2B says
            [seen] = await second.list_runners()
            assert (seen.runner_id, seen.controlplane_id, seen.status) == (
                spec.runner_id,
                controlplane_id,
                "running",
            )
            await wait_ready(second, ref)
            await second.destroy(spec.runner_id)
            assert await second.list_runners() == []

    run(body())


def test_leases_are_renewed_while_the_plane_watches_and_expire_without_it(
    fake_e2b: FakeE2BServer, loopback_gateway: StubGateway, policies: Policies, controlplane_id: str
) -> None:
    """A sandbox lives `lease_s` past its last renewal; `list_runners` (the watch) renews it.
    The sandbox of a plane that stopped watching dies by itself."""
    watched = _e2b_harness(fake_e2b, policies, lease_s=5)
    orphaned = _e2b_harness(fake_e2b, policies, lease_s=5)

    async def body() -> None:
        async with orphaned.open(f"{controlplane_id}-dead") as dead:
            lost = await dead.provision(orphaned.spec())
        async with watched.open(controlplane_id) as plane:
            started = time.monotonic()
            kept = await plane.provision(watched.spec())
            first_end = fake_e2b.fake.sandboxes[kept["sandbox_id"]].end_at
            while time.monotonic() < started + 15:  # the lost one dies ~5 s after its create
                await plane.list_runners()
                alive = fake_e2b.fake.sandboxes.get(kept["sandbox_id"])
                assert alive is not None, "the watched sandbox expired although it was renewed"
                renewed = alive.timeouts_set
                gone = lost["sandbox_id"] not in fake_e2b.fake.sandboxes
                if renewed >= 2 and gone and time.time() > first_end:
                    break
                await asyncio.sleep(0.3)
            assert time.time() > first_end  # the kept one outlived the lease it began with
            assert kept["sandbox_id"] in fake_e2b.fake.sandboxes
            assert fake_e2b.fake.sandboxes[kept["sandbox_id"]].timeouts_set >= 2
            assert lost["sandbox_id"] not in fake_e2b.fake.sandboxes  # its lease ran out
            assert (await plane.probe(lost)).state == "missing"
            await plane.stop(kept)

    run(body())


def test_rate_limited_creates_back_off_then_succeed(
    e2b: Harness,
    fake_e2b: FakeE2BServer,
    controlplane_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_e2b.knob("refuse-creates", count=2, message="Rate limit exceeded for sandbox creates")
    refused_before = fake_e2b.fake.stats["refused_creates"]
    backend = e2b_backend(fake_e2b, controlplane_id, backoff_s=0.2)

    async def body() -> None:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, "controlplane.backends.e2b"):
            ref = await backend.provision(e2b.spec())
        assert time.monotonic() - started >= 0.15  # it waited before retrying
        await wait_ready(backend, ref)
        await backend.stop(ref)
        await backend.close()

    run(body())
    assert fake_e2b.fake.stats["refused_creates"] - refused_before == 2
    retries = [r.getMessage() for r in caplog.records if "rate-limited" in r.getMessage()]
    assert len(retries) == 2 and "attempt 1/5" in retries[0]


@pytest.mark.parametrize("limit", ["creates", "concurrent"])
def test_exhausted_rate_limits_are_surfaced_clearly(
    e2b: Harness, fake_e2b: FakeE2BServer, controlplane_id: str, limit: str
) -> None:
    before = set(fake_e2b.fake.sandboxes)
    if limit == "creates":
        fake_e2b.knob("refuse-creates", count=10)
    backend = e2b_backend(fake_e2b, controlplane_id, create_attempts=3, backoff_s=0.05)
    concurrent = fake_e2b.fake.config.max_concurrent
    if limit == "concurrent":
        fake_e2b.fake.config.max_concurrent = 0

    async def body() -> None:
        try:
            with pytest.raises(BackendError) as caught:
                await backend.provision(e2b.spec())
        finally:
            fake_e2b.fake.config.max_concurrent = concurrent
            await backend.close()
        assert caught.value.details["reason"] == "e2b_rate_limited"
        assert "after 3 attempts" in caught.value.message
        if limit == "concurrent":
            assert "maximum number of concurrent E2B sandboxes" in caught.value.message

    run(body())
    assert set(fake_e2b.fake.sandboxes) == before


def test_a_vanished_sandbox_fails_its_runner_with_a_reason(stack: E2BStack) -> None:
    api = stack.api
    created = api.post(
        "/v1/runners", json={"profile": "minimal", "sandbox": "microvm", "image": "probe"}
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    wait_state(api, rid, "ready")
    stack.fake.knob(f"sandboxes/{_sandbox_of(stack.fake, rid)}/vanish")
    runner = wait_state(api, rid, "failed", timeout_s=20)
    assert runner["failure"]["code"] == "container_vanished"
    assert "gone" in runner["failure"]["message"]
    assert api.delete(f"/v1/runners/{rid}").status_code == 204


def test_an_exiting_runner_process_is_reported_with_its_output(
    e2b: Harness, controlplane_id: str
) -> None:
    async def body() -> None:
        async with e2b.open(controlplane_id) as backend:
            spec = e2b.spec(OPENCLAW_GATEWAY_TOKEN="")  # the runner refuses to start (exit 2)
            ref = await backend.provision(spec)
            result = await backend.probe(ref)
            deadline = time.monotonic() + 20
            while result.state == "starting" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                result = await backend.probe(ref)
            assert (result.state, result.exit_code) == ("exited", 2)
            assert "missing required env: OPENCLAW_GATEWAY_TOKEN" in result.detail
            assert [o.status for o in await backend.list_runners()] == ["exited"]
            await backend.destroy(spec.runner_id)

    run(body())


def test_sdk_auth_errors_become_backend_errors_with_a_reason(
    e2b: Harness, fake_e2b: FakeE2BServer, controlplane_id: str
) -> None:
    backend = e2b_backend(fake_e2b, controlplane_id, api_key="e2b_wrong_key")

    async def body() -> None:
        for call in (backend.provision(e2b.spec()), backend.list_runners()):
            with pytest.raises(BackendError) as caught:
                await call
            assert caught.value.details["reason"] == "e2b_auth"
            assert "PADDOCK_E2B_API_KEY" in caught.value.message
        await backend.close()

    run(body())


def test_the_gateway_token_stays_outside_the_vm(
    e2b: Harness, fake_e2b: FakeE2BServer, loopback_gateway: StubGateway, controlplane_id: str
) -> None:
    """E2B's per-host header rule carries the runner token: the VM sees a placeholder, the
    gateway the real token, in both key headers it accepts (Bearer, and x-api-key for
    Anthropic-style clients)."""

    async def body() -> None:
        async with e2b.open(controlplane_id) as backend:
            spec = e2b.spec()
            token = spec.env["PADDOCK_RUNNER_TOKEN"]
            ref = await backend.provision(spec)
            await wait_ready(backend, ref)
            sandbox = fake_e2b.fake.sandboxes[ref["sandbox_id"]]
            [runner] = [p for p in sandbox.processes.values() if p.exit_code is None]
            assert runner.envs["PADDOCK_RUNNER_TOKEN"] == TOKEN_PLACEHOLDER
            assert not any(token in value for value in runner.envs.values())
            assert {"authorization": f"Bearer {token}", "x-api-key": token} in loopback_gateway.seen
            assert sandbox.network["allowOut"] == ["gateway.paddock.test"]
            assert sandbox.network["denyOut"] == ["0.0.0.0/0"]
            assert sandbox.network["allowPublicTraffic"] is False
            await backend.destroy(spec.runner_id)

    run(body())


def test_sandbox_ports_need_the_traffic_token(
    e2b: Harness, fake_e2b: FakeE2BServer, controlplane_id: str
) -> None:
    async def body() -> None:
        async with e2b.open(controlplane_id) as backend:
            ref = await backend.provision(e2b.spec())
            await wait_ready(backend, ref)
            routing = {"E2b-Sandbox-Id": ref["sandbox_id"], "E2b-Sandbox-Port": "18789"}
            async with httpx.AsyncClient() as plain:
                bare = await plain.get(f"{fake_e2b.url}/readyz", headers=routing)
            assert bare.status_code == 403 and "traffic access token" in bare.text
            async with agent_client(backend) as http:
                assert (await http.get(f"{backend.agent_url(ref)}/readyz")).status_code == 200
            await backend.stop(ref)

    run(body())


def test_pause_and_resume(e2b: Harness, fake_e2b: FakeE2BServer, controlplane_id: str) -> None:
    async def body() -> None:
        async with e2b.open(controlplane_id) as backend:
            assert isinstance(backend, E2BBackend) and backend.capabilities.pause
            ref = await backend.provision(e2b.spec())
            await wait_ready(backend, ref)
            await backend.pause(ref)
            paused = await backend.probe(ref)
            assert (paused.state, paused.reason) == ("exited", "sandbox_paused")
            assert [o.status for o in await backend.list_runners()] == ["paused"]
            await backend.resume(ref)
            await wait_ready(backend, ref)
            # What a warm pool would use to fence a pre-created sandbox on assignment.
            fence: SandboxNetworkUpdate = {"allow_out": ["x.test"], "deny_out": ["0.0.0.0/0"]}
            await AsyncSandbox.update_network(ref["sandbox_id"], fence, **fake_e2b.sdk_options())
            assert fake_e2b.fake.sandboxes[ref["sandbox_id"]].network["allowOut"] == ["x.test"]
            await backend.stop(ref)

    run(body())


def test_what_e2b_cannot_honour_is_refused_before_anything_is_created(
    e2b: Harness, fake_e2b: FakeE2BServer, controlplane_id: str, policies: Policies
) -> None:
    creates = fake_e2b.fake.stats["creates"]

    async def body() -> None:
        async with e2b.open(controlplane_id) as backend:
            caps = backend.capabilities
            assert caps.sandboxes == frozenset({"microvm"})
            assert caps.refusal(policies.profile("minimal"), "hardened")
            assert caps.refusal(policies.profile("standard"), "microvm")  # no egress proxy
            assert caps.refusal(policies.profile("minimal"), "microvm") is None
            with pytest.raises(BackendError) as caught:
                await backend.provision(e2b.spec("standard"))
            assert caught.value.details["reason"] == "unsupported_profile"
            assert "PADDOCK_E2B_EGRESS_PROXY_URL" in caught.value.message

    run(body())
    assert fake_e2b.fake.stats["creates"] == creates


def test_a_template_bigger_than_the_profile_is_refused(
    e2b: Harness, fake_e2b: FakeE2BServer, controlplane_id: str
) -> None:
    fake_e2b.fake.config.templates["paddock-big"] = FakeTemplate(PROBE_IMAGE, 4, 8192)
    templates = {PROBE_IMAGE: E2BTemplate("paddock-big", RUNNER_COMMANDS["probe"])}
    backend = e2b_backend(fake_e2b, controlplane_id, templates=templates)

    async def body() -> None:
        with pytest.raises(BackendError) as caught:
            await backend.provision(e2b.spec())
        assert caught.value.details.get("reason") == "unsupported_profile", caught.value.message
        assert "exceeds profile 'minimal'" in caught.value.message
        assert await backend.list_runners() == []  # the sandbox was killed again
        await backend.close()

    run(body())


def test_the_api_answers_4xx_for_what_e2b_cannot_honour(stack: E2BStack) -> None:
    api = stack.api
    docker_level = api.post(
        "/v1/runners", json={"profile": "minimal", "sandbox": "hardened", "image": "probe"}
    )
    assert docker_level.status_code == 422
    assert "not available on the e2b backend" in docker_level.json()["error"]["message"]


def test_a_profile_e2b_cannot_enforce_is_a_4xx(stack: E2BStack) -> None:
    response = stack.api.post(
        "/v1/runners", json={"profile": "standard", "sandbox": "microvm", "image": "probe"}
    )
    with contextlib.suppress(Exception):
        if response.status_code == 201:
            stack.api.delete(f"/v1/runners/{response.json()['id']}")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "profile"
    assert "cannot enforce" in response.json()["error"]["message"]


def test_the_fake_refuses_a_wrong_api_key_like_e2b(fake_e2b: FakeE2BServer) -> None:
    response = httpx.get(f"{fake_e2b.url}/v2/sandboxes", headers={"X-API-KEY": "nope"})
    assert response.status_code == 401
    assert response.json()["code"] == 401
    ok = httpx.get(f"{fake_e2b.url}/v2/sandboxes", headers={"X-API-KEY": FAKE_KEY})
    assert ok.status_code == 200


def test_the_e2b_template_definition_parses_with_the_sdk(tmp_path: Path) -> None:
    """Offline: E2B's own parser reads runner_images/e2b/e2b.Dockerfile as E2B's builder will."""
    definition = Path(__file__).resolve().parents[2] / "runner_images" / "e2b" / "e2b.Dockerfile"
    template = Template(file_context_path=tmp_path).from_dockerfile(str(definition))
    steps = Template.to_dockerfile(template)
    assert "COPY runtime/ /usr/local/" in steps
    assert "COPY entrypoint.mjs /opt/paddock/entrypoint.mjs" in steps
    assert "/opt/paddock/entrypoint.mjs" in RUNNER_COMMANDS["openclaw"]
    assert steps.rstrip().endswith("USER agent")
    assert "ENTRYPOINT" not in steps and "sudo" not in steps  # started per sandbox, no root
