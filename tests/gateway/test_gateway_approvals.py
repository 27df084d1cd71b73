"""Step 15, human approval, end to end: a real control plane and a real gateway over one store,
woken through real Redis, the real fake provider, and the unmodified OpenAI SDK as the agent.

Each test makes its own org through the control plane (platform admin), with an operator (who
decides), a viewer and a gateway key (the agent), and sets the org's approval settings in its
`org_gateway` record (read fresh on every call: the test gateway's org settings TTL is 0).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis
from openai import OpenAI
from openai.types.chat import ChatCompletion

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from gateway import create_gateway
from paddock_core import OrgGatewayRecord
from tests.gateway.conftest import fake_settings
from tests.gateway.harness import ADMIN_KEY, Records, loopback_transport
from tests.support.servers import serve_app

REDIS_URL = "redis://127.0.0.1:6379/15"
WAIT_S = 15.0


@dataclass(frozen=True)
class Stack:
    gateway: str
    controlplane: str


@pytest.fixture(scope="module")
def stack(database_url: str, fake_provider_url: str) -> Iterator[Stack]:
    """Both servers with their own Redis notifiers: a decision taken in the control plane wakes
    the gateway's held call across them, as across processes."""
    probe = redis.Redis.from_url(REDIS_URL)
    try:
        probe.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required (run scripts/setup-host): {exc}")
    finally:
        probe.close()
    gw = fake_settings(
        database_url, fake_provider_url, redis_url=REDIS_URL, stream_keepalive_s=0.2
    )
    cp = ControlPlaneSettings(
        database_url=database_url, admin_key=ADMIN_KEY, backend="fake", redis_url=REDIS_URL
    )
    with (
        serve_app(create_gateway(gw, upstream_transport=loopback_transport())) as gateway_url,
        serve_app(create_app(cp, backend=FakeBackend())) as cp_url,
    ):
        yield Stack(gateway_url, cp_url)


@dataclass
class Org:
    id: str
    operator: httpx.Client
    viewer: httpx.Client
    agent: OpenAI
    agent_key: str


@pytest.fixture
def new_org(stack: Stack, records: Records) -> Iterator[Callable[[dict[str, Any]], Org]]:
    clients: list[httpx.Client | OpenAI] = []

    def api(key: str) -> httpx.Client:
        client = httpx.Client(
            base_url=stack.controlplane, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        clients.append(client)
        return client

    def make(approval: dict[str, Any]) -> Org:
        root = api(ADMIN_KEY)
        org_id = root.post("/v1/orgs", json={"name": "approvals"}).json()["id"]
        keys = {
            role: root.post(
                "/v1/keys", json={"name": role, "role": role, "org_id": org_id}
            ).json()["key"]
            for role in ("operator", "viewer", "gateway")
        }
        records.put_org_gateway(
            OrgGatewayRecord(id=org_id, org_id=org_id, policy={"approval": approval})
        )
        agent = OpenAI(
            base_url=f"{stack.gateway}/v1", api_key=keys["gateway"], max_retries=0, timeout=30
        )
        clients.append(agent)
        return Org(org_id, api(keys["operator"]), api(keys["viewer"]), agent, keys["gateway"])

    yield make
    for client in clients:
        client.close()


def ask(org: Org, word: str, **extra: Any) -> ChatCompletion:
    return org.agent.chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": f"ECHO:{word}"}], **extra
    )


def pending(org: Org) -> dict[str, Any]:
    """The org's one pending approval, once the gateway has recorded it."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        listed = org.viewer.get("/v1/approvals", params={"status": "pending"})
        assert listed.status_code == 200, listed.text
        if approvals := listed.json()["approvals"]:
            assert len(approvals) == 1
            found: dict[str, Any] = approvals[0]
            return found
        time.sleep(0.05)
    raise AssertionError("no approval became pending")


def decide(org: Org, approval_id: str, verdict: str, reason: str) -> dict[str, Any]:
    response = org.operator.post(f"/v1/approvals/{approval_id}/{verdict}", json={"reason": reason})
    assert response.status_code == 200, response.text
    decided: dict[str, Any] = response.json()
    return decided


def audit(org: Org) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = org.viewer.get("/v1/audit").json()["events"]
    return events


def fetch(org: Org, location: str) -> httpx.Response:
    """`GET /v1/approvals/{id}` through the SDK's own client (auth, base URL)."""
    return org.agent.get(location.removeprefix("/v1"), cast_to=httpx.Response)


HOLD = {"mode": "hold", "rules": {"models": ["fake-gpt"]}, "timeout_s": 60}
QUEUE = {"mode": "queue", "rules": {"models": ["fake-gpt"]}, "timeout_s": 60}


