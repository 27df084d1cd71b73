"""`create_gateway(settings)`: the governance gateway as an ASGI app.

Nothing happens at import or in the factory; the lifespan loads the policies, opens the store
and the upstream connection pools, and closes them again on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import httpx
from fastapi import FastAPI, Request
from starlette.types import Message, Receive, Scope, Send

from paddock_core import (
    Notifier,
    NotifyingStore,
    Store,
    load_policies,
    make_notifier,
    open_store,
)

from ._approvals import sweep_approvals
from ._cache import MemoryResponseCache, ResponseCache
from ._calls import STARTED_KEY
from ._chains import ChainSource, ConfiguredChains, FixedChain
from ._costs import Ledger, Pricing
from ._errors import answer_error, install_error_handlers
from ._metrics import GatewayMetrics
from ._moderation import ModerationClient
from ._orgs import OrgSettingsSource, StoredOrgSettings
from ._proxy import Proxy
from ._resilience import Breakers
from ._routes import LLM_PATHS, LLM_ROUTES, handle_llm_request
from ._routes import router as routes
from ._routing import Router, load_aliases
from ._settings import GatewaySettings
from ._state import GatewayState
from ._transport import AiohttpTransport, HttpxTransport, UpstreamTransport
from .checks import STEPS, BudgetAlerts, ChainDeps, ChainPolicy, ContentPolicies, PolicyCheck
from .counters import Counters, make_counters
from .providers import Endpoint

__all__ = ["create_gateway"]

logger = logging.getLogger(__name__)


class _GatewayApp(FastAPI):
    """FastAPI, with the LLM routes dispatched straight from the server.

    An LLM call is the gateway's hot path and its handlers need nothing of the framework's
    stack: they authenticate, read and answer by themselves. So a POST to one of those paths
    skips the middleware and routing layers (about a tenth of the CPU of a call, measured),
    and its errors are answered by the same handlers `install_error_handlers` registers.
    Every other request takes the full FastAPI path.
    """

    def __init__(self, llm_routes: Mapping[str, Endpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._llm_routes = dict(llm_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()  # before routing and auth: the overhead figure
        scope[STARTED_KEY] = started
        endpoint = self._llm_routes.get(scope["path"]) if scope["method"] == "POST" else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        sent_start = False

        async def sending(message: Message) -> None:
            nonlocal sent_start
            sent_start = sent_start or message["type"] == "http.response.start"
            await send(message)

        try:
            response = await handle_llm_request(endpoint, request, started)
            # A held call answers while it is being sent (approved, rejected, timed out).
            await response(scope, receive, sending)
        except Exception as exc:
            if sent_start:
                raise
            # Every error gets the answer of the client's own protocol, as registered.
            await (await answer_error(request, exc))(scope, receive, send)


def _transport(
    settings: GatewaySettings, given: UpstreamTransport | httpx.AsyncBaseTransport | None
) -> UpstreamTransport:
    if given is None:
        return AiohttpTransport(
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.upstream_timeout_s,
            max_connections=settings.max_connections_per_provider,
        )
    if isinstance(given, httpx.AsyncBaseTransport):
        return HttpxTransport(
            given,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.upstream_timeout_s,
        )
    return given


def create_gateway(
    settings: GatewaySettings,
    *,
    upstream_transport: UpstreamTransport | httpx.AsyncBaseTransport | None = None,
    checks: Sequence[PolicyCheck] | None = None,
    org_settings: OrgSettingsSource | None = None,
    cache: ResponseCache | None = None,
    notifier: Notifier | None = None,
    counters: Counters | None = None,
) -> FastAPI:
    """The gateway app.

    `upstream_transport` replaces the wire to the providers (an `UpstreamTransport`, or any
    httpx transport such as `httpx.MockTransport` in tests); `checks` is the policy
    chain for every org, in order (default: built per org from policies/chain.yaml and
    plans.yaml); `org_settings` where orgs' gateway settings
    come from (default: the store, keys unsealed with `secret_key`); `cache` the response cache
    (default: in memory); `counters` the rate-limit and budget counters (default: Redis when
    `redis_url` is set, else in process).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        policies = load_policies(settings.policies_dir)
        chain_policy = ChainPolicy.load(settings.policies_dir, STEPS)
        content = ContentPolicies.load(settings.policies_dir)
        aliases = load_aliases(settings.policies_dir, settings)
        async with AsyncExitStack() as stack:
            raw_store = open_store(settings.resolved_database_url())
            await raw_store.open()
            stack.push_async_callback(raw_store.close)
            # Every llm.call it commits wakes followers: in this process, or through Redis.
            events_notifier = notifier or make_notifier(settings.redis_url)
            if notifier is None:
                stack.push_async_callback(events_notifier.close)
            store = cast(Store, NotifyingStore(raw_store, events_notifier))
            proxy = Proxy(_transport(settings, upstream_transport))
            stack.push_async_callback(proxy.aclose)
            metrics = GatewayMetrics()
            pricing = Pricing(policies)
            ledger = Ledger(store, pricing, metrics, durable=settings.durable_before_answer)
            shared = counters or make_counters(settings.redis_url, prefix=settings.counters_prefix)
            if counters is None:
                stack.push_async_callback(shared.close)
            secret = settings.alert_webhook_secret
            alerts = BudgetAlerts(
                store, shared, webhook_secret=secret.get_secret_value() if secret else None
            )
            stack.push_async_callback(alerts.close)
            router = Router.from_settings(policies, settings, os.environ, aliases)
            deps = ChainDeps(
                store=store,
                default_max_tokens=settings.default_max_tokens,
                counters=shared,
                counters_fail_open=settings.counters_failure_mode == "open",
                reservation_lease_s=settings.reservation_lease_s,
                alerts=alerts,
                content=content,
                classify=ModerationClient(router, proxy),
            )
            for plan in chain_policy.plans:
                # Built now, so a step that refuses its settings when built (an unknown PII
                # type) stops the start instead of failing the plan's first call.
                chain_policy.chain_for("", deps, plan)
            chains: ChainSource = (
                FixedChain(checks) if checks is not None else ConfiguredChains(chain_policy, deps)
            )
            stack.push_async_callback(ledger.drain)  # before the store closes
            app.state.gateway = GatewayState(
                settings=settings,
                policies=policies,
                store=store,
                router=router,
                proxy=proxy,
                pricing=pricing,
                ledger=ledger,
                chains=chains,
                orgs=org_settings
                or StoredOrgSettings(store, settings.secret_key, ttl_s=settings.org_settings_ttl_s),
                cache=cache
                or MemoryResponseCache(
                    max_bytes=settings.cache_max_bytes, ttl_s=settings.cache_ttl_s
                ),
                breakers=Breakers(
                    failures_to_open=settings.breaker_failures,
                    open_s=settings.breaker_open_s,
                    on_change=metrics.set_breaker,
                ),
                metrics=metrics,
                notifier=events_notifier,
                redact=content.redactor(),
            )
            sweeper = asyncio.get_running_loop().create_task(
                sweep_approvals(store, settings.approval_sweep_s, settings.approval_retention_s)
            )

            async def stop_sweeper() -> None:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)

            stack.push_async_callback(stop_sweeper)
            logger.info(
                "gateway ready: %d providers, %d aliases, %d locally priced models",
                len(policies.providers),
                len(aliases.aliases),
                len(policies.prices),
            )
            yield
            del app.state.gateway

    app = _GatewayApp(LLM_PATHS, title="Paddock gateway", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(routes)
    app.router.routes.extend(LLM_ROUTES)
    return app
