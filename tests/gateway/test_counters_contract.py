"""One contract for every `Counters`: in memory and in a real Redis (gateway/counters)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from gateway.counters import (
    Bucket,
    Counters,
    MemoryCounters,
    NeedsSeed,
    Over,
    RateLimit,
    RedisCounters,
    Reservation,
    ReserveRequest,
)
from tests.gateway.counters_support import REDIS_URL, keys_under, redis_client

T = TypeVar("T")
Run = Callable[[Callable[[Counters], Awaitable[T]]], T]


@pytest.fixture(params=["memory", "redis"])
def run(request: pytest.FixtureRequest, redis_prefix: str) -> Iterator[Run[object]]:
    """Runs `body(counters)` in a fresh event loop; memory counters live for the whole test."""
    memory = MemoryCounters()

    def go(body: Callable[[Counters], Awaitable[T]]) -> T:
        async def main() -> T:
            if request.param == "memory":
                return await body(memory)
            counters = RedisCounters(REDIS_URL, prefix=redis_prefix)
            try:
                return await body(counters)
            finally:
                await counters.close()

        return asyncio.run(main())

    yield go  # type: ignore[misc]


def _bucket(key: str, limit: float) -> Bucket:
    return Bucket(key, limit, ttl_s=3600)


def _ask(rid: str, buckets: list[Bucket], usd: float, **more: object) -> ReserveRequest:
    values: dict[str, object] = {
        "reservation_id": rid,
        "buckets": buckets,
        "fixed_usd": usd,
        "unit_usd": 0.0,
        "max_units": 0,
        "min_units": 0,
        "lease_s": 60.0,
        "seeds": {b.key: 0.0 for b in buckets},
    }
    values.update(more)
    return ReserveRequest(**values)  # type: ignore[arg-type]


def test_a_rate_limit_admits_up_to_its_limit_then_says_when_to_retry(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        limit = [RateLimit("rate:k:requests", 3, 60.0, 1)]
        results = [await c.acquire(f"r{i}", limit) for i in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert [r.states[0].remaining for r in results[:3]] == [2, 1, 0]
        refused = results[3]
        assert refused.denied == 0 and 0 < refused.retry_after_s <= 60.0
        assert 0 < results[0].states[0].reset_s <= 60.0

    run(body)


def test_a_call_is_admitted_under_every_limit_or_none(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        wide = RateLimit("rate:o:tokens", 100, 60.0, 30)
        narrow = RateLimit("rate:k:t", 50, 60.0, 30)
        assert (await c.acquire("a", [wide, narrow])).allowed
        refused = await c.acquire("b", [wide, narrow])
        assert not refused.allowed and refused.denied == 1
        # The refused call took nothing from the wide limit: 70 are still there.
        alone = await c.acquire("c", [RateLimit("rate:o:tokens", 100, 60.0, 70)])
        assert alone.allowed and alone.states[0].remaining == 0

    run(body)


def test_a_window_slides_and_recorded_amounts_count(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        limit = RateLimit("rate:w", 2, 0.3, 1)
        assert (await c.acquire("a", [limit])).allowed
        await c.record("a", [RateLimit("rate:w", 2, 0.3, 1)])  # e.g. output tokens
        assert not (await c.acquire("b", [limit])).allowed
        for _ in range(50):  # bounded: the window is 0.3 s
            await asyncio.sleep(0.05)
            if (await c.acquire("c", [limit])).allowed:
                return
        pytest.fail("the window never slid")

    run(body)


def test_a_bucket_is_seeded_once_then_reserved_until_full(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        bucket = _bucket("session:s1", 0.10)
        asked = _ask("r1", [bucket], 0.03, seeds=None)
        assert await c.reserve(asked) == NeedsSeed(("session:s1",))
        first = await c.reserve(_ask("r1", [bucket], 0.03, seeds={"session:s1": 0.05}))
        assert isinstance(first, Reservation) and first.amount_usd == pytest.approx(0.03)
        # Seeded already: a later seed is ignored, so nothing is counted twice.
        over = await c.reserve(_ask("r2", [bucket], 0.03, seeds={"session:s1": 0.0}))
        assert isinstance(over, Over) and over.key == "session:s1"
        assert over.remaining_usd == pytest.approx(0.02)
        assert await c.usage("session:s1") == (pytest.approx(0.05), pytest.approx(0.03), 1)

    run(body)


def test_a_reservation_holds_in_every_bucket_or_in_none(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        roomy, tight = _bucket("org:o:day:d", 1.0), _bucket("session:s", 0.01)
        over = await c.reserve(_ask("r1", [roomy, tight], 0.02))
        assert isinstance(over, Over) and over.key == "session:s"
        assert await c.usage("org:o:day:d") == (0.0, 0.0, 0)

    run(body)


def test_output_tokens_are_granted_as_far_as_the_tightest_bucket_pays(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        buckets = [_bucket("org:o:month:m", 1.0), _bucket("session:s", 0.0011)]
        got = await c.reserve(
            _ask("r1", buckets, 0.0001, unit_usd=1e-6, max_units=4096, min_units=16)
        )
        assert isinstance(got, Reservation) and got.units == 1000
        assert got.amount_usd == pytest.approx(0.0011)
        poor = await c.reserve(
            _ask("r2", buckets, 0.0, unit_usd=1e-6, max_units=4096, min_units=16)
        )
        assert isinstance(poor, Over) and poor.remaining_usd == pytest.approx(0.0)

    run(body)


def test_settling_frees_the_hold_and_counts_the_actual_cost_once(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        bucket = _bucket("runner:r", 1.0)
        assert isinstance(await c.reserve(_ask("r1", [bucket], 0.4)), Reservation)
        assert await c.settle("r1", [bucket], 0.1) == {"runner:r": pytest.approx(0.1)}
        assert await c.settle("r1", [bucket], 0.1) == {}
        assert await c.usage("runner:r") == (pytest.approx(0.1), 0.0, 0)

    run(body)


def test_a_lease_that_ends_frees_its_hold_and_a_late_settle_still_counts(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        bucket = _bucket("session:lease", 0.05)
        assert isinstance(await c.reserve(_ask("r1", [bucket], 0.05, lease_s=0.1)), Reservation)
        assert isinstance(await c.reserve(_ask("r2", [bucket], 0.01)), Over)
        await asyncio.sleep(0.2)
        assert await c.usage("session:lease") == (0.0, 0.0, 0)
        assert isinstance(await c.reserve(_ask("r3", [bucket], 0.01)), Reservation)
        await c.settle("r1", [bucket], 0.02)  # the crashed call's cost, should it ever settle
        assert await c.usage("session:lease") == (pytest.approx(0.02), pytest.approx(0.01), 1)

    run(body)


def test_concurrent_reservations_never_exceed_the_limit(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        bucket = _bucket("org:o:day:x", 0.1)
        results = await asyncio.gather(
            *(c.reserve(_ask(f"r{i}", [bucket], 0.01)) for i in range(40))
        )
        assert sum(isinstance(r, Reservation) for r in results) == 10
        assert await c.usage("org:o:day:x") == (0.0, pytest.approx(0.1), 10)

    run(body)


def test_once_is_true_only_the_first_time(run: Run[None]) -> None:
    async def body(c: Counters) -> None:
        assert await c.once("alert:x:50", 60.0)
        assert not await c.once("alert:x:50", 60.0)
        assert await c.once("alert:x:80", 60.0)

    run(body)


@pytest.mark.redis
def test_redis_keys_expire_and_nothing_lingers_after_settling(redis_prefix: str) -> None:
    async def body() -> None:
        c = RedisCounters(REDIS_URL, prefix=redis_prefix)
        try:
            bucket = Bucket("org:o:day:2026-11-23", 1.0, ttl_s=2 * 86_400)
            assert isinstance(await c.reserve(_ask("r1", [bucket], 0.1)), Reservation)
            await c.settle("r1", [bucket], 0.05)
        finally:
            await c.close()

    asyncio.run(body())
    client = redis_client()
    keys = keys_under(client, redis_prefix)
    assert keys and all(0 < client.pttl(k) <= 2 * 86_400_000 for k in keys)
    assert not [k for k in keys if b":res:" in k]
    client.close()
