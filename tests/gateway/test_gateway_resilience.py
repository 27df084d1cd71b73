"""Retries, circuit breakers, fallbacks, keepalives and streams that die, against the real fake
provider failing on demand (FLAKY, FAIL, CUT, FIRST) and a dead loopback port."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from gateway import create_gateway
from paddock.fake_provider import FakeState
from tests.gateway.conftest import fake_settings
from tests.gateway.harness import ADMIN_KEY, Records, Seeded, loopback_transport
from tests.support.servers import serve_app

DEAD = "http://127.0.0.1:9/v1"  # discard port: nothing listens, connections are refused


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


@pytest.fixture(scope="module")
def retrying_url(database_url: str, fake_provider_url: str) -> Iterator[str]:
    settings = fake_settings(
        database_url,
        fake_provider_url,
        max_retries=2,
        retry_base_s=0.01,
        stream_keepalive_s=0.05,
    )
    with serve_app(create_gateway(settings, upstream_transport=loopback_transport())) as url:
        yield url


@pytest.fixture(scope="module")
def failover_url(database_url: str, fake_provider_url: str) -> Iterator[str]:
    settings = fake_settings(
        database_url,
        fake_provider_url,
        provider_base_urls={"fake": DEAD, "fake-anthropic": fake_provider_url},
        model_fallbacks={"fake-mini": ["fake-claude"]},
        max_retries=1,
        retry_base_s=0.01,
        breaker_failures=2,
        breaker_open_s=0.4,
    )
    with serve_app(create_gateway(settings, upstream_transport=loopback_transport())) as url:
        yield url


def _openai(url: str, token: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=10)


def _seen(fake_state: FakeState, path: str) -> int:
    return fake_state.requests.get(path, 0)


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_transient_failures_are_retried_until_they_pass(
    stream: bool, retrying_url: str, runner: Seeded, records: Records, fake_state: FakeState
) -> None:
    before = _seen(fake_state, "/v1/chat/completions")
    with _openai(retrying_url, runner.token) as client:
        reply = client.chat.completions.create(
            model="fake-gpt",
            messages=[{"role": "user", "content": f"FLAKY:retry-{stream}:2 ECHO:ok"}],
            stream=stream,
        )
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices)  # type: ignore[union-attr]
        else:
            text = reply.choices[0].message.content or ""  # type: ignore[union-attr]
    assert text == "Fake reply. ECHO:ok"
    assert _seen(fake_state, "/v1/chat/completions") - before == 3  # two 503s, then the answer
    [call] = records.calls(runner.runner_id)
    assert (call.status, call.stream) == (200, stream)


def test_retries_give_up_and_the_last_failure_is_the_answer(
    retrying_url: str, runner: Seeded, records: Records, fake_state: FakeState
) -> None:
    before = _seen(fake_state, "/v1/chat/completions")
    with (
        _openai(retrying_url, runner.token) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "FAIL:503"}]
        )
    assert caught.value.status_code == 502
    assert _seen(fake_state, "/v1/chat/completions") - before == 3
    [call] = records.calls(runner.runner_id)
    assert (call.status, call.cost_usd) == (503, 0.0)


def test_a_client_error_is_never_retried(
    retrying_url: str, runner: Seeded, fake_state: FakeState
) -> None:
    before = _seen(fake_state, "/v1/chat/completions")
    with _openai(retrying_url, runner.token) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "FAIL:400"}]
        )
    assert _seen(fake_state, "/v1/chat/completions") - before == 1


# --- streams: keepalives, and streams that die mid-way ------------------------------------------


def test_keepalives_flow_while_the_first_token_is_slow(retrying_url: str, runner: Seeded) -> None:
    body = {
        "model": "fake-gpt",
        "stream": True,
        "messages": [{"role": "user", "content": "FIRST:300 ECHO:late"}],
    }
    headers = {"Authorization": f"Bearer {runner.token}"}
    lines: list[str] = []
    with httpx.stream(
        "POST", f"{retrying_url}/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        lines.extend(response.iter_lines())
    keepalives = [i for i, line in enumerate(lines) if line.startswith(":")]
    first_text = next(i for i, line in enumerate(lines) if '"content": "Fake' in line)
    assert len(keepalives) >= 3
    assert all(i < first_text for i in keepalives)
    assert '"role": "assistant"' in lines[0]  # the role chunk came first, at once
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
    # SDKs skip SSE comments: the same slow stream reads as usual.
    with _openai(retrying_url, runner.token) as client:
        chunks = client.chat.completions.create(
            model="fake-gpt",
            messages=body["messages"],
            stream=True,  # type: ignore[arg-type]
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Fake reply. ECHO:late"


def test_openai_stream_cut_by_the_provider_is_billed_for_what_was_streamed(
    retrying_url: str, runner: Seeded, records: Records
) -> None:
    prompt = "Answer. CUT:3"
    received: list[str] = []
    with _openai(retrying_url, runner.token) as client, pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": prompt}], stream=True
        ):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "broke off the stream" in caught.value.message
    [call] = records.wait_for_calls(runner.runner_id, 1)
    assert call.status == 502
    assert call.prompt_tokens == tokens(prompt)
    assert call.completion_tokens == tokens("".join(received)) > 0
    assert call.cost_usd > 0  # never $0 for a stream that produced tokens
    [event] = records.audit(runner_id=runner.runner_id)
    assert event.data["usage"] == "estimated"


def test_anthropic_stream_cut_by_the_provider_is_billed_with_the_input_it_told(
    retrying_url: str, runner: Seeded, records: Records
) -> None:
    prompt = "Answer. CUT:2 CACHED:1"
    with (
        Anthropic(base_url=retrying_url, api_key=runner.token, max_retries=0) as client,
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model="fake-claude", max_tokens=50, messages=[{"role": "user", "content": prompt}]
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass
    [call] = records.wait_for_calls(runner.runner_id, 1)
    assert call.status == 502
    # message_start told the input counts; the output is counted from the two deltas.
    assert (call.prompt_tokens, call.cached_tokens) == (tokens(prompt), 1)
    assert call.completion_tokens == tokens("Fake reply ")
    assert call.cost_usd > 0


# --- fallbacks and the breaker ----------------------------------------------------------------


def test_a_dead_provider_falls_back_to_the_configured_model(
    failover_url: str, runner: Seeded, records: Records
) -> None:
    with _openai(failover_url, runner.token) as client:
        reply = client.chat.completions.create(
            model="fake-mini", messages=[{"role": "user", "content": "hi ECHO:fb"}]
        )
    assert reply.choices[0].message.content == "Fake reply. ECHO:fb"
    [call] = records.calls(runner.runner_id)
    assert (call.provider, call.model, call.status) == ("fake-anthropic", "fake-claude", 200)


def test_breaker_opens_fails_fast_then_probes_and_closes(
    failover_url: str, runner: Seeded, fake_state: FakeState
) -> None:
    path = "/v1/messages"
    with _openai(failover_url, runner.token) as client:
        with pytest.raises(openai.APIStatusError):  # two 500s: the breaker opens
            client.chat.completions.create(
                model="fake-claude", messages=[{"role": "user", "content": "FAIL:500"}]
            )
        seen = _seen(fake_state, path)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model="fake-claude", messages=[{"role": "user", "content": "fine now"}]
            )
        assert caught.value.status_code == 503
        assert caught.value.code == "provider_unavailable"  # type: ignore[attr-defined]
        assert caught.value.response.headers["retry-after"] == "1"
        assert _seen(fake_state, path) == seen  # failed fast: nothing reached the provider

        metrics = httpx.get(
            f"{failover_url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ).text
        assert 'paddock_gateway_breaker_state{provider="fake-anthropic"} 2.0' in metrics

        time.sleep(0.45)  # open_s passes: one probe may go through, and it succeeds
        reply = client.chat.completions.create(
            model="fake-claude", messages=[{"role": "user", "content": "fine now"}]
        )
        assert reply.choices[0].message.content
        assert _seen(fake_state, path) == seen + 1
    metrics = httpx.get(
        f"{failover_url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ).text
    assert 'paddock_gateway_breaker_state{provider="fake-anthropic"} 0.0' in metrics


def test_metrics_need_the_admin_key_and_count_by_provider_model_org(
    retrying_url: str, runner: Seeded
) -> None:
    assert httpx.get(f"{retrying_url}/metrics").status_code == 401
    assert (
        httpx.get(
            f"{retrying_url}/metrics", headers={"Authorization": f"Bearer {runner.token}"}
        ).status_code
        == 401
    )
    with _openai(retrying_url, runner.token) as client:
        client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "m"}]
        )
    text = httpx.get(
        f"{retrying_url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ).text
    labels = 'endpoint="chat.completions",model="fake-gpt",org="org_gateway_tests",provider="fake"'
    assert f'paddock_gateway_requests_total{{{labels},status="200"}}' in text
    assert "paddock_gateway_tokens_total{" in text and 'kind="prompt"' in text
    assert "paddock_gateway_cost_usd_total{" in text
    assert "paddock_gateway_retries_total{" in text
    assert "paddock_gateway_request_seconds_bucket{" in text
    assert "paddock_gateway_overhead_seconds_bucket{" in text


# --- answers that do not wait on the disk -------------------------------------------------------


@pytest.fixture(scope="module")
def behind_url(database_url: str, fake_provider_url: str) -> Iterator[str]:
    settings = fake_settings(database_url, fake_provider_url, durable_before_answer=False)
    with serve_app(create_gateway(settings, upstream_transport=loopback_transport())) as url:
        yield url


def test_written_behind_calls_land_and_budgets_count_them_meanwhile(
    behind_url: str, records: Records
) -> None:
    seeded = records.runner(session_budget_usd=0.0004)  # one call leaves too little
    with _openai(behind_url, seeded.token) as client:
        reply = client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        # Whether or not the write has landed yet, the next call sees the spend.
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(
                model="fake-gpt", messages=[{"role": "user", "content": "again"}]
            )
    assert caught.value.code == "session_budget_exhausted"  # type: ignore[attr-defined]
    [call] = records.wait_for_calls(seeded.runner_id, 1)
    assert call.cost_usd > 0 and call.status == 200
    [event, *_, denied] = [
        e for e in records.audit(runner_id=seeded.runner_id) if not e.type.startswith("budget.")
    ]
    assert event.data["call_id"] == call.id
    assert (denied.type, denied.data["step"]) == ("policy.denied", "session_budget")
