"""End to end with the real OpenClaw image: its LLM calls are forced through the gateway."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.conftest import OPENCLAW_IMAGE, labelled, require_image
from tests.e2e.conftest import Stack
from tests.e2e.helpers import container_of, runner_env, sse_events, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.openclaw]


def _tool_round_trip(api: httpx.Client, sid: str, word: str) -> None:
    """One turn in which the model calls a tool: the fake provider answers `TOOL:tool_call` with
    a call OpenClaw cannot validate (no `id`), OpenClaw sends that error back as the tool's
    result, and the model's second answer is the reply. OpenClaw 2026.9 offers its tools through
    tool search, so `tool_call` is offered even under the minimal profile."""
    calls_before = api.get(f"/v1/sessions/{sid}/spend").json()["totals"]["calls"]
    content = f"Check the status. TOOL:tool_call ECHO:{word}"
    reply = api.post(f"/v1/sessions/{sid}/messages", json={"content": content, "stream": False})
    assert reply.status_code == 200 and f"ECHO:{word}" in reply.json()["reply"], reply.text
    assert api.get(f"/v1/sessions/{sid}/spend").json()["totals"]["calls"] >= calls_before + 2
    kinds = [e["kind"] for e in api.get(f"/v1/sessions/{sid}/transcript").json()["entries"]]
    assert "tool_result" in kinds, kinds  # what OpenClaw sent back, seen by the gateway


def test_openclaw_runner_end_to_end(stack: Stack) -> None:
    require_image(stack.docker, OPENCLAW_IMAGE)
    api = stack.api
    created = api.post(
        "/v1/runners",
        json={"profile": "minimal", "sandbox": "hardened", "budget_usd": 1.0, "image": "openclaw"},
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    wait_ready(api, rid, timeout_s=240)

    env = runner_env(stack, rid)
    assert env["PADDOCK_GATEWAY_URL"].endswith("/v1")
    assert not any(k.endswith("_API_KEY") for k in env), "no provider key may enter a runner"
    assert container_of(stack, rid).attrs["HostConfig"]["ReadonlyRootfs"] is True

    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": 0.5}).json()["id"]
    with api.stream(
        "POST", f"/v1/sessions/{sid}/messages", json={"content": "Say hello. ECHO:openclaw42"}
    ) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events and events[-1][0] == "done", events
    reply = events[-1][1]["reply"]
    assert "ECHO:openclaw42" in reply  # the fake provider's answer, relayed by OpenClaw

    spend = api.get(f"/v1/sessions/{sid}/spend").json()
    assert spend["totals"]["calls"] >= 1
    assert spend["totals"]["cost_usd"] > 0
    # OpenClaw sends a large system prompt: the prompt side dominates the bill.
    assert spend["totals"]["prompt_tokens"] > 1000
    assert all(c["model"] == "fake-gpt" and c["stream"] for c in spend["calls"])
    _tool_round_trip(api, sid, "tool42")

    assert api.post(f"/v1/sessions/{sid}/close").json()["state"] == "closed"
    assert api.post(f"/v1/runners/{rid}/stop").json()["state"] == "stopped"

    events_log = api.get(f"/v1/runners/{rid}/events").json()["events"]
    types = [e["type"] for e in events_log]
    assert types[:4] == ["runner.created", "runner.state_changed", "session.opened",
                         "runner.state_changed"]
    # ... session closed, running -> ready, ready -> stopping, stopping -> stopped.
    assert types[-4:] == ["session.closed"] + ["runner.state_changed"] * 3
    assert "llm.call" in types and types.index("session.message") < types.index("llm.call")
    assert [e["seq"] for e in events_log] == sorted(e["seq"] for e in events_log)
    llm_event = events_log[types.index("llm.call")]
    assert "Say hello" not in str(llm_event["data"])  # no prompt text in the audit trail

    assert api.delete(f"/v1/runners/{rid}").status_code == 204
    assert labelled(stack.docker, stack.controlplane_id) == ([], [])


@pytest.mark.parametrize("model", ["fake-gpt", "fake-claude"])
def test_openclaw_runner_speaking_anthropic_messages(stack: Stack, model: str) -> None:
    """The same agent configured with OpenClaw's `anthropic-messages` API: its calls reach the
    gateway's Anthropic endpoint (x-api-key, /v1/messages), tool calls included, and are costed
    like any other, whether the model's provider speaks OpenAI (translated) or Anthropic."""
    require_image(stack.docker, OPENCLAW_IMAGE)
    api = stack.api
    created = api.post(
        "/v1/runners",
        json={"profile": "minimal", "image": "openclaw", "budget_usd": 1.0, "model": model,
              "api": "anthropic-messages"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.json()["api"] == "anthropic-messages"
    rid = created.json()["id"]
    wait_ready(api, rid, timeout_s=240)
    config = json.loads(base64.b64decode(runner_env(stack, rid)["PADDOCK_AGENT_CONFIG"]))
    assert config["models"]["providers"]["paddock"]["api"] == "anthropic-messages"

    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": 0.5}).json()["id"]
    reply = api.post(
        f"/v1/sessions/{sid}/messages", json={"content": "ECHO:anthropic42", "stream": False}
    )
    assert reply.status_code == 200, reply.text
    assert "ECHO:anthropic42" in reply.json()["reply"]
    _tool_round_trip(api, sid, "tool43")

    spend = api.get(f"/v1/sessions/{sid}/spend").json()
    assert spend["totals"]["calls"] >= 3 and spend["totals"]["cost_usd"] > 0
    assert spend["totals"]["prompt_tokens"] > 1000  # OpenClaw's system prompt, counted
    calls = [e["data"] for e in api.get(f"/v1/runners/{rid}/events").json()["events"]
             if e["type"] == "llm.call"]  # fmt: skip
    assert len(calls) == spend["totals"]["calls"]
    for call in calls:  # each on the audit trail, costed, from the Anthropic endpoint
        assert (call["endpoint"], call["model"], call["status"]) == ("messages", model, 200)
        assert call["cost_usd"] > 0 and call["prompt_tokens"] > 1000
        assert "anthropic42" not in str(call)  # no prompt text in the audit trail
    assert api.delete(f"/v1/runners/{rid}").status_code == 204


def test_openclaw_warm_pool_claim(make_stack: Callable[..., AbstractContextManager[Stack]]) -> None:
    """A pooled OpenClaw runner starts OpenClaw before any claim, holding no secret; the
    claim hands the token, agent token and model to its front and relay, in memory only."""
    with make_stack(pools={"openclaw/minimal/hardened": 1}, watch_interval_s=0.5) as stack:
        require_image(stack.docker, OPENCLAW_IMAGE)
        api = stack.api
        deadline = time.monotonic() + 300
        while api.get("/v1/pools").json()["pools"][0]["warm"] < 1:
            assert time.monotonic() < deadline, "no warm OpenClaw runner"
            time.sleep(0.5)
        # Pooled runners speak the default API: one created with another starts cold.
        other = api.post(
            "/v1/runners",
            json={"profile": "minimal", "image": "openclaw", "api": "anthropic-messages"},
        )
        assert other.status_code == 201 and other.json()["pool"] is None, other.text
        assert api.get("/v1/pools").json()["pools"][0]["warm"] == 1
        assert api.delete(f"/v1/runners/{other.json()['id']}").status_code == 204
        created = api.post(
            "/v1/runners", json={"profile": "minimal", "image": "openclaw", "budget_usd": 1.0}
        )
        assert created.status_code == 201 and created.json()["pool"], created.text
        rid = created.json()["id"]
        wait_ready(api, rid, timeout_s=60)
        env = runner_env(stack, rid)
        assert not [n for n in ("PADDOCK_RUNNER_TOKEN", "OPENCLAW_GATEWAY_TOKEN") if n in env]
        sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
        reply = api.post(
            f"/v1/sessions/{sid}/messages",
            json={"content": "Say hello. ECHO:pooled7", "stream": False},
            timeout=600,
        )
        assert reply.status_code == 200 and "ECHO:pooled7" in reply.json()["reply"], reply.text
        calls = api.get(f"/v1/sessions/{sid}/spend").json()["calls"]
        assert calls and {c["model"] for c in calls} == {"fake-gpt"}  # the claimed model
        assert api.delete(f"/v1/runners/{rid}").status_code == 204
