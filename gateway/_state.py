"""What the gateway's lifespan opens, kept on `app.state.gateway` (never in module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from paddock_core import Policies, Store

from ._costs import Ledger
from ._proxy import Proxy
from ._routing import Router
from ._settings import GatewaySettings

__all__ = ["GatewayState", "StateDep", "get_state"]


@dataclass(frozen=True)
class GatewayState:
    settings: GatewaySettings
    policies: Policies
    store: Store
    router: Router
    proxy: Proxy
    ledger: Ledger


def get_state(request: Request) -> GatewayState:
    state = getattr(request.app.state, "gateway", None)
    if not isinstance(state, GatewayState):
        # Only reachable when the app is driven without its lifespan (a test harness mistake).
        raise RuntimeError("the gateway's lifespan has not run")
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]
