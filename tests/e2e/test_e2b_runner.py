"""The whole path with `backend=e2b`, on the shipped fake E2B (the real `e2b` SDK over real HTTP;
a container as the microVM): API → sandbox → runner → E2B egress → gateway → provider.

Nothing reaches E2B: the SDK's URLs are the fake's and the VM's only way out is the fake's
egress, which knows the loopback gateway only.
"""

from __future__ import annotations

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
