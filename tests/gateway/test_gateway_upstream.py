"""What the gateway sends upstream and how it survives a failing upstream.

The upstream here is an `httpx.MockTransport` passed to `create_gateway`: it sees the exact
request the gateway sends and can fail in ways a real server cannot be made to (refused
connection, read timeout, a stream that breaks mid-way).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from gateway import create_gateway
from paddock_core import OrgGatewayRecord, StoreError, open_provider_key, seal_provider_key
from tests.gateway.conftest import fake_settings
from tests.gateway.harness import FAKE_PROVIDER_KEY, Records, Seeded
from tests.support.servers import serve_app

# Never dialled (the transport is a mock), but loopback all the same.
UPSTREAM = "http://127.0.0.1:9/v1"
SECRET = "paddock-development-secret-change-me"  # CoreSettings' development default
PARTIAL = "Partial answer that"


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def _delta(text: str) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "choices": [choice]}


class _BreaksMidway(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _sse(_delta(PARTIAL))
        raise httpx.ReadError("connection reset by peer")


class Upstream:
    """Answers by the last user message: CONNECT_ERROR, READ_TIMEOUT, BREAK_STREAM, NO_USAGE."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        said = body["messages"][-1]["content"]
        if said == "CONNECT_ERROR":
            raise httpx.ConnectError("connection refused", request=request)
        if said == "READ_TIMEOUT":
            raise httpx.ReadTimeout("timed out", request=request)
        if said == "BREAK_STREAM":
            sse = {"content-type": "text/event-stream"}
            return httpx.Response(200, headers=sse, stream=_BreaksMidway())
        if body.get("stream"):
            usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
            end = {**_delta(""), "choices": [], "usage": usage}
            sse_body = _sse(_delta("Hi"), end) + b"data: [DONE]\n\n"
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=sse_body
            )
        message = {"role": "assistant", "content": "Twelve chars"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        reply: dict[str, Any] = {"id": "c2", "object": "chat.completion", "created": 0}
        reply.update(model=body["model"], choices=[choice])
        if said != "NO_USAGE":
            reply["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        return httpx.Response(200, json=reply)


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
def gateway_url(database_url: str, upstream: Upstream) -> Iterator[str]:
    """Overrides conftest's gateway: this one reaches its providers through the mock."""
    settings = fake_settings(
        database_url, "http://127.0.0.1:9", provider_base_urls={"fake": UPSTREAM}
    )
    transport = httpx.MockTransport(upstream)
    with serve_app(create_gateway(settings, upstream_transport=transport)) as url:
        yield url


def test_upstream_gets_the_provider_key_and_the_body_unchanged_but_for_model_and_usage(
    runner: Seeded, upstream: Upstream, client_for: Callable[[str], OpenAI]
) -> None:
    chunks = list(
        client_for(runner.token).chat.completions.create(
            model="fake/fake-mini",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            temperature=0.25,
            stream_options={"include_obfuscation": False},
            extra_body={"vendor_option": {"keep": ["me"]}},
        )
    )
    assert chunks[0].choices[0].delta.content == "Hi"

    sent = upstream.requests[-1]
    assert str(sent.url) == f"{UPSTREAM}/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {FAKE_PROVIDER_KEY}"
    assert all(runner.token not in value for value in sent.headers.values())
    assert json.loads(sent.content) == {
        "model": "fake-mini",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "temperature": 0.25,
        "stream_options": {"include_obfuscation": False, "include_usage": True},
        "vendor_option": {"keep": ["me"]},
    }


def test_missing_usage_is_estimated_from_the_text(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    client_for(runner.token).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "NO_USAGE"}]
    )
    [call] = records.calls(runner.runner_id)
    assert (call.prompt_tokens, call.completion_tokens) == (2, 3)  # 8 and 12 characters
    assert call.cost_usd > 0
    [event] = records.audit(runner_id=runner.runner_id)
    assert event.data["usage"] == "estimated"


@pytest.mark.parametrize(
    ("said", "code"),
    [("CONNECT_ERROR", "upstream_unreachable"), ("READ_TIMEOUT", "upstream_timeout")],
)
@pytest.mark.parametrize("stream", [False, True])
def test_unreachable_upstream_is_502_and_recorded(
    said: str,
    code: str,
    stream: bool,
    runner: Seeded,
    records: Records,
    client_for: Callable[[str], OpenAI],
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client_for(runner.token).chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": said}], stream=stream
        )
    assert caught.value.status_code == 502
    assert (caught.value.type, caught.value.code) == ("upstream_error", code)
    [call] = records.calls(runner.runner_id)
    assert (call.status, call.stream, call.cost_usd) == (502, stream, 0.0)


def test_stream_broken_upstream_ends_in_an_error_event_and_is_billed(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client_for(runner.token).chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "BREAK_STREAM"}], stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert received == [PARTIAL]
    assert "broke off the stream" in caught.value.message

    [call] = records.wait_for_calls(runner.runner_id, 1)
    assert call.status == 502
    assert (call.prompt_tokens, call.completion_tokens) == (3, 5)  # 12 and 19 characters
    assert call.cost_usd > 0


def test_an_org_brings_its_own_sealed_provider_key_and_alias(
    records: Records,
    upstream: Upstream,
    database_url: str,
    client_for: Callable[[str], OpenAI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    org = "org_byok"
    org_key = "sk-org-own-key-5d1c"
    sealed = seal_provider_key(SECRET, org, "fake", org_key)
    records.put_org_gateway(
        OrgGatewayRecord(
            id=org,
            org_id=org,
            aliases={"house": "fake/fake-mini"},
            provider_keys={"fake": sealed},
        )
    )
    seeded = records.runner(org_id=org)
    caplog.set_level(logging.DEBUG)
    client_for(seeded.token).chat.completions.create(
        model="house", messages=[{"role": "user", "content": "hello"}]
    )
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {org_key}"
    assert json.loads(sent.content)["model"] == "fake-mini"
    # At rest only the sealed form exists, and it opens for this org and provider only.
    raw = (
        sqlite3.connect(database_url.removeprefix("sqlite:///"))
        .execute("SELECT doc FROM objects WHERE kind = 'org_gateway' AND id = ?", (org,))
        .fetchone()[0]
    )
    assert org_key not in raw and sealed in raw
    assert open_provider_key(SECRET, org, "fake", sealed) == org_key
    with pytest.raises(StoreError):
        open_provider_key(SECRET, "org_other", "fake", sealed)
    with pytest.raises(StoreError):
        open_provider_key(SECRET, org, "openai", sealed)
    assert org_key not in caplog.text

    # Another org in the same gateway still uses the gateway's own key.
    other = records.runner()
    client_for(other.token).chat.completions.create(
        model="fake-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {FAKE_PROVIDER_KEY}"
