"""Counters for rate limits and budget reservations: in process, or shared through Redis."""

from ._base import (
    NANO,
    Bucket,
    Counters,
    CountersUnavailableError,
    NeedsSeed,
    Over,
    RateLimit,
    RateResult,
    RateState,
    Reservation,
    ReserveRequest,
    ReserveResult,
    to_nano,
)
from .memory import MemoryCounters
from .redis import RedisCounters

__all__ = [
    "NANO",
    "Bucket",
    "Counters",
    "CountersUnavailableError",
    "MemoryCounters",
    "NeedsSeed",
    "Over",
    "RateLimit",
    "RateResult",
    "RateState",
    "RedisCounters",
    "Reservation",
    "ReserveRequest",
    "ReserveResult",
    "make_counters",
    "to_nano",
]


def make_counters(redis_url: str | None, *, prefix: str = "paddock:") -> Counters:
    """Redis when a URL is configured (shared by every process), else in process."""
    return RedisCounters(redis_url, prefix=prefix) if redis_url else MemoryCounters()
