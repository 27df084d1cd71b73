"""Budgets and rate limits across two gateway processes sharing one real Redis.

Two `python -m paddock gateway` processes and `python -m paddock fake-provider` on loopback,
one SQLite file, one Redis (behind a loopback relay the last test cuts). The real OpenAI SDK
(async, bounded concurrency) drives them. What must hold under any interleaving: recorded
spend never exceeds a budget, every call completes or is refused with a 403 (429 for rate
limits), no reservation outlives its call, and Redis gone means 503, never a double charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import openai
import pytest

from paddock_core import OrgGatewayRecord, new_id
from tests.gateway.counters_support import keys_under, redis_client
from tests.gateway.harness import ADMIN_KEY, Records
from tests.gateway.processes import RedisRelay, free_port, gateway_env, paddock_process

pytestmark = pytest.mark.redis

_PROMPT = "Summarise the incident report. " * 64  # ~2 KB: ~500 input tokens, ~$0.0025
_SESSION_BUDGET = 0.05
_ORG_DAILY = 0.10


@dataclass(frozen=True)
class Cluster:
    urls: tuple[str, str]
    records: Records
    relay: RedisRelay
    prefix: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    client = redis_client()
    prefix = f"paddock-test:{new_id('shared')}:"
    print(f"redis key prefix: {prefix}")
    directory: Path = tmp_path_factory.mktemp("shared")
    database_url = f"sqlite:///{directory / 'paddock.db'}"
    records = Records(database_url)
    records.runner()  # creates the schema before two processes race to
    where = client.connection_pool.connection_kwargs
    relay = RedisRelay(str(where["host"]), int(where.get("port", 6379)))
    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    with (
        paddock_process(
            ["fake-provider", "--port", str(fake_port)],
            {},
            f"{fake_url}/v1/models",
            directory / "fake.log",
        ),
        contextlib.ExitStack() as stack,
    ):
        urls = []
        for name in ("a", "b"):
            gw_port = free_port()
            env = gateway_env(
                port=gw_port,
                database_url=database_url,
                redis_url=f"redis://127.0.0.1:{relay.port}",
                prefix=prefix,
                fake_url=fake_url,
                admin_key=ADMIN_KEY,
            )
            url = f"http://127.0.0.1:{gw_port}"
            stack.enter_context(
                paddock_process(["gateway"], env, f"{url}/healthz", directory / f"gw-{name}.log")
            )
            urls.append(url)
        yield Cluster((urls[0], urls[1]), records, relay, prefix)
    relay.close()
    for key in keys_under(client, prefix):
        client.delete(key)
    client.close()


def _org(records: Records, policy: dict[str, dict[str, object]]) -> str:
    org_id = new_id("org")
    records.put_org_gateway(OrgGatewayRecord(id=org_id, org_id=org_id, policy=policy))
    return org_id


async def _drive(
    urls: tuple[str, str], tokens: list[str], count: int, *, content: str, concurrency: int = 16
) -> list[int | Exception]:
    """`count` calls, alternating stream and not, gateways and tokens; each one's status."""
    clients = [
        openai.AsyncOpenAI(base_url=f"{u}/v1", api_key=t, max_retries=0, timeout=30)
        for u, t in itertools.product(urls, tokens)
    ]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int | Exception:
        client = clients[i % len(clients)]
        extra: dict[str, object] = {} if i % 3 else {"max_tokens": 64}
        async with gate:
            try:
                if i % 2:
                    stream = await client.chat.completions.create(
                        model="fake-gpt",
                        messages=[{"role": "user", "content": f"{content} #{i}"}],
                        stream=True,
                        stream_options={"include_usage": True},
                        **extra,  # type: ignore[arg-type]
                    )
                    async for _ in stream:
                        pass
                else:
                    await client.chat.completions.create(
                        model="fake-gpt",
                        messages=[{"role": "user", "content": f"{content} #{i}"}],
                        **extra,  # type: ignore[arg-type]
                    )
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code
            except Exception as exc:  # anything else is a failure the test reports
                return exc

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        for client in clients:
            await client.close()


def test_concurrent_calls_never_spend_past_a_session_or_an_org_budget(cluster: Cluster) -> None:
    org_id = _org(cluster.records, {"budget": {"org_daily_usd": _ORG_DAILY}})
    seeded = [
        cluster.records.runner(org_id=org_id, session_budget_usd=_SESSION_BUDGET) for _ in range(3)
    ]
    results = asyncio.run(
        _drive(cluster.urls, [s.token for s in seeded], 200, content=_PROMPT, concurrency=24)
    )
    assert all(r in (200, 403) for r in results), [r for r in results if r not in (200, 403)]
    assert results.count(200) > 0 and results.count(403) > 0
    for s in seeded:
        assert s.session_id is not None
        assert cluster.records.get_session(s.session_id).spent_usd <= _SESSION_BUDGET + 1e-9
    recorded = cluster.records.spend_today(org_id)
    assert 0 < recorded <= _ORG_DAILY + 1e-9
    calls = [c for s in seeded for c in cluster.records.calls(s.runner_id)]
    assert len(calls) == results.count(200)
    # No reservation outlives its call: every hold is settled, none waits for its lease.
    client = redis_client()
    leases = [k for k in keys_under(client, cluster.prefix) if k.endswith(b":leases")]
    assert all(client.zcard(k) == 0 for k in leases)
    buckets = [k for k in keys_under(client, f"{cluster.prefix}b:") if not k.endswith(b":leases")]
    assert buckets and all(int(client.hget(k, "reserved") or 0) == 0 for k in buckets)
    assert keys_under(client, f"{cluster.prefix}res:") == []
    client.close()


def test_a_rate_limit_holds_across_two_processes_in_every_window(cluster: Cluster) -> None:
    limit = 7
    org_id = _org(cluster.records, {"rate_limit": {"org_requests": limit, "window_s": 60}})
    seeded = [cluster.records.runner(org_id=org_id) for _ in range(2)]
    results = asyncio.run(_drive(cluster.urls, [s.token for s in seeded], 30, content="hi"))
    assert all(r in (200, 429) for r in results), results
    calls = sorted(
        (c for s in seeded for c in cluster.records.calls(s.runner_id)),
        key=lambda c: c.created_at,
    )
    assert len(calls) == results.count(200) >= 1
    for first in calls:
        window = [c for c in calls if first.created_at <= c.created_at < first.created_at
                  + timedelta(seconds=60)]
        assert len(window) <= limit


def test_redis_gone_mid_run_is_503_and_nothing_is_charged_twice(cluster: Cluster) -> None:
    org_id = _org(cluster.records, {"budget": {"org_daily_usd": 5.0}})
    seeded = cluster.records.runner(org_id=org_id, session_budget_usd=5.0)
    before = asyncio.run(_drive(cluster.urls, [seeded.token], 6, content="hi"))
    assert before == [200] * 6
    cluster.relay.cut()
    after = asyncio.run(_drive(cluster.urls, [seeded.token], 6, content="hi"))
    assert after == [503] * 6
    calls = cluster.records.calls(seeded.runner_id)
    assert len(calls) == len({c.id for c in calls}) == 6
    assert seeded.session_id is not None
    spent = cluster.records.get_session(seeded.session_id).spent_usd
    assert spent == pytest.approx(sum(c.cost_usd for c in calls))
    kinds = [e.data.get("reason") for e in cluster.records.audit_of(org_id)]
    assert kinds.count("counters_unavailable") == 6
