"""`create_app(settings)`: the control plane's FastAPI application. No I/O at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
from fastapi import FastAPI

from egress import load_egress_policy
from gateway.checks import ContentPolicies
from paddock_core import (
    CheckpointSigner,
    Notifier,
    NotifyingStore,
    PaddockError,
    Store,
    load_policies,
    make_notifier,
    open_store,
)

from .api.errors import install_error_handlers
from .api.routes import approvals, audit, egress, follow, pools, runners, sessions, tenancy
from .backends import RunnerBackend
from .backends.base import SupportsAgentTransport
from .services import (
    AuditService,
    FollowService,
    RunnerService,
    SessionService,
    TenancyService,
)
from .services.approvals import ApprovalService
from .services.egress import EgressService
from .services.pool import WarmPool
from .services.reconciler import Reconciler
from .services.transcripts import purge_transcripts_periodically
from .settings import ControlPlaneSettings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


async def _default_backend(settings: ControlPlaneSettings) -> RunnerBackend:
    if settings.backend == "fake":
        from .backends.fake import FakeBackend

        return FakeBackend()
    if settings.backend == "e2b":
        from .backends.e2b import E2BBackend, runner_templates

        if not settings.gateway_public_url:
            raise PaddockError("the e2b backend needs PADDOCK_GATEWAY_PUBLIC_URL (see README)")
        key = settings.e2b_api_key
        return E2BBackend(
            controlplane_id=settings.controlplane_id,
            gateway_url=settings.gateway_public_url,
            templates=runner_templates(settings.images, settings.e2b_templates),
            api_key=key.get_secret_value() if key else None,
            api_url=settings.e2b_api_url,
            domain=settings.e2b_domain,
            sandbox_url=settings.e2b_sandbox_url,
            egress_proxy_url=settings.e2b_egress_proxy_url,
            public_traffic=settings.e2b_public_traffic,
            inject_token=settings.e2b_inject_gateway_token,
            dns_servers=settings.e2b_dns_servers,
            lease_s=settings.e2b_lease_s,
        )
    from .backends.docker import DockerBackend

    backend = DockerBackend(
        controlplane_id=settings.controlplane_id,
        gateway_port=settings.gateway_port,
        gateway_url=settings.gateway_url_for_runners,
        egress_port=settings.egress_port,
        dns_port=settings.egress_dns_port,
        nflog_group=settings.egress_nflog_group,
        runner_pool=settings.runner_subnet_pool,
        subnet_prefix=settings.runner_subnet_prefix,
        firewall=settings.runner_firewall,
    )
    await backend.start()
    return backend


async def _checkpoint_periodically(store: Store, audit: AuditService, interval_s: float) -> None:
    """Sign every org's audit head every `interval_s` seconds (when it moved)."""
    while True:
        await asyncio.sleep(interval_s)
        for org in await store.list_objects("org", None):
            try:
                await audit.checkpoint(org["id"])
            except PaddockError:
                logger.exception("audit checkpoint of org %s failed", org["id"])


def create_app(
    settings: ControlPlaneSettings,
    *,
    backend: RunnerBackend | None = None,
    notifier: Notifier | None = None,
) -> FastAPI:
    """The control-plane app. `backend` and `notifier` may be injected (tests, `paddock serve`
    shares one notifier between the apps of a process); by default they follow settings."""
    if settings.admin_key is None:
        raise PaddockError("PADDOCK_ADMIN_KEY must be set (the CLI generates one if missing)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        policies = load_policies(settings.policies_dir)
        raw_store = open_store(settings.resolved_database_url())
        await raw_store.open()
        events_notifier = notifier or make_notifier(settings.redis_url)
        store = cast(Store, NotifyingStore(raw_store, events_notifier))
        runner_backend = backend or await _default_backend(settings)
        agents = runner_backend  # E2B's agents are reached through the backend's transport
        transport = agents.agent_transport() if isinstance(agents, SupportsAgentTransport) else None
        http = httpx.AsyncClient(transport=transport)
        runner_service = RunnerService(
            settings=settings, store=store, backend=runner_backend, policies=policies
        )
        tenancy_service = TenancyService(store=store, settings=settings)
        runner_service.org_plan = tenancy_service.plan_for
        await tenancy_service.ensure_bootstrap_org()
        signing_key = settings.audit_signing_key
        audit_service = AuditService(
            store=store,
            signer=CheckpointSigner.from_setting(
                signing_key.get_secret_value() if signing_key else None,
                fallback_secret=settings.secret_key.get_secret_value(),
            ),
        )
        checkpoints = asyncio.get_running_loop().create_task(
            _checkpoint_periodically(store, audit_service, settings.checkpoint_interval_s)
        )
        purging = asyncio.get_running_loop().create_task(
            purge_transcripts_periodically(store, settings.transcript_purge_interval_s)
        )
        app.state.settings = settings
        app.state.store = store
        app.state.tenancy = tenancy_service
        app.state.audit = audit_service
        app.state.approvals = ApprovalService(store=store)
        app.state.follow = FollowService(
            store=store,
            notifier=events_notifier,
            poll_s=settings.follow_poll_s,
            heartbeat_s=settings.follow_heartbeat_s,
        )
        app.state.runners = runner_service
        egress_policy = load_egress_policy(
            settings.policies_dir, policies, extra_provider_hosts=settings.egress_provider_hosts
        )
        app.state.egress = EgressService(store=store, runners=runner_service, policy=egress_policy)
        app.state.sessions = SessionService(
            store=store,
            runners=runner_service,
            http=http,
            message_timeout_s=settings.message_timeout_s,
            # Transcript text is redacted by the gateway chain's own PII patterns.
            redact=ContentPolicies.load(settings.policies_dir).redactor(),
            on_budget_exhausted=settings.on_budget_exhausted,
        )
        pool = WarmPool(runners=runner_service, http=http, settings=settings)
        reconciler = Reconciler(
            store=store,
            backend=runner_backend,
            runners=runner_service,
            settings=settings,
            pool=pool if pool.sizes else None,
            sessions=app.state.sessions,
        )
        reconciler.start()
        app.state.pool = pool
        app.state.reconciler = reconciler
        logger.info("control plane up (backend %s)", runner_backend.name)
        try:
            yield
        finally:
            checkpoints.cancel()
            purging.cancel()
            await asyncio.gather(checkpoints, purging, return_exceptions=True)
            await reconciler.close()
            await pool.close()
            await runner_service.shutdown(stop_runners=settings.shutdown_runners == "stop")
            await http.aclose()
            if backend is None:
                await runner_backend.close()
            await raw_store.close()
            if notifier is None:
                await events_notifier.close()

    app = FastAPI(
        title="Paddock control plane",
        version="0.1.0",
        lifespan=lifespan,
        description="Launch and govern sandboxed AI agent runners.",
    )
    install_error_handlers(app)
    app.include_router(runners.router)
    app.include_router(sessions.router)
    app.include_router(tenancy.router)
    app.include_router(audit.router)
    app.include_router(follow.router)
    app.include_router(egress.router)
    app.include_router(approvals.router)
    app.include_router(pools.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
