"""The gateway's parts on their own: SSE metering, routing, settings, and the fake provider."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway import GatewaySettings
from gateway._usage import Usage
from gateway.providers import ChatMeter, PassThrough
from paddock.fake_provider import DEFAULT_REPLY, create_fake_provider
from tests.support.servers import serve_app


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def _delta(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


STREAM = (
    b": keep-alive comment\n\n"
    + _event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    + _event(_delta("Grüße, "))
    + b"data: {not json}\n\n"
    + _event(_delta("wörld"))
    + _event(
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]}
    )
    + _event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}})
    + b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("piece", [1, 2, 7, len(STREAM)])
def test_meter_reads_usage_and_text_length_across_any_chunking(piece: int) -> None:
    relay = PassThrough(ChatMeter())
    out = b"".join(
        relay.feed(STREAM[start : start + piece]) for start in range(0, len(STREAM), piece)
    )
    assert out == STREAM  # passed through byte for byte
    meter = relay.meter
    assert meter.usage == Usage(prompt_tokens=11, completion_tokens=4)
    assert meter.completion_chars == len("Grüße, wörld{}")
    assert meter.done


def test_meter_without_usage_counts_text_and_skips_an_overlong_line() -> None:
    relay = PassThrough(ChatMeter())
    relay.feed(b"data: " + b"x" * (2 * 1024 * 1024))  # no newline yet: dropped, not buffered
    relay.feed(b"x\n\n" + _event(_delta("four")))
    meter = relay.meter
    assert meter.usage is None
    assert meter.completion_chars == 4
    assert not meter.done


def test_settings_read_provider_maps_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PADDOCK_PROVIDER_BASE_URLS", '{"fake": "http://127.0.0.1:9/v1"}')
    monkeypatch.setenv("PADDOCK_PROVIDER_KEYS", '{"fake": "fk-1"}')
    settings = GatewaySettings()
    assert settings.provider_base_urls == {"fake": "http://127.0.0.1:9/v1"}
    assert settings.provider_keys["fake"].get_secret_value() == "fk-1"
    assert "fk-1" not in repr(settings)


# --- the fake provider on its own -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[httpx.Client]:
    with serve_app(create_fake_provider(model_ids=["fake-gpt"])) as url:
        with httpx.Client(base_url=url, timeout=5) as client:
            yield client


def test_fake_counts_tokens_over_all_message_text(fake: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "First ECHO:one "}, {"type": "x"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "then ECHO:two"},
    ]
    body = fake.post("/v1/chat/completions", json={"model": "fake-gpt", "messages": messages})
    assert body.status_code == 200
    reply = body.json()
    # The most recent user message with an ECHO wins: agents resend the whole conversation.
    assert reply["choices"][0]["message"]["content"] == "Fake reply. ECHO:two"
    chars = len("Be brief.") + len("First ECHO:one ") + len("ok") + len("then ECHO:two")
    assert reply["usage"] == {
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "prompt_tokens": math.ceil(chars / 4),
        "completion_tokens": math.ceil(len("Fake reply. ECHO:two") / 4),
        "total_tokens": math.ceil(chars / 4) + math.ceil(len("Fake reply. ECHO:two") / 4),
    }


def test_fake_stream_sends_role_words_stop_usage_done(fake: httpx.Client) -> None:
    body = {
        "model": "fake-gpt",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = fake.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [e["choices"][0]["delta"]["content"] for e in events[1:-2]]
    assert "".join(words) == DEFAULT_REPLY
    assert len(words) == len(DEFAULT_REPLY.split())
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == math.ceil(len(DEFAULT_REPLY) / 4)


def test_fake_fails_on_request(fake: httpx.Client) -> None:
    hello = {"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]}
    failed = fake.post("/v1/chat/completions", json=hello, headers={"X-Fake-Fail": "503"})
    assert failed.status_code == 503
    assert failed.json()["error"]["type"] == "server_error"
    unknown = fake.post("/v1/chat/completions", json={**hello, "model": "fake-mini"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert fake.post("/v1/chat/completions", content=b"{").status_code == 400
    assert fake.get("/v1/models").json()["data"][0]["id"] == "fake-gpt"
