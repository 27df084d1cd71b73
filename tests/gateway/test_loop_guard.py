"""Loop detection: read from the conversation itself (iterations since a person last wrote, the
same tool call over and over), in every protocol; end to end, a scripted agent (the test, with
the real SDKs, against the fake provider that always asks for the same tool) is stopped."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from gateway.checks._content import agent_turns
from paddock_core import OrgGatewayRecord, new_id
from tests.gateway.harness import Records

LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def _chat(turns: int, *, same: bool = True) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(turns):
        args = '{"q": 1}' if same else json.dumps({"q": i})
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "lookup", "arguments": args},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "result"})
    return {"messages": messages}


def test_turns_since_a_person_wrote_in_each_protocol() -> None:
    assert agent_turns("chat", _chat(3)).iterations == 3
    # Arguments are compared canonically: spacing and key order do not hide a repeat.
    body = _chat(2)
    body["messages"][3]["tool_calls"][0]["function"]["arguments"] = '{ "q" : 1 }'
    assert len(set(agent_turns("chat", body).calls)) == 1
    # A new message from the person starts the count again.
    body = _chat(4)
    body["messages"].append({"role": "user", "content": "now something else"})
    assert agent_turns("chat", body).iterations == 0

    def use(i: int) -> dict[str, Any]:
        block = {"type": "tool_use", "id": f"t{i}", "name": "ls", "input": {"a": 1}}
        return {"role": "assistant", "content": [block]}

    def result(i: int) -> dict[str, Any]:
        block = {"type": "tool_result", "tool_use_id": f"t{i}", "content": "x"}
        return {"role": "user", "content": [block]}

    anthropic_body = {
        "messages": [{"role": "user", "content": "go"}, use(1), result(1), use(2), result(2)]
    }
    turns = agent_turns("messages", anthropic_body)
    assert (turns.iterations, turns.calls) == (2, (("ls", '{"a":1}'), ("ls", '{"a":1}')))

    responses_body = {
        "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "a", "name": "ls", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": "x"},
        ]
    }
    assert agent_turns("responses", responses_body).iterations == 1
    assert agent_turns("embeddings", {"input": "x"}).iterations == 0


def _org(records: Records, **loop: Any) -> str:
    org = new_id("org")
    records.put_org_gateway(OrgGatewayRecord(id=org, org_id=org, policy={"loop_guard": loop}))
    return records.api_key(org)[1]


def _run_agent(client: OpenAI, limit: int) -> tuple[int, openai.PermissionDeniedError | None]:
    """A tool-calling agent loop, as agents run it: call, run the tool, send the result back.
    The fake provider asks for the tool whenever the latest turn says TOOL:lookup. Returns
    (model calls answered, the refusal that stopped it)."""
    messages: list[Any] = [{"role": "user", "content": "TOOL:lookup ECHO:loop"}]
    for answered in range(limit):
        try:
            reply = client.chat.completions.create(
                model="fake-gpt", messages=messages, tools=[LOOKUP], max_tokens=50
            )
        except openai.PermissionDeniedError as exc:
            return answered, exc
        message = reply.choices[0].message
        assert message.tool_calls, "the fake provider asks for the tool every time"
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            # The tool's output asks for the tool again: the agent is stuck.
            output = "TOOL:lookup ECHO:loop"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
    return limit, None


def test_a_repeating_agent_is_stopped_at_the_configured_repeat(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    key = _org(records, max_repeats=3)
    answered, refusal = _run_agent(client_for(key), limit=12)
    assert refusal is not None and answered == 3  # 3 identical calls made; the 4th refused
    body = refusal.body
    assert isinstance(body, dict)
    assert (body["step"], body["code"]) == ("loop_guard", "loop_detected")
    assert body["details"] == {
        "kind": "repetition",
        "tool": "lookup",
        "repeats": 3,
        "action": "deny",
    }
    assert "called 3 times in a row" in body["message"]


def test_an_iterating_agent_is_stopped_after_max_iterations_and_audited(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    org = new_id("org")
    policy = {"loop_guard": {"max_iterations": 4, "max_repeats": 50}}
    records.put_org_gateway(OrgGatewayRecord(id=org, org_id=org, policy=policy))
    _, key = records.api_key(org)
    answered, refusal = _run_agent(client_for(key), limit=12)
    assert refusal is not None and answered == 5  # turns 0..4 answered; 5 iterations > 4
    [event] = [e for e in records.audit(org_id=org) if e.type == "policy.denied"]
    assert event.data["step"] == "loop_guard"
    assert event.data["details"] == {
        "kind": "iterations",
        "iterations": 5,
        "limit": 4,
        "action": "deny",
    }
    assert len([e for e in records.audit(org_id=org) if e.type == "llm.call"]) == 5


def test_the_anthropic_sdk_sees_the_loop_refusal_in_its_shape(
    records: Records, anthropic_for: Callable[[str], Anthropic]
) -> None:
    key = _org(records, max_repeats=2)
    tool_use = {"type": "tool_use", "id": "t", "name": "ls", "input": {"path": "/"}}
    result = {"type": "tool_result", "tool_use_id": "t", "content": "x"}
    messages: list[Any] = [{"role": "user", "content": "list"}]
    for _ in range(2):
        messages += [
            {"role": "assistant", "content": [tool_use]},
            {"role": "user", "content": [result]},
        ]
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        anthropic_for(key).messages.create(model="fake-claude", max_tokens=50, messages=messages)
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["error"]["step"], body["error"]["details"]["tool"]) == ("loop_guard", "ls")
