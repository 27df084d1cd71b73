"""Counters in Redis, shared by every gateway process that uses the same Redis and prefix.

Each operation is one Lua script (gateway/counters/_lua.py), sent by SHA (`EVALSHA`, loaded
on first use and again if Redis forgets it). Redis unreachable: `CountersUnavailableError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import _lua
from ._base import (
    NANO,
    Bucket,
    CountersUnavailableError,
    NeedsSeed,
    Over,
    RateLimit,
    RateResult,
    RateState,
    Reservation,
    ReserveRequest,
    ReserveResult,
    nano_up,
    to_nano,
)

__all__ = ["RedisCounters"]


class RedisCounters:
    def __init__(self, url: str, *, prefix: str = "paddock:", timeout_s: float = 2.0) -> None:
        """`timeout_s`: seconds to connect or to wait for one answer before giving up."""
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.prefix = prefix
        self._scripts = {
            name: self._redis.register_script(getattr(_lua, name))
            for name in ("ACQUIRE", "RECORD", "RESERVE", "SETTLE", "USAGE", "ONCE")
        }

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise CountersUnavailableError(
                f"the counters' Redis is unavailable: {type(exc).__name__}"
            ) from exc

    def _rate_keys(self, limits: Sequence[RateLimit]) -> list[str]:
        keys = []
        for lim in limits:
            keys += [f"{self.prefix}{lim.key}", f"{self.prefix}{lim.key}:sum"]
        return keys

    async def acquire(self, request_id: str, limits: Sequence[RateLimit]) -> RateResult:
        args: list[Any] = [request_id]
        for lim in limits:
            args += [lim.limit, lim.window_s, lim.cost]
        out = await self._run("ACQUIRE", self._rate_keys(limits), args)
        allowed = int(out[0]) == 1
        rest = out[1:] if allowed else out[3:]
        states = tuple(
            RateState(lim.key, lim.limit, int(rest[2 * i]), float(rest[2 * i + 1]))
            for i, lim in enumerate(limits)
        )
        if allowed:
            return RateResult(True, states)
        return RateResult(False, states, int(out[1]) - 1, float(out[2]))

    async def record(self, request_id: str, limits: Sequence[RateLimit]) -> None:
        args: list[Any] = [request_id]
        for lim in limits:
            args += [lim.window_s, lim.cost]
        await self._run("RECORD", self._rate_keys(limits), args)

    def _bucket_keys(self, keys: Sequence[str], reservation_id: str) -> list[str]:
        out = []
        for key in keys:
            out += [f"{self.prefix}b:{key}", f"{self.prefix}b:{key}:leases"]
        return [*out, f"{self.prefix}res:{reservation_id}"]

    async def reserve(self, request: ReserveRequest) -> ReserveResult:
        seeds = request.seeds or {}
        args: list[Any] = [
            request.reservation_id,
            nano_up(request.fixed_usd),
            repr(request.unit_usd * NANO),
            request.max_units,
            request.min_units,
            request.lease_s,
        ]
        for b in request.buckets:
            seed = seeds.get(b.key)
            args += [to_nano(b.limit_usd), b.ttl_s, "" if seed is None else to_nano(seed)]
        keys = self._bucket_keys([b.key for b in request.buckets], request.reservation_id)
        out = await self._run("RESERVE", keys, args)
        kind = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        if kind == "seed":
            return NeedsSeed(tuple(request.buckets[int(i) - 1].key for i in out[1:]))
        if kind == "over":
            return Over(request.buckets[int(out[1]) - 1].key, float(out[2]) / NANO)
        return Reservation(request.reservation_id, int(out[1]), int(out[2]) / NANO)

    async def settle(
        self, reservation_id: str, buckets: Sequence[Bucket], actual_usd: float
    ) -> dict[str, float]:
        keys = self._bucket_keys([b.key for b in buckets], reservation_id)
        out = await self._run("SETTLE", keys, [reservation_id, to_nano(actual_usd)])
        return {b.key: int(v) / NANO for b, v in zip(buckets, out, strict=False) if int(v) >= 0}

    async def usage(self, key: str) -> tuple[float, float, int]:
        keys = self._bucket_keys([key], "-")[:2]
        spent, reserved, holds = await self._run("USAGE", keys, [])
        return (int(spent) / NANO, int(reserved) / NANO, int(holds))

    async def once(self, key: str, ttl_s: float) -> bool:
        out = await self._run("ONCE", [f"{self.prefix}once:{key}"], [math.ceil(ttl_s * 1000)])
        return int(out) == 1

    async def close(self) -> None:
        await self._redis.aclose()
