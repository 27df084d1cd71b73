"""The `Counters` port: shared, atomic counting for rate limits and budget reservations.

Two implementations behind one contract (tests/gateway/test_counters_contract.py):
`MemoryCounters` (one process) and `RedisCounters` (any number of gateway processes sharing
one Redis; each operation is one Lua script, so it is atomic across them).

Rate limits are sliding logs: a call is admitted when, for every limit it is under, the amounts
admitted in the last `window_s` seconds plus its own stay within `limit`. Exact in every
window, not an approximation.

Budgets are buckets of USD (kept as integer nano-USD, so sums never drift): `spent` (settled
costs) and `reserved` (holds of calls in flight). A reservation holds the same amount in every
bucket it names, or in none; it lives until settled or until its lease ends (then the next
operation on the bucket frees it). A bucket the counters do not have yet is seeded from what
the store has recorded: `reserve` answers `NeedsSeed` and the caller retries with seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from paddock_core import PaddockError

__all__ = [
    "NANO",
    "Bucket",
    "Counters",
    "CountersUnavailableError",
    "NeedsSeed",
    "Over",
    "RateLimit",
    "RateResult",
    "RateState",
    "Reservation",
    "ReserveRequest",
    "ReserveResult",
    "nano_up",
    "to_nano",
]

NANO = 1_000_000_000
"""nano-USD per USD: counters keep money as integers."""


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def nano_up(usd: float) -> int:
    """`usd` in nano-USD, rounded up (what a reservation takes), float noise aside."""
    return math.ceil(usd * NANO - 1e-6)


class CountersUnavailableError(PaddockError):
    """The counters' store (Redis) cannot be reached; the gateway answers 503 (fail closed)."""

    code = "counters_unavailable"


@dataclass(frozen=True)
class RateLimit:
    key: str
    """e.g. `rate:org:<id>:requests`."""
    limit: int
    """Largest amount admitted per window."""
    window_s: float
    """Window length, seconds."""
    cost: int
    """What this call takes from it (1 request, or its token estimate)."""


@dataclass(frozen=True)
class RateState:
    key: str
    limit: int
    remaining: int
    """What is left in the window after this call (when admitted)."""
    reset_s: float
    """Seconds until the window is back to its full limit."""


@dataclass(frozen=True)
class RateResult:
    allowed: bool
    states: tuple[RateState, ...]
    """One per limit asked, in order."""
    denied: int | None = None
    """Index of the first limit that refused."""
    retry_after_s: float = 0.0
    """When refused: seconds until that limit could admit this call."""


@dataclass(frozen=True)
class Bucket:
    key: str
    """e.g. `session:<id>`, `org:<id>:day:2026-11-23`."""
    limit_usd: float
    ttl_s: float
    """How long the counter outlives its last use (then it is seeded again from the store)."""


@dataclass(frozen=True)
class ReserveRequest:
    """Reserve `fixed_usd + unit_usd * units` in every bucket, for the largest `units` in
    [min_units, max_units] that every bucket can pay (all-or-nothing)."""

    reservation_id: str
    buckets: Sequence[Bucket]
    fixed_usd: float
    """Input estimate, USD."""
    unit_usd: float
    """Price of one output token, USD."""
    max_units: int
    min_units: int
    lease_s: float
    """Seconds the hold lives if nobody settles it (a crashed process)."""
    seeds: Mapping[str, float] | None = None
    """Recorded spend (USD) per bucket key, for buckets the counters do not have."""


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    units: int
    amount_usd: float


@dataclass(frozen=True)
class Over:
    """The first bucket that cannot pay even `min_units`."""

    key: str
    remaining_usd: float
    """Limit minus spent minus reserved (may be negative)."""


@dataclass(frozen=True)
class NeedsSeed:
    keys: tuple[str, ...]


ReserveResult = Reservation | Over | NeedsSeed


class Counters(Protocol):
    async def acquire(self, request_id: str, limits: Sequence[RateLimit]) -> RateResult:
        """Admit a call under every limit or under none."""
        ...

    async def record(self, request_id: str, limits: Sequence[RateLimit]) -> None:
        """Count amounts known only after a call (its output tokens), unchecked."""
        ...

    async def reserve(self, request: ReserveRequest) -> ReserveResult: ...

    async def settle(
        self, reservation_id: str, buckets: Sequence[Bucket], actual_usd: float
    ) -> dict[str, float]:
        """Free the hold and add `actual_usd` to each bucket's spend, once (a second settle
        of the same id does nothing). Returns each bucket's spend after (USD), for alerts."""
        ...

    async def usage(self, key: str) -> tuple[float, float, int]:
        """(spent USD, reserved USD, holds) of a bucket, after freeing expired leases."""
        ...

    async def once(self, key: str, ttl_s: float) -> bool:
        """True the first time `key` is seen within `ttl_s` seconds (alerts fire once)."""
        ...

    async def close(self) -> None: ...
