"""Steps 3, 7 and 8 through a real gateway (in-process counters): rate limits and their
headers, org/team/key budgets seeded from recorded spend, the output cap a budget can pay,
signed alert webhooks, and what happens when the counters' Redis is unreachable."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import create_gateway
from paddock.fake_provider import FakeState
from paddock_core import ApiKeyRecord, OrgGatewayRecord, PutObject, Role, hash_token, mint_api_key
from tests.gateway.conftest import fake_settings
from tests.gateway.harness import Records, loopback_transport
from tests.gateway.processes import free_port
from tests.support.servers import serve_app

WEBHOOK_SECRET = "whsec_budget_tests"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def hooks() -> Iterator[tuple[str, list[tuple[bytes, str]]]]:
    """A webhook receiver on loopback: (its URL, the (body, signature) pairs it got)."""
    got: list[tuple[bytes, str]] = []

    async def receive(request: Request) -> Response:
        got.append((await request.body(), request.headers.get("x-paddock-signature", "")))
        return Response(status_code=204)

    with serve_app(Starlette(routes=[Route("/hook", receive, methods=["POST"])])) as url:
        yield f"{url}/hook", got


@pytest.fixture(scope="module")
def url(database_url: str, fake_provider_url: str) -> Iterator[str]:
    settings = fake_settings(
        database_url, fake_provider_url, alert_webhook_secret=SecretStr(WEBHOOK_SECRET)
    )
    with serve_app(create_gateway(settings, upstream_transport=loopback_transport())) as served:
        yield served


def _client(url: str, token: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=10)


def _org(records: Records, policy: dict[str, dict[str, Any]]) -> str:
    org_id = f"org_{time.monotonic_ns()}"
    records.put_org_gateway(OrgGatewayRecord(id=org_id, org_id=org_id, policy=policy))
    return org_id


def _key(records: Records, org_id: str, team_id: str) -> tuple[str, str]:
    key_id, secret = mint_api_key()
    record = ApiKeyRecord(
        id=key_id,
        org_id=org_id,
        role=Role.GATEWAY,
        name="budgeted",
        key_hash=hash_token(secret),
        created_by="test",
        team_id=team_id,
    )
    records._run(lambda store: store.apply([PutObject("api_key", record)]))  # noqa: SLF001
    return key_id, secret


def test_a_rate_limit_answers_429_with_retry_after_and_headers_on_every_answer(
    url: str, records: Records
) -> None:
    org_id = _org(records, {"rate_limit": {"org_requests": 2, "window_s": 60}})
    with _client(url, records.runner(org_id=org_id).token) as client:
        plain = client.chat.completions.with_raw_response.create(model="fake-gpt", messages=HELLO)
        assert plain.headers["x-ratelimit-limit-requests"] == "2"
        assert plain.headers["x-ratelimit-remaining-requests"] == "1"
        with client.chat.completions.with_streaming_response.create(
            model="fake-gpt", messages=HELLO, stream=True
        ) as streamed:
            assert streamed.headers["x-ratelimit-remaining-requests"] == "0"
            assert float(streamed.headers["x-ratelimit-reset-requests"].rstrip("s")) > 0
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="fake-gpt", messages=HELLO)
    refused = caught.value
    assert refused.code == "rate_limited"
    assert refused.body["step"] == "rate_limit"  # type: ignore[index]
    assert 1 <= int(refused.response.headers["retry-after"]) <= 60
    assert refused.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_token_limit_counts_the_input_estimate(url: str, records: Records) -> None:
    org_id = _org(records, {"rate_limit": {"runner_tokens": 100}})
    with _client(url, records.runner(org_id=org_id).token) as client:
        long = [{"role": "user", "content": "word " * 200}]  # ~250 tokens
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="fake-gpt", messages=long)  # type: ignore[arg-type]
        assert "needs 250" in caught.value.message
        ok = client.chat.completions.with_raw_response.create(model="fake-gpt", messages=HELLO)
        assert ok.headers["x-ratelimit-limit-tokens"] == "100"


def test_an_org_daily_budget_counts_what_was_recorded_before(url: str, records: Records) -> None:
    org_id = _org(records, {"budget": {"org_daily_usd": 0.01}})
    records.record_call(org_id, 0.0099)  # earlier today, before any counter existed
    with _client(url, records.runner(org_id=org_id).token) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="fake-gpt", messages=HELLO)
    assert caught.value.type == "budget_exceeded"
    assert caught.value.code == "org_daily_budget_exhausted"
    details = caught.value.body["details"]  # type: ignore[index]
    assert details["bucket"].startswith(f"org:{org_id}:day:")
    assert details["remaining_usd"] == pytest.approx(0.0001)


def test_a_team_override_and_a_key_budget_bind_their_own_callers(
    url: str, records: Records
) -> None:
    policy = {"budget": {"team_daily_usd": 5.0, "teams": {"team_tight": {"daily_usd": 0.002}}}}
    org_id = _org(records, policy)
    records.record_call(org_id, 0.0019, team_id="team_tight")
    _, tight = _key(records, org_id, "team_tight")
    _, roomy = _key(records, org_id, "team_roomy")
    with _client(url, tight) as client, pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="fake-gpt", messages=HELLO)
    assert caught.value.code == "team_daily_budget_exhausted"
    with _client(url, roomy) as client:
        assert client.chat.completions.create(model="fake-gpt", messages=HELLO).choices


def test_a_stream_without_a_cap_stops_where_the_session_budget_does(
    url: str, records: Records, fake_state: FakeState
) -> None:
    seeded = records.runner(session_budget_usd=0.0008)  # the input, then ~22 output tokens
    long_reply = [{"role": "user", "content": "ECHO:" + "x" * 300}]
    with _client(url, seeded.token) as client:
        stream = client.chat.completions.create(
            model="fake-gpt", messages=long_reply, stream=True  # type: ignore[arg-type]
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    granted = fake_state.last_bodies[-1]["max_completion_tokens"]
    assert 16 <= granted <= 25 and 0 < len(text) <= granted * 4
    assert seeded.session_id is not None
    assert 0 < records.get_session(seeded.session_id).spent_usd <= 0.0008


def test_alerts_are_audited_once_and_posted_signed(
    url: str, records: Records, hooks: tuple[str, list[tuple[bytes, str]]]
) -> None:
    hook_url, got = hooks
    policy = {
        "budget": {
            "org_monthly_usd": 0.001,
            "alert_thresholds": [0.1, 0.2],
            "alert_webhook_url": hook_url,
        }
    }
    org_id = _org(records, policy)
    with _client(url, records.runner(org_id=org_id).token) as client:
        for _ in range(2):  # each ~$0.0002: both thresholds crossed by the first
            client.chat.completions.create(model="fake-gpt", messages=HELLO, max_tokens=20)
    alerts = [e for e in records.audit_of(org_id) if e.type == "budget.alert"]
    assert sorted(e.data["threshold"] for e in alerts) == [0.1, 0.2]
    deadline = time.monotonic() + 10
    mine: list[tuple[bytes, str]] = []
    while len(mine) < 2 and time.monotonic() < deadline:
        mine = [(b, s) for b, s in got if json.loads(b)["org_id"] == org_id]
        time.sleep(0.05)
    assert len(mine) == 2
    for body, signature in mine:
        expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected}"
        assert json.loads(body)["type"] == "budget.alert"


@pytest.mark.parametrize(("mode", "status"), [("closed", 503), ("open", 200)])
def test_unreachable_counters_fail_closed_by_default_or_open_when_configured(
    database_url: str, fake_provider_url: str, records: Records, mode: str, status: int
) -> None:
    settings = fake_settings(
        database_url,
        fake_provider_url,
        redis_url=f"redis://127.0.0.1:{free_port()}",  # nothing listens there
        counters_failure_mode=mode,
    )
    org_id = _org(records, {"rate_limit": {"org_requests": 100}})
    seeded = records.runner(org_id=org_id, session_budget_usd=1.0)
    app = create_gateway(settings, upstream_transport=loopback_transport())
    with serve_app(app) as served, _client(served, seeded.token) as client:
        raw = client.chat.completions.with_raw_response
        if status == 200:
            assert raw.create(model="fake-gpt", messages=HELLO).status_code == 200
            return
        with pytest.raises(openai.InternalServerError) as caught:
            raw.create(model="fake-gpt", messages=HELLO)
    assert caught.value.status_code == 503 and caught.value.code == "counters_unavailable"
    assert caught.value.response.headers["retry-after"] == "1"
    assert records.calls(seeded.runner_id) == []
