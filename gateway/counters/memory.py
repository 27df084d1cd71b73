"""In-process counters: exact within one gateway process (every operation runs without an
await, so no other task interleaves). Several processes need `RedisCounters`."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._base import (
    NANO,
    Bucket,
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

__all__ = ["MemoryCounters"]

_PRUNE_AT = 50_000
"""Entries kept before expired ones are swept (memory stays bounded by what is live)."""


@dataclass
class _Log:
    entries: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def trim(self, since: float) -> None:
        while self.entries and self.entries[0][0] <= since:
            self.total -= self.entries.popleft()[1]


@dataclass
class _Bucket:
    spent: int
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)
    """reservation id -> (nano-USD, lease deadline)"""
    touched: float = 0.0
    ttl_s: float = 0.0

    def free_expired(self, now: float) -> None:
        if not self.holds:
            return
        for rid, (amount, deadline) in list(self.holds.items()):
            if deadline <= now:
                del self.holds[rid]
                self.reserved -= amount


def affordable_units(free: int, fixed: int, unit: float, max_units: int) -> int:
    """Output tokens `free` nano-USD pays for after `fixed` (-1: not even the input)."""
    if free < fixed:
        return -1
    if unit <= 0:
        return max_units
    return min(max_units, math.floor((free - fixed) / unit))


class MemoryCounters:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """`clock`: seconds since the epoch (tests pass their own)."""
        self._clock = clock
        self._logs: dict[str, _Log] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._settled: dict[str, float] = {}
        self._once: dict[str, float] = {}

    async def acquire(self, request_id: str, limits: Sequence[RateLimit]) -> RateResult:  # noqa: ARG002
        now = self._clock()
        logs = [self._logs.setdefault(lim.key, _Log()) for lim in limits]
        for i, (lim, log) in enumerate(zip(limits, logs, strict=True)):
            log.trim(now - lim.window_s)
            if log.total + lim.cost > lim.limit:
                need = log.total + lim.cost - lim.limit
                retry = lim.window_s
                freed = 0
                for at, amount in log.entries:
                    freed += amount
                    if freed >= need:
                        retry = at + lim.window_s - now
                        break
                states = tuple(self._state(x, y, now) for x, y in zip(limits, logs, strict=True))
                return RateResult(False, states, i, max(retry, 0.0))
        for lim, log in zip(limits, logs, strict=True):
            log.entries.append((now, lim.cost))
            log.total += lim.cost
        return RateResult(
            True, tuple(self._state(x, y, now) for x, y in zip(limits, logs, strict=True))
        )

    @staticmethod
    def _state(lim: RateLimit, log: _Log, now: float) -> RateState:
        reset = log.entries[-1][0] + lim.window_s - now if log.entries else 0.0
        return RateState(lim.key, lim.limit, max(lim.limit - log.total, 0), max(reset, 0.0))

    async def record(self, request_id: str, limits: Sequence[RateLimit]) -> None:  # noqa: ARG002
        now = self._clock()
        for lim in limits:
            log = self._logs.setdefault(lim.key, _Log())
            log.trim(now - lim.window_s)
            log.entries.append((now, lim.cost))
            log.total += lim.cost

    def _bucket(self, key: str, now: float) -> _Bucket | None:
        found = self._buckets.get(key)
        if found is not None and found.touched + found.ttl_s <= now:
            del self._buckets[key]  # as a Redis key with a TTL would be
            return None
        return found

    async def reserve(self, request: ReserveRequest) -> ReserveResult:
        now = self._clock()
        seeds = request.seeds or {}
        missing = []
        for b in request.buckets:
            if self._bucket(b.key, now) is None:
                if b.key in seeds:
                    self._buckets[b.key] = _Bucket(
                        to_nano(seeds[b.key]), touched=now, ttl_s=b.ttl_s
                    )
                else:
                    missing.append(b.key)
        if missing:
            if len(self._buckets) > _PRUNE_AT:  # counters nobody touched within their TTL
                for key in [k for k, b in self._buckets.items() if b.touched + b.ttl_s <= now]:
                    del self._buckets[key]
            return NeedsSeed(tuple(missing))
        fixed, unit = nano_up(request.fixed_usd), request.unit_usd * NANO
        units = request.max_units
        found = [self._buckets[b.key] for b in request.buckets]
        for b, state in zip(request.buckets, found, strict=True):
            state.free_expired(now)
            free = to_nano(b.limit_usd) - state.spent - state.reserved
            units = min(units, affordable_units(free, fixed, unit, units))
            if units < request.min_units:
                return Over(b.key, free / NANO)
        amount = math.ceil(fixed + unit * units - 1e-6)
        for b, state in zip(request.buckets, found, strict=True):
            state.holds[request.reservation_id] = (amount, now + request.lease_s)
            state.reserved += amount
            state.touched, state.ttl_s = now, b.ttl_s
        return Reservation(request.reservation_id, units, amount / NANO)

    async def settle(
        self, reservation_id: str, buckets: Sequence[Bucket], actual_usd: float
    ) -> dict[str, float]:
        now = self._clock()
        if reservation_id in self._settled:
            return {}
        self._settled[reservation_id] = now
        while (oldest := next(iter(self._settled.items())))[1] + 86_400 <= now:
            del self._settled[oldest[0]]  # settled a day ago: forget it (insertion order)
        out: dict[str, float] = {}
        for b in buckets:
            state = self._bucket(b.key, now)
            if state is None:
                continue  # gone: it is seeded again, from the store, which has this call
            hold = state.holds.pop(reservation_id, None)
            if hold is not None:
                state.reserved -= hold[0]
            state.spent += to_nano(actual_usd)
            state.touched = now
            out[b.key] = state.spent / NANO
        return out

    async def usage(self, key: str) -> tuple[float, float, int]:
        now = self._clock()
        state = self._bucket(key, now)
        if state is None:
            return (0.0, 0.0, 0)
        state.free_expired(now)
        return (state.spent / NANO, state.reserved / NANO, len(state.holds))

    async def once(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        if self._once.get(key, 0.0) > now:
            return False
        if len(self._once) > _PRUNE_AT:
            self._once = {k: until for k, until in self._once.items() if until > now}
        self._once[key] = now + ttl_s
        return True

    async def close(self) -> None:
        return None
