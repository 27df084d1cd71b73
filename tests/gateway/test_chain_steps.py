"""Steps 1, 2, 4, 6, 13 and 14 through the real gateway, driven by the real SDKs: each step's
allow and deny paths, its status and error body (in the client's protocol, with `step`), and
the `policy.denied` audit event. Each test uses its own org, set up through the store."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml
from anthropic import Anthropic
from openai import OpenAI

from gateway import create_gateway
from paddock.fake_provider import FakeState
from paddock_core import DEFAULT_POLICIES_DIR, OrgGatewayRecord, new_id
from tests.gateway.conftest import fake_settings
from tests.gateway.harness import Records, loopback_transport
from tests.support.servers import serve_app

HELLO: list[Any] = [{"role": "user", "content": "ECHO:chain"}]
TOOL = {"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}
SEARCH = {"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}


def org_with(
    records: Records, *, plan: str | None = None, policy: dict[str, Any] | None = None, **key: Any
) -> tuple[str, str]:
    """A new org with this plan and these step settings, and a gateway key of it."""
    org = new_id("org")
    records.put_org_gateway(OrgGatewayRecord(id=org, org_id=org, plan=plan, policy=policy or {}))
    _, secret = records.api_key(org, **key)
    return org, secret


def denial(records: Records, org: str) -> dict[str, Any]:
    [event] = [e for e in records.audit(org_id=org) if e.type == "policy.denied"]
    assert event.actor.startswith("key:pdk_")
    return dict(event.data)


def openai_error(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = caught.value.body
    assert isinstance(body, dict)
    return body


@pytest.fixture(scope="module")
def plans_gateway_url(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, fake_provider_url: str
) -> Iterator[str]:
    """A second gateway over the same store whose policies add two plans: `chat_only` (one
    endpoint) and `closed` (not active)."""
    policies = tmp_path_factory.mktemp("policies")
    for path in DEFAULT_POLICIES_DIR.glob("*.yaml"):
        shutil.copy(path, policies / path.name)
    plans = yaml.safe_load((policies / "plans.yaml").read_text())
    plans["plans"]["chat_only"] = {"endpoints": ["chat"]}
    plans["plans"]["closed"] = {"active": False}
    (policies / "plans.yaml").write_text(yaml.safe_dump(plans))
    settings = fake_settings(database_url, fake_provider_url, policies_dir=policies)
    with serve_app(create_gateway(settings, upstream_transport=loopback_transport())) as url:
        yield url


def test_plan_enforcement_is_403_and_audited(records: Records, plans_gateway_url: str) -> None:
    org, key = org_with(records, plan="chat_only")
    client = OpenAI(base_url=f"{plans_gateway_url}/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="fake-gpt", messages=HELLO)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.embeddings.create(model="fake-embed", input="hi")
    error = openai_error(caught)
    assert (error["step"], error["code"]) == ("plan", "plan_endpoint_not_included")
    assert error["details"] == {"plan": "chat_only", "endpoint": "embeddings"}
    audited = denial(records, org)
    assert (audited["step"], audited["reason"], audited["decision"]) == (
        "plan",
        "plan_endpoint_not_included",
        "deny",
    )
    assert str(audited["policy"]).startswith("chat_only:")

    _, closed = org_with(records, plan="closed")
    client = OpenAI(base_url=f"{plans_gateway_url}/v1", api_key=closed, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="fake-gpt", messages=HELLO)
    assert openai_error(caught)["code"] == "plan_inactive"
    client.close()


def test_body_over_the_plans_limit_is_413_with_the_limit(
    records: Records, gateway_url: str
) -> None:
    _, key = org_with(records, policy={"body_size": {"max_bytes": 2000}})
    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": "x" * 3000}]}
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["step"], error["code"], error["type"]) == (
        "body_size",
        "body_too_large",
        "invalid_request_error",
    )
    assert error["details"]["max_bytes"] == 2000
    small = {"model": "fake-gpt", "messages": HELLO}
    ok = httpx.post(
        f"{gateway_url}/v1/chat/completions", json=small, headers={"authorization": f"Bearer {key}"}
    )
    assert ok.status_code == 200


def test_entitlements_of_the_free_plan(
    records: Records, client_for: Callable[[str], OpenAI], anthropic_for: Callable[[str], Anthropic]
) -> None:
    _, key = org_with(records, plan="free")
    client = client_for(key)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="fake-mini", messages=HELLO, tools=[TOOL])  # type: ignore[list-item]
    assert (openai_error(caught)["step"], openai_error(caught)["code"]) == (
        "entitlement",
        "not_entitled_tools",
    )
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="fake-mini", messages=HELLO, reasoning_effort="low")
    assert openai_error(caught)["code"] == "not_entitled_reasoning"
    # The same refusal in Anthropic's shape, with the step.
    with pytest.raises(anthropic.PermissionDeniedError) as a_caught:
        anthropic_for(key).messages.create(
            model="fake-mini",
            max_tokens=2000,
            messages=HELLO,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    body = a_caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "permission_error"
    assert body["error"]["step"] == "entitlement"
    assert "does not include reasoning" in body["error"]["message"]
    # Streaming is included in free: allowed.
    chunks = list(client.chat.completions.create(model="fake-mini", messages=HELLO, stream=True))
    assert chunks


def test_cost_estimate_over_the_ceiling_is_403_with_the_estimate(
    records: Records, client_for: Callable[[str], OpenAI], fake_state: FakeState
) -> None:
    _, key = org_with(records, policy={"cost_estimate": {"max_call_usd": 0.01}})
    client = client_for(key)
    before = fake_state.requests.get("/v1/chat/completions", 0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        # fake-gpt: $15/Mtok out; 1000 output tokens = $0.015 > $0.01
        client.chat.completions.create(model="fake-gpt", messages=HELLO, max_tokens=1000)
    error = openai_error(caught)
    assert (error["step"], error["code"], error["type"]) == (
        "cost_estimate",
        "cost_estimate_exceeded",
        "budget_exceeded",
    )
    assert error["details"]["estimate_usd"] == pytest.approx(0.015 + 3 * 5e-6)  # 3 tokens in
    assert error["details"]["max_output_tokens"] == 1000
    assert fake_state.requests.get("/v1/chat/completions", 0) == before  # never forwarded
    client.chat.completions.create(model="fake-gpt", messages=HELLO, max_tokens=100)


def test_model_allowlists_of_plan_org_and_key(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    _, free = org_with(records, plan="free")
    client_for(free).chat.completions.create(model="fast", messages=HELLO)  # alias of fake-mini
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(free).chat.completions.create(model="fake-gpt", messages=HELLO, max_tokens=9)
    error = openai_error(caught)
    assert (error["step"], error["code"]) == ("model_allowlist", "model_not_allowed")
    assert error["details"] == {"model": "fake-gpt", "level": "plan"}

    _, org_list = org_with(records, policy={"model_allowlist": {"allow": ["fake-claude"]}})
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(org_list).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert openai_error(caught)["details"]["level"] == "org"

    _, keyed = org_with(records, models=["fake-mini"])
    client_for(keyed).chat.completions.create(model="fake-mini", messages=HELLO)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(keyed).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert openai_error(caught)["details"]["level"] == "key"


def test_skill_allowlist_denies_or_strips(
    records: Records, client_for: Callable[[str], OpenAI], fake_state: FakeState
) -> None:
    policy = {"skill_allowlist": {"allow": ["web_*"]}}
    _, key = org_with(records, policy=policy)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(key).chat.completions.create(
            model="fake-gpt",
            messages=HELLO,
            tools=[TOOL, SEARCH],  # type: ignore[list-item]
        )
    error = openai_error(caught)
    assert (error["step"], error["code"], error["details"]) == (
        "skill_allowlist",
        "skill_not_allowed",
        {"tools": ["shell"]},
    )

    org, strip = org_with(
        records, policy={"skill_allowlist": {"allow": ["web_*"], "mode": "strip"}}
    )
    client_for(strip).chat.completions.create(
        model="fake-gpt",
        messages=HELLO,
        tools=[TOOL, SEARCH],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "shell"}},
    )
    sent = fake_state.last_bodies[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["web_search"]
    assert "tool_choice" not in sent
    [call] = [e for e in records.audit(org_id=org) if e.type == "llm.call"]
    assert call.data["policy_notes"] == ["skill_allowlist: stripped tools: shell"]


def test_an_org_policy_change_applies_on_the_next_call(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    org, key = org_with(records)
    client = client_for(key)
    client.chat.completions.create(model="fake-gpt", messages=HELLO)
    records.put_org_gateway(
        OrgGatewayRecord(id=org, org_id=org, policy={"model_allowlist": {"allow": ["x-*"]}})
    )
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="fake-gpt", messages=HELLO)
    records.put_org_gateway(
        OrgGatewayRecord(id=org, org_id=org, policy={"model_allowlist": {"enabled": False}})
    )
    client.chat.completions.create(model="fake-gpt", messages=HELLO)
