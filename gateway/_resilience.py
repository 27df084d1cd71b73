"""Circuit breakers (one per provider) and retry backoff.

Breaker: `failures` consecutive transient failures (connect errors, timeouts, 5xx) open it; an
open breaker refuses calls for `open_s` seconds, then lets ONE probe through (half-open): its
success closes the breaker, its failure opens it again for another `open_s`. A 429 is the
provider telling one key to slow down, not the provider failing: it neither opens nor closes.

Backoff: "full jitter" (uniform in [0, min(max_s, base_s * 2**attempt)]), or the provider's
Retry-After when it gave one (capped at `max_s`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Breaker", "Breakers", "backoff_s", "retryable_status"]

_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def retryable_status(status: int) -> bool:
    return status in _RETRYABLE


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after: str | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry)."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), max_s)
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    return float(rng() * min(max_s, base_s * (2**attempt)))


@dataclass
class Breaker:
    failures_to_open: int
    open_s: float
    on_change: Callable[[str], None] = lambda _state: None
    clock: Callable[[], float] = time.monotonic
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = field(default=False)

    def allow(self) -> bool:
        """May a call go to this provider now? In half-open, only one probe at a time."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self.clock() - self.opened_at < self.open_s:
                return False
            self._set("half_open")
        if self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.probing = False
        if self.state != "closed":
            self._set("closed")

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.state == "half_open" or self.failures >= self.failures_to_open:
            self.opened_at = self.clock()
            self._set("open")

    def release(self) -> None:
        """The call let through ended without telling success or failure (e.g. a 4xx)."""
        self.probing = False

    def retry_in_s(self) -> float:
        return max(self.open_s - (self.clock() - self.opened_at), 0.0)

    def _set(self, state: str) -> None:
        self.state = state
        self.on_change(state)


class Breakers:
    def __init__(
        self,
        *,
        failures_to_open: int,
        open_s: float,
        on_change: Callable[[str, str], None] = lambda _provider, _state: None,
    ) -> None:
        self._failures = failures_to_open
        self._open_s = open_s
        self._on_change = on_change
        self._breakers: dict[str, Breaker] = {}

    def __getitem__(self, provider: str) -> Breaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            breaker = self._breakers[provider] = Breaker(
                self._failures,
                self._open_s,
                on_change=lambda state: self._on_change(provider, state),
            )
        return breaker
