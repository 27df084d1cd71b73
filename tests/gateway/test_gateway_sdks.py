"""Every endpoint through the real OpenAI and Anthropic SDKs, stream and not: gateway on
loopback, the fake provider behind it speaking each protocol natively."""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx
import pytest
from anthropic import Anthropic
from openai import OpenAI

from paddock.fake_provider import DEFAULT_REPLY
from tests.gateway.harness import Records, Seeded


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


# --- OpenAI SDK -------------------------------------------------------------------------------


def test_responses_non_stream(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    response = client_for(runner.token).responses.create(
        model="fake-gpt", input="Say it. ECHO:resp-1", instructions="Be brief."
    )
    assert response.output_text == "Fake reply. ECHO:resp-1"
    [call] = records.calls(runner.runner_id)
    assert (call.endpoint, call.provider, call.model, call.stream) == (
        "responses",
        "fake",
        "fake-gpt",
        False,
    )
    assert call.prompt_tokens == tokens("Say it. ECHO:resp-1" + "Be brief.")
    assert call.completion_tokens == tokens("Fake reply. ECHO:resp-1")
    assert call.cost_usd > 0


def test_responses_stream_is_billed_from_response_completed(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    events = list(
        client_for(runner.token).responses.create(
            model="fake-gpt",
            input=[{"role": "user", "content": "Stream it. CACHED:2 REASON:3"}],
            stream=True,
        )
    )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == DEFAULT_REPLY
    assert events[-1].type == "response.completed"
    [call] = records.calls(runner.runner_id)
    assert (call.endpoint, call.stream, call.status) == ("responses", True, 200)
    assert (call.cached_tokens, call.reasoning_tokens) == (2, 3)
    assert call.completion_tokens == tokens(DEFAULT_REPLY) + 3
    [event] = records.audit(runner_id=runner.runner_id)
    assert event.data["usage"] == "reported"


@pytest.mark.parametrize("encoding", ["float", None])
def test_embeddings(
    encoding: str | None, runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    # Without an encoding the SDK asks for base64 and decodes it itself.
    extra = {"encoding_format": encoding} if encoding else {}
    result = client_for(runner.token).embeddings.create(
        model="fake-embed", input=["first text", "second"], **extra
    )
    assert [len(d.embedding) for d in result.data] == [8, 8]
    assert result.usage.prompt_tokens == tokens("first textsecond")
    [call] = records.calls(runner.runner_id)
    assert (call.endpoint, call.model, call.completion_tokens) == ("embeddings", "fake-embed", 0)
    assert call.cost_usd == pytest.approx(result.usage.prompt_tokens * 0.02 / 1e6)


def test_chat_through_an_alias_is_recorded_under_the_real_model(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    reply = client_for(runner.token).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "fake-mini"
    [call] = records.calls(runner.runner_id)
    assert (call.provider, call.model) == ("fake", "fake-mini")


def test_cached_and_reasoning_tokens_are_recorded_by_kind_and_priced(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    client_for(runner.token).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "x" * 40 + " CACHED:8 REASON:5"}]
    )
    [call] = records.calls(runner.runner_id)
    assert (call.cached_tokens, call.reasoning_tokens) == (8, 5)
    # policies/prices.yaml: fake-gpt input 5, cached input 2.5, output 15 USD per Mtok.
    fresh = call.prompt_tokens - 8
    assert call.cost_usd == pytest.approx((fresh * 5 + 8 * 2.5 + call.completion_tokens * 15) / 1e6)


# --- Anthropic SDK ----------------------------------------------------------------------------


def test_anthropic_messages_non_stream(
    runner: Seeded, records: Records, anthropic_for: Callable[[str], Anthropic]
) -> None:
    message = anthropic_for(runner.token).messages.create(
        model="fake-claude",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello. ECHO:claude-1 CACHED:3"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Fake reply. ECHO:claude-1"
    [call] = records.calls(runner.runner_id)
    assert (call.endpoint, call.provider, call.model) == (
        "messages",
        "fake-anthropic",
        "fake-claude",
    )
    prompt = tokens("Be brief." + "Hello. ECHO:claude-1 CACHED:3")
    assert (call.prompt_tokens, call.cached_tokens) == (prompt, 3)
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == prompt
    # fake-claude: input 3, cached 0.3, output 15 USD per Mtok.
    expected = ((prompt - 3) * 3 + 3 * 0.3 + call.completion_tokens * 15) / 1e6
    assert call.cost_usd == pytest.approx(expected)


def test_anthropic_messages_stream(
    runner: Seeded, records: Records, anthropic_for: Callable[[str], Anthropic]
) -> None:
    with anthropic_for(runner.token).messages.stream(
        model="smart", max_tokens=100, messages=[{"role": "user", "content": "Stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_REPLY
    assert final.usage.output_tokens == tokens(DEFAULT_REPLY)
    [call] = records.calls(runner.runner_id)
    assert (call.endpoint, call.model, call.stream, call.status) == (
        "messages",
        "fake-claude",
        True,
        200,
    )
    assert call.prompt_tokens == tokens("Stream please")
    assert call.completion_tokens == tokens(DEFAULT_REPLY)


def test_anthropic_count_tokens_is_free_and_unrecorded(
    runner: Seeded, records: Records, anthropic_for: Callable[[str], Anthropic]
) -> None:
    client = anthropic_for(runner.token)
    counted = client.messages.count_tokens(
        model="fake-claude", messages=[{"role": "user", "content": "x" * 40}]
    )
    assert counted.input_tokens == 10  # counted by the provider
    local = client.messages.count_tokens(
        model="fake-gpt", messages=[{"role": "user", "content": "x" * 40}]
    )
    assert local.input_tokens >= 10  # an OpenAI-protocol model: estimated by the gateway
    assert records.calls(runner.runner_id) == []


def test_anthropic_models_list_has_the_anthropic_shape(
    runner: Seeded, anthropic_for: Callable[[str], Anthropic]
) -> None:
    ids = [m.id for m in anthropic_for(runner.token).models.list()]
    assert "fake-claude" in ids and "smart" in ids


def test_anthropic_clients_get_anthropic_errors(
    gateway_url: str, runner: Seeded, anthropic_for: Callable[[str], Anthropic]
) -> None:
    import anthropic

    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_for(runner.token).messages.create(
            model="nope-9000", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert "unknown model 'nope-9000'" in caught.value.message
    raw = httpx.post(
        f"{gateway_url}/v1/messages",
        content=b"{not json",
        headers={"x-api-key": runner.token, "anthropic-version": "2023-06-01"},
    )
    assert raw.status_code == 400
    body = raw.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]
