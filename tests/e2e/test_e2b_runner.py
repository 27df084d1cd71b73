"""The whole path with `backend=e2b`, on the shipped fake E2B (the real `e2b` SDK over real HTTP;
a container as the microVM): API → sandbox → runner → E2B egress → gateway → provider.

Nothing reaches E2B: the SDK's URLs are the fake's and the VM's only way out is the fake's
egress, which knows the loopback gateway only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from controlplane.backends import LABEL_CONTROLPLANE
from controlplane.backends.e2b_policy import TOKEN_PLACEHOLDER
from tests.backends.e2b_stack import (
    E2BStack,
    FakeE2BServer,
    run_e2b_stack,
    serve_fake_e2b,
    wait_state,
)
from tests.conftest import PROBE_IMAGE, require_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def fake_e2b(docker_client: docker.DockerClient) -> Iterator[FakeE2BServer]:
    require_image(docker_client, PROBE_IMAGE)
    with serve_fake_e2b() as server:
        yield server


@pytest.fixture
def stack(fake_e2b: FakeE2BServer, data_dir: Path, controlplane_id: str) -> Iterator[E2BStack]:
    with run_e2b_stack(data_dir, controlplane_id, fake_e2b) as s:
        yield s


def _sandboxes(stack: E2BStack) -> list[str]:
    return [
        s.sandbox_id
        for s in stack.fake.fake.sandboxes.values()
        if s.metadata.get(LABEL_CONTROLPLANE) == stack.controlplane_id
    ]


def test_create_ready_session_message_spend_stop_delete(stack: E2BStack) -> None:
    api = stack.api
    created = api.post(
        "/v1/runners",
        json={"profile": "minimal", "sandbox": "microvm", "budget_usd": 1.0, "image": "probe"},
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert created.json()["backend"] == "e2b"
    wait_state(api, rid, "ready", timeout_s=60)

    [sandbox_id] = _sandboxes(stack)
    sandbox = stack.fake.fake.sandboxes[sandbox_id]
    assert sandbox.template_id == "paddock-probe"
    assert sandbox.network["allowOut"] == ["gateway.paddock.test"]
    [process] = [p for p in sandbox.processes.values() if p.exit_code is None]
    assert process.envs["PADDOCK_RUNNER_TOKEN"] == TOKEN_PLACEHOLDER  # the real one stays out
    assert not any(k.endswith("_API_KEY") for k in process.envs)

    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": 0.25}).json()["id"]
    assert api.get(f"/v1/runners/{rid}").json()["state"] == "running"
    reply = api.post(
        f"/v1/sessions/{sid}/messages",
        json={"content": "Say hi. ECHO:e2b42"},
        headers={"Accept": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    assert "ECHO:e2b42" in reply.json()["reply"]

    spend = api.get(f"/v1/sessions/{sid}/spend").json()
    assert spend["totals"]["calls"] == 1
    assert spend["totals"]["cost_usd"] > 0
    assert {c["model"] for c in spend["calls"]} == {"fake-gpt"}

    assert api.post(f"/v1/runners/{rid}/stop").json()["state"] == "stopped"
    assert _sandboxes(stack) == []  # stopping kills the VM
    assert api.delete(f"/v1/runners/{rid}").status_code == 204
    assert api.get(f"/v1/runners/{rid}").status_code == 404
    types = [e["type"] for e in api.get(f"/v1/runners/{rid}/events").json()["events"]]
    assert types[0] == "runner.created" and "llm.call" in types and types[-1] == "runner.deleted"


def test_a_warm_pool_on_e2b_is_claimed_with_no_secret_in_the_pooled_vm(
    fake_e2b: FakeE2BServer, data_dir: Path, controlplane_id: str
) -> None:
    """A pooled sandbox starts holding no runner secret and no token rule; a claim replaces its
    network rules (the claimed token injected by E2B) and hands the agent its environment, and
    the claimed runner talks to the gateway like any other. Then nothing is left behind."""
    pools = {"probe/minimal/microvm": 1}
    with run_e2b_stack(data_dir, controlplane_id, fake_e2b, pools=pools) as stack:
        api = stack.api
        deadline = time.monotonic() + 90
        while api.get("/v1/pools").json()["pools"][0]["warm"] < 1:
            assert time.monotonic() < deadline, "no warm E2B runner"
            time.sleep(0.2)
        [pooled_id] = _sandboxes(stack)
        pooled = stack.fake.fake.sandboxes[pooled_id]
        assert "rules" not in pooled.network or not pooled.network["rules"]  # no token yet
        [process] = [p for p in pooled.processes.values() if p.exit_code is None]
        assert "PADDOCK_RUNNER_TOKEN" not in process.envs and process.envs["PADDOCK_CLAIM_SECRET"]

        created = api.post(
            "/v1/runners",
            json={"profile": "minimal", "sandbox": "microvm", "image": "probe", "budget_usd": 1},
        )
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        assert created.json()["pool"] == "probe/minimal/microvm"
        wait_state(api, rid, "ready", timeout_s=60)
        assert pooled.sandbox_id in _sandboxes(stack)  # the same VM, claimed
        rules = pooled.network["rules"]["gateway.paddock.test"]
        assert rules[0]["transform"]["headers"]["Authorization"].startswith("Bearer prt_")

        sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": 0.25}).json()["id"]
        reply = api.post(
            f"/v1/sessions/{sid}/messages",
            json={"content": "ECHO:pooled-e2b"},
            headers={"Accept": "application/json"},
        )
        assert reply.status_code == 200, reply.text
        assert "ECHO:pooled-e2b" in reply.json()["reply"]
        assert api.get(f"/v1/sessions/{sid}/spend").json()["totals"]["calls"] == 1

        assert api.delete(f"/v1/runners/{rid}").status_code == 204
        assert pooled.sandbox_id not in _sandboxes(stack)
