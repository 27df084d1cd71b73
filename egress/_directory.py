"""Who a runner is (by its token and its address), and the audit record of every decision.

The token is the runner's only credential: the proxy accepts it only from the address the
backend gave that runner, and only while the runner is ready or running (read fresh from the
store on every request, so a stop takes effect on the next one). A runner whose backend gives
it no fixed address (E2B: a microVM behind E2B's own network) is marked so in its reference
(`egress_auth: credentials`) and is known by its credentials alone; there, E2B's per-host
header rule carries them, so they are never in the VM (see controlplane/backends/e2b_policy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paddock_core import (
    AppendAudit,
    AuditEvent,
    AuthenticationError,
    RunnerRecord,
    Store,
    hash_token,
    key_fingerprint,
    utcnow,
)

__all__ = ["EGRESS_AUTH", "DecisionLog", "RunnerDirectory", "SERVING_STATES"]

logger = logging.getLogger(__name__)

SERVING_STATES = frozenset({"ready", "running"})
EGRESS_AUTH = "egress_auth"
"""Key of a runner's backend reference: `credentials` when no source address can be checked."""
_TOKEN_PREFIX = "prt_"


class RunnerDirectory:
    def __init__(
        self,
        store: Store,
        *,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._clock = clock
        self._by_address: dict[str, RunnerRecord] = {}
        self._loaded_at = float("-inf")

    async def authenticate(self, runner_id: str, token: str, source: str) -> RunnerRecord:
        """The runner whose token this is, if it may use it from `source` now."""
        if not token.startswith(_TOKEN_PREFIX):
            raise AuthenticationError("not a runner token", reason="invalid_token")
        runner = await self._store.find_runner_by_token(hash_token(token))
        if runner is None or runner.id != runner_id:
            logger.info("proxy: unknown runner token %s from %s", key_fingerprint(token), source)
            raise AuthenticationError("invalid runner credentials", reason="invalid_token")
        if runner.deleted or runner.state not in SERVING_STATES:
            raise AuthenticationError(
                f"runner {runner.id} is {'deleted' if runner.deleted else runner.state}",
                reason="runner_not_live",
            )
        bound = runner.backend_ref.get("address")
        by_credentials = runner.backend_ref.get(EGRESS_AUTH) == "credentials"
        if (bound and bound != source) or (not bound and not by_credentials):
            raise AuthenticationError(
                f"runner {runner.id}'s token used from {source}", reason="wrong_source"
            )
        return runner

    async def by_address(self, address: str) -> RunnerRecord | None:
        """The runner that has (or last had) `address`, for attributing what it tried."""
        now = self._clock()
        if address not in self._by_address or now - self._loaded_at > self._refresh_s:
            if now - self._loaded_at > min(self._refresh_s, 0.5):
                await self._reload()
                self._loaded_at = now
        return self._by_address.get(address)

    async def _reload(self) -> None:
        mapping: dict[str, RunnerRecord] = {}
        for runner in sorted(await self._store.list_runners(), key=_recency):
            address = runner.backend_ref.get("address")
            if isinstance(address, str) and address:
                mapping[address] = runner  # later (live, newer) records win
        self._by_address = mapping


def _recency(runner: RunnerRecord) -> tuple[bool, bool, Any]:
    return (not runner.deleted, runner.state in SERVING_STATES, runner.updated_at)


@dataclass
class _Pending:
    first_at: float
    repeats: int = 0


class DecisionLog:
    """Writes `egress.decision` audit events; identical ones within `window_s` are counted.

    The first of a burst is written at once; repeats are counted and written as one event with
    `repeats` when the window closes (`flush`, called periodically by the server).
    """

    def __init__(
        self,
        store: Store,
        *,
        fallback_org: str,
        window_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._fallback_org = fallback_org
        self._window_s = window_s
        self._clock = clock
        self._pending: dict[tuple[Any, ...], tuple[_Pending, AuditEvent]] = {}

    async def record(self, runner: RunnerRecord | None, source: str, data: dict[str, Any]) -> None:
        """Audit one decision. Raises StoreError when it cannot be written (callers that allow
        traffic must then refuse it: nothing leaves unaudited)."""
        event = AuditEvent(
            org_id=runner.org_id if runner else self._fallback_org,
            actor=f"runner:{runner.id}" if runner else f"source:{source}",
            type="egress.decision",
            runner_id=runner.id if runner else None,
            session_id=runner.session_id if runner else None,
            data={**data, "source": source},
        )
        key = (event.actor, *(data.get(k) for k in ("via", "host", "port", "verdict", "rule")))
        now = self._clock()
        held = self._pending.get(key)
        if held is not None and now - held[0].first_at < self._window_s:
            held[0].repeats += 1
            return
        self._pending[key] = (_Pending(now), event)
        await self._store.apply([AppendAudit(event)])

    async def flush(self) -> None:
        """Write the repeat counts of windows that have closed."""
        now = self._clock()
        due = [k for k, (p, _) in self._pending.items() if now - p.first_at >= self._window_s]
        batch = []
        for key in due:
            pending, event = self._pending.pop(key)
            if pending.repeats:
                data = {**event.data, "repeats": pending.repeats}
                batch.append(AppendAudit(event.model_copy(update={"data": data, "time": utcnow()})))
        if batch:
            await self._store.apply(batch)
