"""Calls that go through: the real OpenAI SDK -> gateway -> fake provider, all on loopback."""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx
import pytest
from openai import OpenAI

from paddock.fake_provider import DEFAULT_REPLY
from paddock_core import LlmCallRecord
from tests.gateway.harness import ADMIN_KEY, Records, Seeded

# policies/prices.yaml, USD per million tokens (input, output).
PRICES = {"fake-gpt": (5.0, 15.0), "fake-mini": (0.5, 1.5)}


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def priced(call: LlmCallRecord) -> float:
    """What the call should cost, in USD."""
    per_in, per_out = PRICES[call.model]
    return (call.prompt_tokens * per_in + call.completion_tokens * per_out) / 1e6


def test_healthz(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_non_stream_call_is_answered_recorded_and_audited(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    prompt = "Please answer. ECHO:alpha-1 and keep private-prompt-marker-73f out of logs"
    raw = client_for(runner.token).chat.completions.with_raw_response.create(
        model="fake-gpt", messages=[{"role": "user", "content": prompt}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "Fake reply. ECHO:alpha-1"

    [call] = records.calls(runner.runner_id)
    assert raw.headers["x-paddock-call-id"] == call.id
    assert (call.provider, call.model, call.stream, call.status) == ("fake", "fake-gpt", False, 200)
    assert call.session_id == runner.session_id
    assert call.prompt_tokens == tokens(prompt)
    assert call.completion_tokens == tokens("Fake reply. ECHO:alpha-1")
    assert call.cost_usd == pytest.approx(priced(call))
    assert call.cost_usd > 0
    assert call.latency_ms > 0
    assert runner.session_id is not None
    assert records.get_session(runner.session_id).spent_usd == pytest.approx(call.cost_usd)
    assert records.get_runner(runner.runner_id).spent_usd == pytest.approx(call.cost_usd)

    [event] = records.audit(runner_id=runner.runner_id)
    assert event.type == "llm.call"
    assert event.actor == f"runner:{runner.runner_id}"
    assert event.session_id == runner.session_id
    assert str(event.data["policy"]).startswith("team:")  # the chain that allowed it
    assert event.data == {
        "call_id": call.id,
        "model": "fake-gpt",
        "provider": "fake",
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "usage": "reported",
        "cost_usd": pytest.approx(call.cost_usd),
        "latency_ms": call.latency_ms,
        "status": 200,
        "stream": False,
        "policy": event.data["policy"],
    }
    stored = event.model_dump_json() + call.model_dump_json()
    assert "private-prompt-marker" not in stored
    assert "Fake reply" not in stored


def test_stream_is_relayed_in_deltas_and_billed_from_the_usage_chunk(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    system = "You are terse."
    parts = ["First part of the question. ", "Second part."]
    stream = client_for(runner.token).chat.completions.create(
        model="fake-mini",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": [{"type": "text", "text": p} for p in parts]},
        ],
        stream=True,
    )
    chunks = list(stream)

    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(deltas) == DEFAULT_REPLY
    assert len(deltas) == len(DEFAULT_REPLY.split())
    # The gateway asked upstream for usage; the usage-only chunk reaches the client too.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None

    # Recorded before `[DONE]` went out: whoever saw the end of the answer can read its cost.
    [call] = records.calls(runner.runner_id)
    assert (call.model, call.stream, call.status) == ("fake-mini", True, 200)
    assert call.prompt_tokens == tokens(system + "".join(parts)) == chunks[-1].usage.prompt_tokens
    assert call.completion_tokens == tokens(DEFAULT_REPLY) == chunks[-1].usage.completion_tokens
    assert call.cost_usd == pytest.approx(priced(call))
    assert call.cost_usd > 0
    [event] = records.audit(runner_id=runner.runner_id)
    assert event.data["usage"] == "reported"
    assert event.data["stream"] is True
    assert "Second part" not in event.model_dump_json()


def test_stream_cut_by_the_client_is_still_billed(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    prompt = "Take your time. SLOW:150"
    received: list[str] = []
    with client_for(runner.token).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": prompt}], stream=True
    ) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
            if len(received) == 2:
                break

    [call] = records.wait_for_calls(runner.runner_id, 1)
    assert call.status == 499
    assert call.prompt_tokens == tokens(prompt)
    # Estimated from the deltas the gateway relayed: at least what we read, less than the whole.
    assert tokens("".join(received)) <= call.completion_tokens < tokens(DEFAULT_REPLY)
    assert call.cost_usd > 0
    # The gateway stopped reading upstream: the whole stream takes 7 x 150 ms.
    assert call.latency_ms < 1000
    [event] = records.audit(runner_id=runner.runner_id)
    assert event.data["usage"] == "estimated"
    assert event.data["status"] == 499


def test_explicit_provider_form_is_routed_and_forwarded_without_prefix(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    reply = client_for(runner.token).chat.completions.create(
        model="fake/fake-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.model == "fake-mini"
    [call] = records.calls(runner.runner_id)
    assert (call.provider, call.model) == ("fake", "fake-mini")


# Locally priced models and aliases whose provider is configured (the fake's two faces here).
USABLE = {
    "fake-gpt": "fake",
    "fake-mini": "fake",
    "fake-claude": "fake-anthropic",
    "fake-embed": "fake",
    "fast": "fake",
    "smart": "fake-anthropic",
}


def test_models_are_the_usable_ones_plus_the_runners_own(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    seeded = records.runner(model="gpt-4o-mini")
    models = {m.id: m.owned_by for m in client_for(seeded.token).models.list()}
    assert models == {**USABLE, "gpt-4o-mini": "openai"}

    admin_models = {m.id: m.owned_by for m in client_for(ADMIN_KEY).models.list()}
    assert admin_models == USABLE


@pytest.mark.parametrize("header", ["Authorization", "x-api-key", "X-Paddock-Key"])
def test_every_key_header_is_accepted(gateway_url: str, runner: Seeded, header: str) -> None:
    value = f"Bearer {runner.token}" if header == "Authorization" else runner.token
    response = httpx.get(f"{gateway_url}/v1/models", headers={header: value})
    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_admin_key_calls_are_recorded_without_runner_or_session(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    raw = client_for(ADMIN_KEY).chat.completions.with_raw_response.create(
        model="fake-gpt", messages=[{"role": "user", "content": "admin says hi"}]
    )
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    call_id = raw.headers["x-paddock-call-id"]
    [event] = [e for e in records.audit() if e.data.get("call_id") == call_id]
    assert (event.actor, event.runner_id, event.session_id) == ("key:admin", None, None)
    assert event.data["cost_usd"] > 0
