"""Protocol translation, both ways, with tool calls, stream and not: OpenAI SDK -> gateway ->
Anthropic-protocol provider, and Anthropic SDK -> gateway -> OpenAI-protocol provider."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from gateway.providers._requests import chat_to_messages, messages_to_chat
from paddock.fake_provider import DEFAULT_REPLY, FakeState
from tests.gateway.harness import Records, Seeded

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


# --- OpenAI client, Anthropic provider --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_chat_to_anthropic_text(
    stream: bool,
    runner: Seeded,
    records: Records,
    fake_state: FakeState,
    client_for: Callable[[str], OpenAI],
) -> None:
    client = client_for(runner.token)
    messages: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi. ECHO:tr-1"},
    ]
    if stream:
        chunks = list(
            client.chat.completions.create(model="fake-claude", messages=messages, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        reply = client.chat.completions.create(model="fake-claude", messages=messages)
        text, finish = reply.choices[0].message.content or "", reply.choices[0].finish_reason
        assert reply.usage is not None and reply.usage.prompt_tokens == tokens(
            "Be brief.Hi. ECHO:tr-1"
        )
    assert (text, finish) == ("Fake reply. ECHO:tr-1", "stop")
    sent = fake_state.last_bodies[-1]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi. ECHO:tr-1"}]}
    ]
    assert sent["max_tokens"] == 4096  # the gateway's default: Anthropic requires one
    [call] = records.calls(runner.runner_id)
    assert (call.provider, call.model, call.stream, call.status) == (
        "fake-anthropic",
        "fake-claude",
        stream,
        200,
    )
    assert call.completion_tokens == tokens("Fake reply. ECHO:tr-1")
    assert call.cost_usd > 0


@pytest.mark.parametrize("stream", [False, True])
def test_chat_to_anthropic_tool_round_trip(
    stream: bool, runner: Seeded, fake_state: FakeState, client_for: Callable[[str], OpenAI]
) -> None:
    client = client_for(runner.token)
    ask: Any = [{"role": "user", "content": "Weather? ECHO:Paris TOOL:get_weather"}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="fake-claude", messages=ask, tools=[WEATHER_TOOL], stream=True
            )
        )
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        calls = [tc for d in deltas for tc in d.tool_calls or ()]
        call_id, name = calls[0].id, calls[0].function.name  # type: ignore[union-attr]
        arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    else:
        reply = client.chat.completions.create(
            model="fake-claude", messages=ask, tools=[WEATHER_TOOL]
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        [tool_call] = reply.choices[0].message.tool_calls or []
        assert tool_call.type == "function"
        call_id, name, arguments = (
            tool_call.id,
            tool_call.function.name,
            tool_call.function.arguments,
        )
    assert name == "get_weather"
    assert json.loads(arguments) == {"echo": "Paris"}
    assert fake_state.last_bodies[-1]["tools"] == [ANTHROPIC_TOOL]

    # Second turn: the tool's result goes back; Anthropic gets tool_use and tool_result blocks.
    follow_up: Any = [
        *ask,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21C"},
    ]
    reply = client.chat.completions.create(
        model="fake-claude", messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert reply.choices[0].message.content == "Fake reply. ECHO:Paris"
    sent = fake_state.last_bodies[-1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call_id, "name": name, "input": {"echo": "Paris"}}],
    }
    assert sent[2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": [{"type": "text", "text": "Sunny, 21C"}],
            }
        ],
    }


def test_chat_field_anthropic_cannot_honour_is_400(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(runner.token).chat.completions.create(
            model="fake-claude", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert (caught.value.code, caught.value.param) == ("unsupported_field", "n")
    assert "over the Anthropic protocol" in caught.value.message
    assert records.calls(runner.runner_id) == []


# --- Anthropic client, OpenAI provider --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_messages_to_openai_text(
    stream: bool,
    runner: Seeded,
    records: Records,
    fake_state: FakeState,
    anthropic_for: Callable[[str], Anthropic],
) -> None:
    client = anthropic_for(runner.token)
    kwargs: Any = {
        "model": "fake-gpt",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    if stream:
        with client.messages.stream(**kwargs) as events:
            text = "".join(events.text_stream)
            message = events.get_final_message()
    else:
        message = client.messages.create(**kwargs)
        text = message.content[0].text  # type: ignore[union-attr]
    assert text == DEFAULT_REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == tokens(DEFAULT_REPLY)
    assert message.usage.input_tokens == tokens("Be brief.Hello there")
    sent = fake_state.last_bodies[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    assert sent["max_tokens"] == 64
    if stream:
        assert sent["stream_options"] == {"include_usage": True}
    [call] = records.calls(runner.runner_id)
    assert (call.endpoint, call.provider, call.model, call.stream) == (
        "messages",
        "fake",
        "fake-gpt",
        stream,
    )
    assert call.prompt_tokens == tokens("Be brief.Hello there")


@pytest.mark.parametrize("stream", [False, True])
def test_messages_to_openai_tool_round_trip(
    stream: bool,
    runner: Seeded,
    fake_state: FakeState,
    anthropic_for: Callable[[str], Anthropic],
) -> None:
    client = anthropic_for(runner.token)
    ask: Any = [{"role": "user", "content": "Weather? ECHO:Oslo TOOL:get_weather"}]
    kwargs: Any = {"model": "fake-gpt", "max_tokens": 64, "tools": [ANTHROPIC_TOOL]}
    if stream:
        with client.messages.stream(messages=ask, **kwargs) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(messages=ask, **kwargs)
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("get_weather", {"echo": "Oslo"})
    assert fake_state.last_bodies[-1]["tools"] == [WEATHER_TOOL]

    reply = client.messages.create(
        messages=[
            *ask,
            {"role": "assistant", "content": [block.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "Rain"}],
            },
        ],
        **kwargs,
    )
    assert reply.content[0].text == "Fake reply. ECHO:Oslo"  # type: ignore[union-attr]
    sent = fake_state.last_bodies[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"echo":"Oslo"}',
    }
    assert sent[2] == {"role": "tool", "tool_call_id": block.id, "content": "Rain"}


def test_messages_field_openai_cannot_honour_is_400_in_anthropic_shape(
    runner: Seeded, anthropic_for: Callable[[str], Anthropic]
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_for(runner.token).messages.create(
            model="fake-gpt",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"top_k": 5},
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "`top_k` is not supported" in caught.value.message


# --- the translators on their own -------------------------------------------------------------


def test_chat_request_translation_merges_turns_and_maps_options() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "developer", "content": "Rules."},
            {"role": "user", "content": "a"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
                ],
            },
        ],
        "max_completion_tokens": 2000,
        "stop": "END",
        "tool_choice": "required",
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "temperature": 0.3,
        "user": "u-1",
        "store": False,
    }
    out = chat_to_messages(body, "claude-x", 4096)
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                },
            ],
        }
    ]
    assert out["system"] == [{"type": "text", "text": "Rules."}]
    assert out["stop_sequences"] == ["END"]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "temperature" not in out  # Anthropic refuses one with thinking on
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["max_tokens"] == 2000


def test_messages_request_translation_keeps_tool_order() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "S"}],
        "stop_sequences": ["X"],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "tools": [ANTHROPIC_TOOL],
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "Hot"}],
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    }
    out = messages_to_chat(body, "gpt-x", "max_completion_tokens")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert out["messages"][2]["content"] == "Let me check."
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "Hot"}
    assert out["max_completion_tokens"] == 10
    assert out["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert out["stop"] == ["X"]
