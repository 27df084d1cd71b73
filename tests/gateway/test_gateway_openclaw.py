"""What an OpenClaw runner sends, replayed against the gateway: `api: openai-completions`
(RUNNERS.md, measured by hand; baseUrl ends in /v1) and `api: anthropic-messages` (captured from
the e2e runner; OpenClaw posts to `{baseUrl}/messages` when baseUrl ends in /v1, to
`{baseUrl}/v1/messages` otherwise, the same URL here), to a provider of either protocol. The real
OpenClaw image end to end is tests/e2e."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.gateway.harness import Records, Seeded

SYSTEM = "You are OpenClaw, a personal agent. " + "Follow the workspace rules. " * 900  # ~25k
TOOLS = [
    ("read", "Read a file in the workspace", {"path": {"type": "string"}}),
    ("write", "Write a file in the workspace", {"path": {"type": "string"}}),
    ("web_fetch", "Fetch a URL", {"url": {"type": "string"}}),
]
DYNAMIC = (  # the second system block OpenClaw sends to Anthropic endpoints (~3k characters)
    "<!-- openclaw:attempt:DYNAMIC -->\n## Temporal Context\nCurrent date: 2026-09-06\n"
    "Time zone: UTC\nFor the exact current time, use `session_status`.\n"
)
CONTEXT = (
    "<openclaw-context>session=main; channel=cli; time=2026-09-06T10:00:00Z</openclaw-context>"
)


def _sse_data(response: httpx.Response) -> list[dict[str, Any]]:
    out = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def _openai_body(model: str, task: str) -> dict[str, Any]:
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {"type": "object", "properties": props, "required": list(props)},
            },
        }
        for name, description, props in TOOLS
    ]
    return {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},  # compat.supportsUsageInStreaming
        "max_completion_tokens": 8192,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": task},
            {"role": "user", "content": CONTEXT},
        ],
        "tools": tools,
        "store": False,
    }


def _anthropic_body(model: str, task: str) -> dict[str, Any]:
    """The shape OpenClaw 2026.9 sends with `api: anthropic-messages` (captured at the fake
    provider behind the e2e runner): no extra context message and no metadata; the system prompt
    as two text blocks, the long stable one marked for caching; the user's message stamped with
    the time and marked for caching; max_tokens from the model's maxTokens (4096 in the config
    Paddock renders)."""
    tools = [
        {
            "name": name,
            "description": description,
            "input_schema": {"type": "object", "properties": props, "required": list(props)},
        }
        for name, description, props in TOOLS
    ]
    ephemeral = {"type": "ephemeral"}
    stamped = f"[Sun 2026-09-06 10:00 UTC] {task}"
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": stamped, "cache_control": ephemeral}],
            }
        ],
        "max_tokens": 4096,
        "stream": True,
        "system": [
            {"type": "text", "text": SYSTEM, "cache_control": ephemeral},
            {"type": "text", "text": DYNAMIC},
        ],
        "tools": tools,
    }


@pytest.mark.parametrize("model", ["fake-gpt", "fake-claude"])
def test_openai_completions_runner(
    model: str, gateway_url: str, runner: Seeded, records: Records
) -> None:
    base_url = f"{gateway_url}/v1"  # as the control plane gives it: ends in /v1
    with httpx.stream(
        "POST",
        f"{base_url}/chat/completions",
        json=_openai_body(model, "Say hello. ECHO:claw-openai"),
        headers={"Authorization": f"Bearer {runner.token}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        events = _sse_data(response)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Fake reply. ECHO:claw-openai"
    assert events[-1]["usage"]["prompt_tokens"] > 6000
    [call] = records.calls(runner.runner_id)
    assert (call.model, call.stream, call.status) == (model, True, 200)
    assert call.prompt_tokens > 6000 and call.cost_usd > 0


@pytest.mark.parametrize("model", ["fake-gpt", "fake-claude"])
def test_anthropic_messages_runner(
    model: str, gateway_url: str, runner: Seeded, records: Records
) -> None:
    base_url = gateway_url  # an Anthropic SDK's base URL: no /v1
    with httpx.stream(
        "POST",
        f"{base_url}/v1/messages",
        json=_anthropic_body(model, "Say hello. ECHO:claw-anthropic"),
        headers={
            "x-api-key": runner.token,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "fine-grained-tool-streaming-2025-05-14",
        },
        timeout=10,
    ) as response:
        assert response.status_code == 200
        events = _sse_data(response)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Fake reply. ECHO:claw-anthropic"
    # Input counts come in message_start (Anthropic) or message_delta (translated from OpenAI).
    usage = {**events[0]["message"]["usage"], **events[-2]["usage"]}
    assert usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) > 6000
    [call] = records.calls(runner.runner_id)
    assert (call.model, call.stream, call.status, call.endpoint) == (model, True, 200, "messages")
    assert call.prompt_tokens > 6000 and call.cost_usd > 0


def test_anthropic_messages_runner_tool_call(gateway_url: str, runner: Seeded) -> None:
    with httpx.stream(
        "POST",
        f"{gateway_url}/v1/messages",
        json=_anthropic_body("fake-gpt", "Read it. TOOL:read ECHO:notes.md"),
        headers={"x-api-key": runner.token, "anthropic-version": "2023-06-01"},
        timeout=10,
    ) as response:
        events = _sse_data(response)
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert starts[0]["type"] == "tool_use" and starts[0]["name"] == "read"
    arguments = "".join(
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(arguments) == {"echo": "notes.md"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
