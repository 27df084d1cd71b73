"""The exact-match response cache: off by default, on per org, never shared across orgs; a hit
costs nothing, is recorded as a hit, and says so in `X-Paddock-Cache`."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from openai import OpenAI

from paddock.fake_provider import FakeState
from paddock_core import OrgGatewayRecord
from tests.gateway.harness import Records

ORG_A, ORG_B, ORG_OFF = "org_cache_a", "org_cache_b", "org_cache_off"
PATH = "/v1/chat/completions"


def _enable(records: Records, org_id: str) -> None:
    records.put_org_gateway(OrgGatewayRecord(id=org_id, org_id=org_id, cache_enabled=True))


def _ask(client: OpenAI, content: str, **extra: object) -> tuple[str | None, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="fake-gpt",
        messages=[{"role": "user", "content": content}],
        **extra,  # type: ignore[arg-type]
    )
    return raw.headers.get("x-paddock-cache"), raw.parse().choices[0].message.content or ""


def test_a_hit_is_free_recorded_and_never_crosses_orgs(
    records: Records, fake_state: FakeState, client_for: Callable[[str], OpenAI]
) -> None:
    _enable(records, ORG_A)
    _enable(records, ORG_B)
    a = records.runner(org_id=ORG_A)
    b = records.runner(org_id=ORG_B)
    prompt = "Cache me. ECHO:cached-1"
    before = fake_state.requests.get(PATH, 0)

    assert _ask(client_for(a.token), prompt) == ("MISS", "Fake reply. ECHO:cached-1")
    assert _ask(client_for(a.token), prompt) == ("HIT", "Fake reply. ECHO:cached-1")
    # Key order and whitespace do not matter; `user` does not shape the answer.
    assert _ask(client_for(a.token), prompt, user="someone")[0] == "HIT"
    assert fake_state.requests.get(PATH, 0) - before == 1

    # The same request from another org is its own entry: it goes upstream.
    assert _ask(client_for(b.token), prompt)[0] == "MISS"
    assert fake_state.requests.get(PATH, 0) - before == 2

    first, hit, _ = records.calls(a.runner_id)
    assert (first.cache_hit, hit.cache_hit) == (False, True)
    assert first.cost_usd > 0 and hit.cost_usd == 0.0
    assert (hit.prompt_tokens, hit.completion_tokens) == (
        first.prompt_tokens,
        first.completion_tokens,
    )
    [b_call] = records.calls(b.runner_id)
    assert not b_call.cache_hit and b_call.org_id == ORG_B


def test_a_different_request_misses(records: Records, client_for: Callable[[str], OpenAI]) -> None:
    _enable(records, ORG_A)
    a = records.runner(org_id=ORG_A)
    assert _ask(client_for(a.token), "one question")[0] == "MISS"
    assert _ask(client_for(a.token), "one question", temperature=0.5)[0] == "MISS"
    assert _ask(client_for(a.token), "one question", temperature=0.5)[0] == "HIT"


def test_streams_are_cached_and_replayed_whole(
    gateway_url: str, records: Records, fake_state: FakeState
) -> None:
    _enable(records, ORG_A)
    a = records.runner(org_id=ORG_A)
    body = {
        "model": "fake-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Stream and cache. ECHO:s-1"}],
    }
    headers = {"Authorization": f"Bearer {a.token}"}
    before = fake_state.requests.get(PATH, 0)
    first = httpx.post(f"{gateway_url}{PATH}", json=body, headers=headers)
    second = httpx.post(f"{gateway_url}{PATH}", json=body, headers=headers)
    assert (first.headers["x-paddock-cache"], second.headers["x-paddock-cache"]) == ("MISS", "HIT")
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.content == first.content
    assert b"ECHO:s-1" in second.content and second.content.endswith(b"data: [DONE]\n\n")
    assert fake_state.requests.get(PATH, 0) - before == 1
    miss, hit = records.calls(a.runner_id)
    assert (miss.cache_hit, hit.cache_hit, hit.cost_usd, hit.stream) == (False, True, 0.0, True)


def test_the_cache_is_off_unless_the_org_turns_it_on(
    records: Records, fake_state: FakeState, client_for: Callable[[str], OpenAI]
) -> None:
    off = records.runner(org_id=ORG_OFF)
    before = fake_state.requests.get(PATH, 0)
    assert _ask(client_for(off.token), "not cached")[0] is None
    assert _ask(client_for(off.token), "not cached")[0] is None
    assert fake_state.requests.get(PATH, 0) - before == 2
    assert not any(c.cache_hit for c in records.calls(off.runner_id))