def test_queue_mode_answers_202_and_the_result_is_fetched_once_approved(
    new_org: Callable[[dict[str, Any]], Org],
) -> None:
    org = new_org(QUEUE)
    raw = org.agent.chat.completions.with_raw_response.create(
        model="fake-gpt", messages=[{"role": "user", "content": "ECHO:queued-secret"}]
    )
    assert raw.status_code == 202
    held = json.loads(raw.http_response.text)["approval"]
    location = raw.headers["location"]
    assert location == f"/v1/approvals/{held['id']}" and held["status"] == "pending"
    assert held["rule"] == "model" and "request" not in held

    still = fetch(org, location)
    assert still.status_code == 202 and still.json()["approval"]["status"] == "pending"
    listed = pending(org)
    assert listed["id"] == held["id"] and "queued-secret" not in json.dumps(listed)
    viewer_try = org.viewer.post(f"/v1/approvals/{held['id']}/approve", json={"reason": "x"})
    assert viewer_try.status_code == 403

    decided = decide(org, held["id"], "approve", "looks fine")
    assert decided["status"] == "approved" and decided["reason"] == "looks fine"
    assert decided["decided_by"].startswith("key:pdk_")

    result = fetch(org, location)
    assert result.status_code == 200, result.text
    completion = ChatCompletion.model_validate(result.json())
    assert completion.choices[0].message.content == "Fake reply. ECHO:queued-secret"
    with pytest.raises(openai.ConflictError) as again:
        fetch(org, location)
    assert "already" in again.value.message

    events = audit(org)
    types = [e["type"] for e in events]
    for kind in ("approval.requested", "approval.approved", "approval.executed", "llm.call"):
        assert kind in types, types
    approved = next(e for e in events if e["type"] == "approval.approved")
    assert approved["data"]["decided_by"] == decided["decided_by"]
    assert approved["data"]["reason"] == "looks fine" and approved["actor"] == decided["decided_by"]
    assert "queued-secret" not in json.dumps(events)  # the held prompt never enters the trail
    call = next(e for e in events if e["type"] == "llm.call")
    assert f"approval: {held['id']} by {decided['decided_by']}" in call["data"]["policy_notes"]
    gone = org.viewer.get(f"/v1/approvals/{held['id']}").json()
    assert gone["executed_at"] is not None


def test_hold_mode_keeps_the_connection_until_approved_or_rejected(
    new_org: Callable[[dict[str, Any]], Org],
) -> None:
    org = new_org(HOLD)
    with ThreadPoolExecutor(max_workers=1) as pool:
        call: Future[ChatCompletion] = pool.submit(ask, org, "held-one")
        approval = pending(org)
        assert not call.done()
        decide(org, approval["id"], "approve", "ok for the demo")
        completion = call.result(timeout=WAIT_S)
    assert completion.choices[0].message.content == "Fake reply. ECHO:held-one"

    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(ask, org, "held-two")
        approval = pending(org)
        decide(org, approval["id"], "reject", "too expensive")
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call.result(timeout=WAIT_S)
    error = refused.value.body
    assert isinstance(error, dict) and error["step"] == "approval"
    assert error["code"] == "approval_rejected" and "too expensive" in error["message"]
    assert error["details"]["reason"] == "too expensive"
    rejected = [e for e in audit(org) if e["type"] == "approval.rejected"]
    assert [e["data"]["reason"] for e in rejected] == ["too expensive"]


def test_an_undecided_call_is_rejected_at_its_deadline(
    new_org: Callable[[dict[str, Any]], Org],
) -> None:
    org = new_org({**HOLD, "timeout_s": 0.3})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(org, "nobody-answers")
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["code"] == "approval_timeout"
    expired = [e for e in audit(org) if e["type"] == "approval.expired"]
    assert [e["data"]["reason"] for e in expired] == ["approval_timeout"]
    # Deciding afterwards is a conflict that names the status.
    late = org.operator.post(
        f"/v1/approvals/{expired[0]['data']['approval_id']}/approve", json={"reason": "late"}
    )
    assert late.status_code == 409 and late.json()["error"]["status"] == "expired"

    queued = new_org({**QUEUE, "timeout_s": 0.3})
    raw = queued.agent.chat.completions.with_raw_response.create(
        model="fake-gpt", messages=[{"role": "user", "content": "hi"}]
    )
    location = raw.headers["location"]
    deadline = time.monotonic() + WAIT_S
    too_late: openai.PermissionDeniedError | None = None
    while too_late is None and time.monotonic() < deadline:
        try:
            assert fetch(queued, location).status_code == 202
            time.sleep(0.05)
        except openai.PermissionDeniedError as exc:
            too_late = exc
    assert too_late is not None and isinstance(too_late.body, dict)
    assert too_late.body["code"] == "approval_timeout" and too_late.body["step"] == "approval"


