"""Following the audit trail live: runner events, session spend, org spend.

Followers read the store after the last seq they delivered (so a reconnect with Last-Event-ID
loses and repeats nothing) and sleep until the notifier wakes them or the poll interval passes.
`None` in a follow stream is a heartbeat: nothing new for `heartbeat_s` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from paddock_core import AuditEvent, AuditQuery, Notifier, Store

__all__ = ["FollowService", "SpendTotals"]

_PAGE = 500


@dataclass
class SpendTotals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, event: AuditEvent) -> None:
        self.calls += 1
        self.prompt_tokens += int(event.data.get("prompt_tokens", 0))
        self.completion_tokens += int(event.data.get("completion_tokens", 0))
        self.cost_usd += float(event.data.get("cost_usd", 0.0))

    def as_dict(self, budget_usd: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 8),
        }
        if budget_usd is not None:
            body["budget_usd"] = budget_usd
            body["remaining_usd"] = round(max(budget_usd - self.cost_usd, 0.0), 8)
        return body


class FollowService:
    def __init__(
        self, *, store: Store, notifier: Notifier, poll_s: float, heartbeat_s: float
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s

    async def follow(self, org_id: str, query: AuditQuery) -> AsyncIterator[AuditEvent | None]:
        """Events matching `query` with seq > query.after_seq, forever; None = heartbeat."""
        after = query.after_seq
        quiet_since = time.monotonic()
        async with self._notifier.listen(org_id) as wake:
            while True:
                wake.clear()
                batch = await self._store.list_audit(
                    org_id, query=replace(query, after_seq=after, limit=_PAGE)
                )
                for event in batch:
                    yield event
                    after = event.seq
                if batch:
                    quiet_since = time.monotonic()
                    if len(batch) == _PAGE:
                        continue
                left = self._heartbeat_s - (time.monotonic() - quiet_since)
                if left <= 0:
                    yield None
                    quiet_since = time.monotonic()
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), timeout=min(self._poll_s, left))
                except TimeoutError:
                    pass

    async def spend_before(self, org_id: str, query: AuditQuery, upto_seq: int) -> SpendTotals:
        """Totals of the llm.call events matching `query` with seq ≤ upto_seq (for resumes)."""
        totals = SpendTotals()
        after = 0
        while after < upto_seq:
            batch = await self._store.list_audit(
                org_id, query=replace(query, types=("llm.call",), after_seq=after, limit=_PAGE)
            )
            for event in batch:
                if event.seq > upto_seq:
                    return totals
                totals.add(event)
            if len(batch) < _PAGE:
                break
            after = batch[-1].seq
        return totals
