"""API keys at the gateway: a key's role decides whether it may call models; every call is
attributed to its org, key, team and user (what budgets and spend views group by)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import openai
import pytest
from openai import OpenAI

from paddock_core import (
    LlmCallRecord,
    Role,
    UpdateObject,
    utcnow,
)
from tests.gateway.harness import Records

HELLO: list[dict[str, str]] = [{"role": "user", "content": "ECHO:keyed"}]
ORG = "org_keys"


def put_key(
    records: Records,
    role: Role,
    *,
    team_id: str | None = None,
    user_id: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    return records.api_key(ORG, role, team_id=team_id, user_id=user_id, expires_at=expires_at)


def calls_of(records: Records, key_id: str) -> list[LlmCallRecord]:
    calls = records._run(lambda store: store.list_llm_calls(org_id=ORG))
    return [c for c in calls if c.key_id == key_id]


def test_gateway_key_calls_models_and_is_attributed(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    key_id, secret = put_key(records, Role.GATEWAY, team_id="team_a", user_id="user_a")
    reply = client_for(secret).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert "ECHO:keyed" in (reply.choices[0].message.content or "")
    [call] = calls_of(records, key_id)
    assert (call.org_id, call.team_id, call.user_id, call.runner_id) == (
        ORG,
        "team_a",
        "user_a",
        None,
    )
    assert call.cost_usd > 0


def test_viewer_key_cannot_call_models(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    _, secret = put_key(records, Role.VIEWER)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(secret).chat.completions.create(model="fake-gpt", messages=HELLO)
    assert "cannot call models" in caught.value.message


def test_revoked_expired_and_unknown_keys_are_401(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    key_id, secret = put_key(records, Role.GATEWAY)
    client_for(secret).chat.completions.create(model="fake-gpt", messages=HELLO)
    records._run(
        lambda store: store.apply([UpdateObject("api_key", key_id, {"revoked_at": utcnow()})])
    )
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        client_for(secret).chat.completions.create(model="fake-gpt", messages=HELLO)
    _, expired = put_key(records, Role.GATEWAY, expires_at=utcnow() - timedelta(seconds=1))
    with pytest.raises(openai.AuthenticationError, match="expired"):
        client_for(expired).chat.completions.create(model="fake-gpt", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        client_for(secret[:-4] + "abcd").chat.completions.create(model="fake-gpt", messages=HELLO)