def test_a_held_stream_keeps_alive_then_streams_or_fails_in_band(
    new_org: Callable[[dict[str, Any]], Org], stack: Stack
) -> None:
    org = new_org(HOLD)
    body = {
        "model": "fake-gpt",
        "stream": True,
        "messages": [{"role": "user", "content": "ECHO:streamed"}],
    }
    headers = {"Authorization": f"Bearer {org.agent_key}"}
    with (
        httpx.Client(timeout=WAIT_S) as http,
        http.stream("POST", f"{stack.gateway}/v1/chat/completions", json=body, headers=headers)
        as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == ": keepalive"  # sent while nobody has decided yet
        decide(org, pending(org)["id"], "approve", "fine")
        data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for chunk in map(json.loads, data[:-1])
        if chunk["choices"]
    )
    assert text == "Fake reply. ECHO:streamed"

    def streamed() -> str:
        stream = org.agent.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(streamed)
        decide(org, pending(org)["id"], "reject", "not now")
        with pytest.raises(openai.APIError) as failed:
            call.result(timeout=WAIT_S)
    assert isinstance(failed.value.body, dict) and failed.value.body["step"] == "approval"
    assert failed.value.body["code"] == "approval_rejected"


def test_bad_input_and_other_callers(
    new_org: Callable[[dict[str, Any]], Org],
) -> None:
    org = new_org(QUEUE)
    raw = org.agent.chat.completions.with_raw_response.create(
        model="fake-gpt", messages=[{"role": "user", "content": "hi"}]
    )
    approval_id = json.loads(raw.http_response.text)["approval"]["id"]

    missing = org.operator.post("/v1/approvals/apr_missing/approve", json={"reason": "x"})
    assert missing.status_code == 404
    for bad in ({}, {"reason": ""}, {"reason": "x", "extra": 1}):
        refused = org.operator.post(f"/v1/approvals/{approval_id}/approve", json=bad)
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["field"] in ("reason", "extra")
    status = org.viewer.get("/v1/approvals", params={"status": "maybe"})
    assert status.status_code == 422 and status.json()["error"]["field"] == "status"

    decide(org, approval_id, "reject", "no")
    twice = org.operator.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "yes"})
    assert twice.status_code == 409 and twice.json()["error"]["status"] == "rejected"
    assert "rejected" in twice.json()["error"]["message"]

    # Another org sees nothing of it, nor does another caller of the same org at the gateway.
    other = new_org(QUEUE)
    assert other.operator.get(f"/v1/approvals/{approval_id}").status_code == 404
    assert other.operator.get("/v1/approvals").json()["approvals"] == []
    with pytest.raises(openai.NotFoundError):
        fetch(other, f"/v1/approvals/{approval_id}")
    with pytest.raises(openai.NotFoundError):
        fetch(org, "/v1/approvals/apr_missing")


def test_calls_no_rule_matches_pass_straight_through(
    new_org: Callable[[dict[str, Any]], Org],
) -> None:
    org = new_org({"mode": "queue", "rules": {"models": ["fake-claude"]}})
    completion = ask(org, "free")  # fake-gpt, a small worst case: no rule matches
    assert completion.choices[0].message.content == "Fake reply. ECHO:free"
    costly = org.agent.chat.completions.with_raw_response.create(
        model="fake-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
    )
    assert costly.status_code == 202  # $1.50 worst case > the default $0.50
    assert json.loads(costly.http_response.text)["approval"]["rule"] == "estimate_usd_over"


def test_anthropic_clients_get_their_own_error_shape(
    new_org: Callable[[dict[str, Any]], Org], stack: Stack
) -> None:
    org = new_org(QUEUE)
    with anthropic.Anthropic(
        base_url=stack.gateway, api_key=org.agent_key, max_retries=0, timeout=WAIT_S
    ) as claude:
        raw = claude.messages.with_raw_response.create(
            model="fake-gpt", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.status_code == 202
        decide(org, pending(org)["id"], "reject", "not this one")
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            claude.get(raw.headers["location"], cast_to=httpx.Response)
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "permission_error" and body["error"]["step"] == "approval"


def test_a_held_client_that_hangs_up_expires_its_approval(
    new_org: Callable[[dict[str, Any]], Org], stack: Stack
) -> None:
    org = new_org(HOLD)
    body = {"model": "fake-gpt", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {"Authorization": f"Bearer {org.agent_key}"}
    with (
        httpx.Client(timeout=WAIT_S) as http,
        http.stream("POST", f"{stack.gateway}/v1/chat/completions", json=body, headers=headers)
        as response,
    ):
        lines = response.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines) == ": keepalive"
        approval_id = pending(org)["id"]
    # The connection is closed: the gateway notices at its next keepalive at the latest.
    deadline = time.monotonic() + WAIT_S
    record = org.viewer.get(f"/v1/approvals/{approval_id}").json()
    while record["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
        record = org.viewer.get(f"/v1/approvals/{approval_id}").json()
    assert record["status"] == "expired" and record["reason"] == "client_disconnected"
    late = org.operator.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "late"})
    assert late.status_code == 409 and late.json()["error"]["status"] == "expired"
