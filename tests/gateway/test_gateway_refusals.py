"""Calls the gateway refuses or that fail upstream: status, OpenAI error body, record."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from paddock.fake_provider import FakeState
from paddock_core import mint_token
from tests.gateway.conftest import MAX_BODY
from tests.gateway.harness import Records, Seeded

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def error_of(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [mint_token("prt"), "sk-not-a-paddock-key"])
def test_unknown_key_is_401(key: str, client_for: Callable[[str], OpenAI]) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(key).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert caught.value.code == "invalid_api_key"
    assert key not in caught.value.message


def test_missing_key_is_401(gateway_url: str) -> None:
    response = httpx.post(f"{gateway_url}/v1/chat/completions", json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert error_of(response)["type"] == "authentication_error"


def test_stopping_a_runner_revokes_its_token_at_once(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    client = client_for(runner.token)
    client.chat.completions.create(model="fake-gpt", messages=HELLO)
    records.set_state(runner.runner_id, "stopped")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="fake-gpt", messages=HELLO)
    assert "runner token is no longer valid (runner is stopped)" in caught.value.message
    assert len(records.calls(runner.runner_id)) == 1


@pytest.mark.parametrize(
    ("state", "deleted", "shown"),
    [
        ("failed", False, "failed"),
        ("stopped", False, "stopped"),
        ("ready", True, "deleted"),
    ],
)
def test_runner_that_is_not_live_is_401(
    state: str, deleted: bool, shown: str, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    seeded = records.runner(state=state, deleted=deleted)
    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(seeded.token).models.list()
    assert f"(runner is {shown})" in caught.value.message


def test_a_provisioning_runner_can_make_its_boot_round_trip(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    seeded = records.runner(state="provisioning", with_session=False)
    models = [m.id for m in client_for(seeded.token).models.list()]
    assert models[:2] == ["fake-gpt", "fake-mini"]


def test_a_provisioning_runner_cannot_spend(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    seeded = records.runner(state="provisioning", with_session=False)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(seeded.token).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert caught.value.code == "runner_not_ready"
    assert records.calls(seeded.runner_id) == []


# --- budgets ----------------------------------------------------------------------------------


def test_exhausted_session_budget_is_403_and_nothing_is_forwarded(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    seeded = records.runner(session_budget_usd=0.01, session_spent_usd=0.01)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(seeded.token).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert caught.value.status_code == 403
    assert (caught.value.type, caught.value.code) == ("budget_exceeded", "session_budget_exhausted")
    assert records.calls(seeded.runner_id) == []


def test_exhausted_runner_budget_is_403(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    seeded = records.runner(budget_usd=0.5, spent_usd=0.75, with_session=False)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(seeded.token).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert caught.value.code == "runner_budget_exhausted"


def test_a_session_budget_caps_max_tokens_then_refuses_what_it_cannot_pay(
    records: Records, client_for: Callable[[str], OpenAI], fake_state: FakeState
) -> None:
    """fake-gpt: $5 / $15 per Mtok. $0.0004 pays the input of "hello" and ~25 output tokens:
    the gateway asks for no more; after the reply (~11 tokens) what is left cannot pay the
    16 output tokens a reply needs at least."""
    seeded = records.runner(session_budget_usd=0.0004)
    client = client_for(seeded.token)
    reply = client.chat.completions.create(model="fake-gpt", messages=HELLO)
    assert reply.choices[0].message.content
    granted = fake_state.last_bodies[-1]["max_completion_tokens"]
    assert 16 <= granted < 30
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="fake-gpt", messages=HELLO, stream=True)
    assert caught.value.code == "session_budget_exhausted"
    details = caught.value.body["details"]  # type: ignore[index]
    assert details["bucket"] == f"session:{seeded.session_id}"
    assert details["remaining_usd"] < details["needed_usd"]
    [call] = records.calls(seeded.runner_id)
    assert seeded.session_id is not None
    spent = records.get_session(seeded.session_id).spent_usd
    assert spent == pytest.approx(call.cost_usd) and spent <= 0.0004
    kinds = [e.type for e in records.audit(runner_id=seeded.runner_id)]
    assert kinds.count("budget.exhausted") == 1


def test_a_client_cap_the_budget_cannot_pay_is_refused_not_lowered(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    seeded = records.runner(session_budget_usd=0.0004)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(seeded.token).chat.completions.create(
            model="fake-gpt", messages=HELLO, max_tokens=1000
        )
    assert caught.value.code == "session_budget_exhausted"
    assert "max_tokens 1000" in caught.value.message
    assert records.calls(seeded.runner_id) == []


# --- bad input --------------------------------------------------------------------------------


def test_unknown_model_is_400_naming_the_model(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(runner.token).chat.completions.create(model="nope-9000", messages=HELLO)
    assert caught.value.param == "model"
    assert caught.value.code == "model_not_found"
    assert "nope-9000" in caught.value.message
    assert records.calls(runner.runner_id) == []


def test_an_api_the_provider_does_not_offer_is_400(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(runner.token).embeddings.create(model="fake-claude", input="hello")
    assert caught.value.code == "endpoint_not_supported"
    assert caught.value.param == "model"
    assert "does not offer the embeddings API" in caught.value.message
    assert records.calls(runner.runner_id) == []


GOOD = b'"model": "fake-gpt", "messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"\xff\xfe\x00garbage", "invalid_json", None),
        (b"[" * 100_000, "invalid_json", None),
        (b"", "invalid_json", None),
        (b"[1, 2]", "invalid_body", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "invalid_field", "model"),
        (
            b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}',
            "invalid_field",
            "model",
        ),
        (b'{"model": "fake-gpt", "messages": []}', "invalid_field", "messages"),
        (b'{"model": "fake-gpt", "messages": "hi"}', "invalid_field", "messages"),
        (b"{" + GOOD + b', "stream": "yes"}', "invalid_field", "stream"),
        (
            b"{" + GOOD + b', "stream": true, "stream_options": 1}',
            "invalid_field",
            "stream_options",
        ),
    ],
)
def test_malformed_body_is_400_naming_the_problem(
    gateway_url: str, runner: Seeded, body: bytes, code: str, param: str | None
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {runner.token}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)


def test_unknown_route_is_404_in_openai_shape(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"


# --- upstream failures ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_server_error_is_502_and_recorded_with_its_status(
    stream: bool, runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client_for(runner.token).chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "FAIL:500"}], stream=stream
        )
    assert caught.value.status_code == 502
    assert (caught.value.type, caught.value.code) == ("upstream_error", "upstream_status")
    assert "500" in caught.value.message

    [call] = records.calls(runner.runner_id)
    assert (call.status, call.stream) == (500, stream)
    assert (call.prompt_tokens, call.completion_tokens, call.cost_usd) == (0, 0, 0.0)
    [event] = records.audit(runner_id=runner.runner_id)
    assert (event.type, event.data["status"]) == ("llm.call", 500)


def test_upstream_rate_limit_is_passed_through(
    runner: Seeded, records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(runner.token).chat.completions.create(
            model="fake-mini", messages=[{"role": "user", "content": "FAIL:429"}]
        )
    assert caught.value.type == "rate_limit_error"
    [call] = records.calls(runner.runner_id)
    assert call.status == 429


@pytest.mark.parametrize("declared", [True, False])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_oversized_body_is_413_in_the_clients_shape(
    gateway_url: str, runner: Seeded, records: Records, declared: bool, path: str
) -> None:
    big = b'{"model": "fake-gpt", "messages": [{"role": "user", "content": "' + b"x" * MAX_BODY
    headers = {"Authorization": f"Bearer {runner.token}", "content-type": "application/json"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the gateway counts as it reads
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    response = httpx.post(
        f"{gateway_url}{path}", content=big if declared else chunks(), headers=headers
    )
    assert response.status_code == 413
    body = response.json()
    if path == "/v1/messages":
        assert body["error"]["type"] == "request_too_large"
        assert body["type"] == "error"
    else:
        assert error_of(response)["code"] == "request_too_large"
    assert f"limit of {MAX_BODY} bytes" in body["error"]["message"]
    assert records.calls(runner.runner_id) == []


def test_unknown_model_in_the_responses_api_names_the_model(
    runner: Seeded, client_for: Callable[[str], OpenAI]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(runner.token).responses.create(model="nope-9000", input="hi")
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
