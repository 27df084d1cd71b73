"""Sending a call upstream: retries with backoff, circuit breakers, fallbacks.

Nothing here has reached the client yet, which is what makes retrying safe: a stream is
retried only until its upstream answered with headers, never once a byte went out.

For each candidate route (the model's, then its fallbacks'), while its breaker allows:
- a transient failure (connect error, timeout, 408/409/429/5xx) is retried after a backoff
  (Retry-After honoured) up to `max_retries` times, then the next candidate is tried;
- any other answer (2xx, or a 4xx that is the request's own fault) is final.
When every candidate failed, the last failure is the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from paddock_core import InvalidRequestError, UpstreamError

from ._calls import ClientCall
from ._errors import ProviderUnavailableError
from ._proxy import UpstreamReply, UpstreamStream
from ._resilience import backoff_s, retryable_status
from ._routing import Route
from ._state import GatewayState
from .providers import Adapter

__all__ = ["Candidate", "Forwarded", "forward"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    route: Route
    adapter: Adapter
    body: dict[str, Any] | None = None
    """The upstream body, when already built (the primary's is, to fail fast on bad input)."""


@dataclass(frozen=True)
class Forwarded:
    route: Route
    adapter: Adapter
    answer: UpstreamReply | UpstreamStream | UpstreamError
    """What the last attempt got: an answer, or the failure to get one."""


async def _attempt(
    state: GatewayState, call: ClientCall, candidate: Candidate, body: dict[str, Any]
) -> UpstreamReply | UpstreamStream:
    route, adapter = candidate.route, candidate.adapter
    headers = adapter.headers(call.headers)
    if call.stream:
        return await state.proxy.open_stream(route.upstream, adapter.path, body, headers)
    return await state.proxy.complete(route.upstream, adapter.path, body, headers)


async def forward(
    state: GatewayState, call: ClientCall, candidates: Sequence[Candidate]
) -> Forwarded:
    settings, metrics = state.settings, state.metrics
    last: Forwarded | None = None
    for index, candidate in enumerate(candidates):
        route, adapter = candidate.route, candidate.adapter
        try:
            body = candidate.body or adapter.body(call.body, route.model)
        except InvalidRequestError as exc:
            logger.info("fallback %s skipped: %s", route.provider, exc.message)
            continue
        if index > 0:
            metrics.fallbacks.labels(route.provider).inc()
            logger.info("falling back to %s/%s", route.provider, route.model)
        breaker = state.breakers[route.provider]
        for attempt in range(settings.max_retries + 1):
            if not breaker.allow():
                error = ProviderUnavailableError(
                    f"provider {route.provider!r} is failing; its circuit breaker is open",
                    reason="provider_unavailable",
                    retry_after_s=breaker.retry_in_s(),
                )
                last = Forwarded(route, adapter, error)
                break
            settled = False
            try:
                answer = await _attempt(state, call, candidate, body)
                status = answer.status
                if 200 <= status < 300:
                    breaker.success()
                    settled = True
                    return Forwarded(route, adapter, answer)
                if status >= 500:
                    breaker.failure()
                    settled = True
                if not retryable_status(status):
                    return Forwarded(route, adapter, answer)
                assert isinstance(answer, UpstreamReply)
                last, reason, retry_after = (
                    Forwarded(route, adapter, answer),
                    str(status),
                    (answer.retry_after),
                )
            except UpstreamError as exc:
                breaker.failure()
                settled = True
                last, reason, retry_after = Forwarded(route, adapter, exc), exc.code, None
                if not exc.details.get("transient"):
                    break
            finally:
                if not settled:
                    breaker.release()
            if attempt == settings.max_retries:
                break
            delay = backoff_s(
                attempt,
                base_s=settings.retry_base_s,
                max_s=settings.retry_max_s,
                retry_after=retry_after,
            )
            metrics.retries.labels(route.provider, reason).inc()
            logger.info(
                "retrying %s in %.3fs (attempt %d failed: %s)",
                route.provider,
                delay,
                attempt + 1,
                reason,
            )
            await anyio.sleep(delay)
    if last is None:
        # Only reachable when every fallback was skipped and the primary was too: the
        # primary's body was built up front, so this cannot happen; keep a clear error anyway.
        raise UpstreamError("no provider could take the call", reason="no_route")
    return last
