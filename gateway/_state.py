"""What the gateway's lifespan opens, kept on `app.state.gateway` (never in module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from paddock_core import Notifier, Policies, Redactor, Store

from ._cache import ResponseCache
from ._chains import ChainSource
from ._costs import Ledger, Pricing
from ._metrics import GatewayMetrics
from ._orgs import OrgSettingsSource
from ._proxy import Proxy
from ._resilience import Breakers
from ._routing import Router
from ._settings import GatewaySettings

__all__ = ["GatewayState", "StateDep", "get_state", "state_of"]


@dataclass(frozen=True)
class GatewayState:
    settings: GatewaySettings
    policies: Policies
    store: Store
    router: Router
    proxy: Proxy
    pricing: Pricing
    ledger: Ledger
    chains: ChainSource
    orgs: OrgSettingsSource
    cache: ResponseCache
    breakers: Breakers
    metrics: GatewayMetrics
    notifier: Notifier
    """Wakes held calls when their org's audit trail grows (a decision is audited)."""
    redact: Redactor
    """PII redaction for stored transcript text (the chain's PII patterns)."""


async def get_state(request: Request) -> GatewayState:
    """Async on purpose: FastAPI runs a sync dependency in a worker thread, per request."""
    return state_of(request)


def state_of(request: Request) -> GatewayState:
    state = getattr(request.app.state, "gateway", None)
    if not isinstance(state, GatewayState):
        # Only reachable when the app is driven without its lifespan (a test harness mistake).
        raise RuntimeError("the gateway's lifespan has not run")
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]
