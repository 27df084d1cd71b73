"""Alerts. Budgets: an audit event when a bucket's spend crosses a threshold (once per
bucket and period), `budget.exhausted` when a session or runner can pay no more. Loops and
spend velocity: `alert`. Each also as a signed webhook when the org configured one.

The webhook body is JSON; `X-Paddock-Signature: sha256=<hex HMAC-SHA256 of the body>` under
the gateway's `alert_webhook_secret`. Delivery is retried (bounded) in the background, so an
alert never holds up the call that triggered it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from paddock_core import AppendAudit, AuditEvent, PaddockError, Store

from ..counters import Counters, CountersUnavailableError

__all__ = ["AlertTarget", "BudgetAlerts", "SIGNATURE_HEADER"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-paddock-signature"


@dataclass(frozen=True)
class AlertTarget:
    """Who an alert is about, and where the org wants it sent."""

    org_id: str
    actor: str
    runner_id: str | None
    session_id: str | None
    webhook_url: str | None


class BudgetAlerts:
    def __init__(
        self,
        store: Store,
        counters: Counters,
        *,
        webhook_secret: str | None = None,
        attempts: int = 3,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`attempts`: webhook deliveries tried per alert; `timeout_s`: seconds per try."""
        self._store = store
        self._counters = counters
        self._secret = (webhook_secret or "").encode()
        self._attempts = attempts
        self._timeout_s = timeout_s
        self._transport = transport
        self._fired: set[str] = set()  # seen here already: skip asking the counters again
        self._tasks: set[asyncio.Task[None]] = set()

    async def spent(
        self,
        target: AlertTarget,
        bucket: str,
        limit_usd: float,
        spent_usd: float,
        thresholds: tuple[float, ...],
        ttl_s: float,
    ) -> None:
        """After a settle: alert each threshold (a fraction of the limit) the spend reached."""
        for threshold in thresholds:
            if spent_usd + 1e-12 < threshold * limit_usd:
                break
            key = f"alert:{bucket}:{threshold:g}"
            data = {
                "bucket": bucket,
                "threshold": threshold,
                "spent_usd": round(spent_usd, 9),
                "limit_usd": limit_usd,
            }
            await self._fire(target, key, ttl_s, "budget.alert", data)

    async def exhausted(
        self, target: AlertTarget, bucket: str, limit_usd: float, remaining_usd: float
    ) -> None:
        """A session or runner bucket refused a call: it can pay for no more (once per bucket)."""
        data = {"bucket": bucket, "limit_usd": limit_usd, "remaining_usd": round(remaining_usd, 9)}
        await self._fire(target, f"exhausted:{bucket}", 7 * 86_400, "budget.exhausted", data)

    async def alert(
        self,
        target: AlertTarget,
        kind: str,
        data: Mapping[str, Any],
        *,
        once_key: str,
        ttl_s: float = 86_400.0,
    ) -> None:
        """Any other alert (`loop.alert`, `velocity.alert`, `session.end_requested`): audited
        and sent to the webhook once per `once_key` within `ttl_s` seconds, across processes."""
        await self._fire(target, once_key, ttl_s, kind, data)

    async def _fire(
        self, target: AlertTarget, key: str, ttl_s: float, kind: str, data: Mapping[str, Any]
    ) -> None:
        if key in self._fired:
            return
        try:
            first = await self._counters.once(key, ttl_s)
        except CountersUnavailableError:
            return  # no way to tell whether another process sent it: stay quiet
        self._fired.add(key)
        if len(self._fired) > 100_000:
            self._fired.clear()
        if not first:
            return
        event = AuditEvent(
            org_id=target.org_id,
            actor=target.actor,
            type=kind,
            runner_id=target.runner_id,
            session_id=target.session_id,
            data=dict(data),
        )
        try:
            await self._store.apply([AppendAudit(event)])
        except PaddockError:
            logger.exception("could not audit %s for %s", kind, data.get("bucket"))
        if target.webhook_url:
            body = {
                "type": kind,
                "org_id": target.org_id,
                "runner_id": target.runner_id,
                "session_id": target.session_id,
                **data,
            }
            task = asyncio.get_running_loop().create_task(self._deliver(target.webhook_url, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    async def _deliver(self, url: str, body: Mapping[str, Any]) -> None:
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: self.sign(raw)}
        async with httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport) as http:
            for attempt in range(self._attempts):
                try:
                    reply = await http.post(url, content=raw, headers=headers)
                    if reply.status_code < 300:
                        return
                    logger.warning(
                        "budget webhook answered %d (try %d)", reply.status_code, attempt + 1
                    )
                except httpx.HTTPError as exc:
                    logger.warning(
                        "budget webhook failed: %s (try %d)", type(exc).__name__, attempt + 1
                    )
                await asyncio.sleep(0.2 * 2**attempt)
        logger.error("budget webhook gave up after %d tries", self._attempts)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait (at most `timeout_s` seconds) for deliveries under way, then cancel them."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in late:
                task.cancel()
