"""The whole path on real Docker with the small probe image: API → runner → gateway → provider."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import PROBE_IMAGE, labelled, require_image
from tests.e2e.conftest import Stack
from tests.e2e.helpers import container_of, runner_env, sse_events, wait_ready

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def _probe_image(stack: Stack) -> None:
    require_image(stack.docker, PROBE_IMAGE)


def test_round_trip_spend_audit_and_cleanup(stack: Stack) -> None:
    api = stack.api
    created = api.post(
        "/v1/runners",
        json={"profile": "minimal", "sandbox": "hardened", "budget_usd": 1.0, "image": "probe"},
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    wait_ready(api, rid, timeout_s=60)

    # The container is confined as the profile says.
    attrs = container_of(stack, rid).attrs
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Runtime"] == "runc"
    assert attrs["Config"]["User"] == "10001:10001"
    network = stack.docker.networks.get(f"paddock-{rid}")
    assert network.attrs["Internal"] is True
    env = runner_env(stack, rid)
    assert not any(k.endswith("_API_KEY") for k in env), "no provider key may enter a runner"

    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": 0.25}).json()["id"]
    assert api.get(f"/v1/runners/{rid}").json()["state"] == "running"

    # JSON reply.
    reply = api.post(
        f"/v1/sessions/{sid}/messages",
        json={"content": "Say hi. ECHO:json123"},
        headers={"Accept": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    assert "ECHO:json123" in reply.json()["reply"]
    assert reply.json()["spent_usd"] > 0

    # Streamed reply (SSE, the default).
    with api.stream("POST", f"/v1/sessions/{sid}/messages", json={"content": "ECHO:sse456"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    kinds = [k for k, _ in events]
    assert kinds.count("delta") >= 2 and kinds[-1] == "done"
    assert "".join(d["text"] for k, d in events if k == "delta") == events[-1][1]["reply"]
    assert "ECHO:sse456" in events[-1][1]["reply"]

    spend = api.get(f"/v1/sessions/{sid}/spend").json()
    assert spend["totals"]["calls"] == 2
    assert spend["totals"]["cost_usd"] > 0
    assert spend["totals"]["prompt_tokens"] > 0 and spend["totals"]["completion_tokens"] > 0
    assert spend["totals"]["remaining_usd"] == pytest.approx(0.25 - spend["totals"]["cost_usd"])
    assert {c["model"] for c in spend["calls"]} == {"fake-gpt"}
    assert all(c["status"] == 200 and c["latency_ms"] > 0 for c in spend["calls"])

    assert api.post(f"/v1/sessions/{sid}/close").json()["state"] == "closed"
    assert api.get(f"/v1/runners/{rid}").json()["state"] == "ready"
    assert api.post(f"/v1/runners/{rid}/stop").json()["state"] == "stopped"
    assert container_of(stack, rid).status == "exited"

    types = [e["type"] for e in api.get(f"/v1/runners/{rid}/events").json()["events"]]
    assert types == [
        "runner.created",
        "runner.state_changed",
        "session.opened",
        "runner.state_changed",
        "session.message",
        "llm.call",
        "session.reply",
        "session.message",
        "llm.call",
        "session.reply",
        "session.closed",
        "runner.state_changed",  # running -> ready
        "runner.state_changed",  # ready -> stopping
        "runner.state_changed",  # stopping -> stopped
    ]

    assert api.delete(f"/v1/runners/{rid}").status_code == 204
    assert api.get(f"/v1/runners/{rid}").status_code == 404
    assert labelled(stack.docker, stack.controlplane_id) == ([], [])


def test_gvisor_runner(stack: Stack) -> None:
    api = stack.api
    rid = api.post(
        "/v1/runners", json={"profile": "minimal", "sandbox": "gvisor", "image": "probe"}
    ).json()["id"]
    wait_ready(api, rid, timeout_s=90)
    assert container_of(stack, rid).attrs["HostConfig"]["Runtime"] == "runsc"
    sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    reply = api.post(f"/v1/sessions/{sid}/messages", json={"content": "ECHO:gv", "stream": False})
    assert reply.status_code == 200 and "ECHO:gv" in reply.json()["reply"]
    assert api.delete(f"/v1/runners/{rid}").status_code == 204
    assert labelled(stack.docker, stack.controlplane_id) == ([], [])


def test_runner_token_works_only_from_its_runner(stack: Stack) -> None:
    """Even while its runner lives, the token is refused from the host: it is bound to the
    runner's address. (tests/security: it works from inside while live, and dies on stop.)"""
    api = stack.api
    rid = api.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()["id"]
    wait_ready(api, rid, timeout_s=60)
    token = runner_env(stack, rid)["PADDOCK_RUNNER_TOKEN"]
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="another address"):
        client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "ECHO:tok"}]
        )
    api.delete(f"/v1/runners/{rid}")


def test_spent_session_budget_is_refused(stack: Stack) -> None:
    api = stack.api
    rid = api.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()["id"]
    wait_ready(api, rid, timeout_s=60)
    # fake-gpt: the first short call fits $0.0003 (reserved with its output capped at what the
    # budget pays); after it, not even a 16-token reply does, so the next call is refused.
    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": 0.0003}).json()["id"]
    first = api.post(f"/v1/sessions/{sid}/messages", json={"content": "ECHO:a", "stream": False})
    assert first.status_code == 200, first.text
    second = api.post(f"/v1/sessions/{sid}/messages", json={"content": "ECHO:b", "stream": False})
    assert second.status_code == 502
    assert "budget" in second.json()["error"]["message"]
    calls = api.get(f"/v1/sessions/{sid}/spend").json()["calls"]
    assert [c["status"] for c in calls] == [200]  # the refused call never reached the provider
    assert api.get(f"/v1/sessions/{sid}").json()["spent_usd"] <= 0.0003
    api.delete(f"/v1/runners/{rid}")


def test_missing_image_fails_with_reason(
    make_stack: Callable[..., contextlib.AbstractContextManager[Stack]],
) -> None:
    with make_stack(images={"probe": "paddock/no-such-image:latest"}) as stack:
        api = stack.api
        rid = api.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()["id"]
        deadline = time.monotonic() + 30
        runner = api.get(f"/v1/runners/{rid}").json()
        while runner["state"] == "provisioning" and time.monotonic() < deadline:
            time.sleep(0.05)
            runner = api.get(f"/v1/runners/{rid}").json()
        assert runner["state"] == "failed"
        assert runner["failure"]["code"] == "image_missing"
        assert api.delete(f"/v1/runners/{rid}").status_code == 204
        assert labelled(stack.docker, stack.controlplane_id) == ([], [])


def test_message_to_a_stopped_runner_is_409(stack: Stack) -> None:
    api = stack.api
    rid = api.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()["id"]
    wait_ready(api, rid, timeout_s=60)
    sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    api.post(f"/v1/runners/{rid}/stop")
    response = api.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    api.delete(f"/v1/runners/{rid}")
    assert httpx.get(f"{stack.gateway_url}/healthz").status_code == 200
