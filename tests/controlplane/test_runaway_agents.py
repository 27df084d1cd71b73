"""Runaway agents stop themselves. A scripted agent (a loopback server answering each turn
after calling the real gateway with its runner's token) loops on one tool: the loop guard
stops it at the configured iteration, the session ends (`loop_detected`), and the audit trail
and a webhook receiver on loopback get the alert with its numbers. A fast spender crosses the
velocity limit long before its budget: its next call is held, an approval raised; approving
lets it through."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI, PermissionDeniedError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.controlplane.agent_stack import AgentStack, run_agent_stack
from tests.controlplane.helpers import wait_for_state
from tests.support.servers import serve_app

SECRET = "webhook-test-secret"
LOOKUP: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


async def _looping_turn(llm: AsyncOpenAI, said: str) -> str:
    """Runs the tool the model asks for and sends the result back, at most 20 times; the tool's
    output asks for the tool again, so only the loop guard ends it."""
    messages: list[Any] = [{"role": "user", "content": said}]
    for calls in range(20):
        try:
            reply = await llm.chat.completions.create(
                model="fake-gpt", messages=messages, tools=[LOOKUP], max_tokens=50
            )
        except PermissionDeniedError as exc:
            return f"stopped after {calls} calls: {exc.code}"  # type: ignore[attr-defined]
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls or ():
            out = "TOOL:lookup ECHO:again"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": out})
    return "never stopped"


class Receiver:
    """A webhook receiver on loopback: keeps each body with its signature."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, Any], str]] = []
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            raw = await request.body()
            expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
            with self.lock:
                self.got.append((json.loads(raw), request.headers.get("x-paddock-signature", "")))
            return Response(
                status_code=204 if request.headers.get("x-paddock-signature") == expected else 401
            )

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serve_app(r.app()) as url:
        yield r, f"{url}/hook"


@pytest.fixture
def stack(data_dir: Path) -> Iterator[AgentStack]:
    yield from run_agent_stack(
        data_dir, _looping_turn, gateway_overrides={"alert_webhook_secret": SECRET}
    )


def _set_policy(api: httpx.Client, steps: dict[str, Any]) -> None:
    org = api.get("/v1/me").json()["org_id"]
    done = api.put(f"/v1/orgs/{org}/policy", json={"steps": steps})
    assert done.status_code == 200, done.text


def _running(api: httpx.Client, budget_usd: float | None = None) -> tuple[str, str]:
    rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(api, rid, {"ready"})
    sid = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": budget_usd}).json()["id"]
    return rid, sid


def _wait_for(receiver: Receiver, kind: str) -> list[tuple[dict[str, Any], str]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with receiver.lock:
            found = [g for g in receiver.got if g[0]["type"] == kind]
        if found:
            return found
        time.sleep(0.02)
    pytest.fail(f"no {kind} webhook arrived; got {receiver.got}")


def test_a_looping_agent_is_stopped_and_its_session_ends(
    stack: AgentStack, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    _set_policy(
        stack.api,
        {
            "loop_guard": {
                "max_iterations": 3,
                "max_repeats": 50,
                "action": "end",
                "alert_webhook_url": url,
            }
        },
    )
    rid, sid = _running(stack.api)
    done = stack.api.post(
        f"/v1/sessions/{sid}/messages", json={"content": "TOOL:lookup ECHO:go", "stream": False}
    )
    assert done.status_code == 200, done.text
    # Calls with 0, 1, 2 and 3 tool turns behind them pass; the 4th tool turn is one too many.
    assert done.json()["reply"] == "stopped after 4 calls: loop_detected"
    assert done.json()["closed"] == "loop_detected"
    session = stack.api.get(f"/v1/sessions/{sid}").json()
    assert (session["state"], session["close_reason"]) == ("closed", "loop_detected")
    assert stack.api.get(f"/v1/runners/{rid}").json()["state"] == "ready"

    events = stack.api.get("/v1/audit", params={"session_id": sid}).json()["events"]
    [alert] = [e for e in events if e["type"] == "loop.alert"]
    assert alert["data"] == {
        "step": "loop_guard",
        "kind": "iterations",
        "iterations": 4,
        "limit": 3,
        "action": "end",
    }
    types = [e["type"] for e in events]
    assert types.index("loop.alert") < types.index("session.closed")
    assert "session.end_requested" in types
    [(body, signature)] = _wait_for(hook, "loop.alert")
    assert body["session_id"] == sid and body["iterations"] == 4 and body["limit"] == 3
    assert signature.startswith("sha256=")


def test_a_fast_spender_is_paused_for_approval_and_approving_resumes_it(
    stack: AgentStack, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    velocity = {
        "session_usd_per_min": 0.0001,
        "action": "pause",
        "pause_mode": "queue",
        "alert_webhook_url": url,
    }
    _set_policy(stack.api, {"spend_velocity": velocity})
    rid, sid = _running(stack.api, budget_usd=5.0)
    hi: Any = [{"role": "user", "content": "hi"}]
    with OpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key=stack.runner_token(rid), max_retries=0
    ) as llm:
        llm.chat.completions.create(model="fake-gpt", messages=hi)  # crosses $0.0001/min
        held = llm.chat.completions.with_raw_response.create(model="fake-gpt", messages=hi)
        assert held.status_code == 202
        approval = held.http_response.json()["approval"]
        assert approval["status"] == "pending"
        location = held.headers["location"]

    spent = stack.api.get(f"/v1/sessions/{sid}").json()["spent_usd"]
    assert 0 < spent < 0.001  # far below its $5 budget
    pending = stack.api.get("/v1/approvals", params={"status": "pending"}).json()
    assert [a["id"] for a in pending["approvals"]] == [approval["id"]]
    decided = stack.api.post(
        f"/v1/approvals/{approval['id']}/approve", json={"reason": "looked, fine"}
    )
    assert decided.status_code == 200, decided.text
    token = stack.runner_token(rid)
    result = httpx.get(
        f"{stack.gateway_url}{location}", headers={"authorization": f"Bearer {token}"}
    )
    assert result.status_code == 200, result.text
    assert result.json()["choices"][0]["message"]["content"]

    events = stack.api.get("/v1/audit", params={"session_id": sid}).json()["events"]
    [alert] = [e for e in events if e["type"] == "velocity.alert"]
    assert alert["data"]["scope"] == "session" and alert["data"]["usd_per_min"] == 0.0001
    assert alert["data"]["spent_usd"] >= 0.0001
    types = [e["type"] for e in events]
    assert types.count("llm.call") == 2 and "approval.approved" in types
    hook, _ = receiver
    [(body, _sig)] = _wait_for(hook, "velocity.alert")
    assert body["scope"] == "session"
