"""`create_gateway(settings)`: the governance gateway as an ASGI app.

Nothing happens at import or in the factory; the lifespan loads the policies, opens the store
and the upstream connection pool, and closes them again on shutdown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from paddock_core import load_policies, open_store

from ._costs import Ledger, Pricing
from ._errors import install_error_handlers
from ._proxy import Proxy
from ._routes import router as routes
from ._routing import Router
from ._settings import GatewaySettings
from ._state import GatewayState

if TYPE_CHECKING:
    import httpx

__all__ = ["create_gateway"]

logger = logging.getLogger(__name__)


def create_gateway(
    settings: GatewaySettings, *, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The gateway app. `upstream_transport` replaces the network to the providers (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        policies = load_policies(settings.policies_dir)
        async with AsyncExitStack() as stack:
            store = open_store(settings.resolved_database_url())
            await store.open()
            stack.push_async_callback(store.close)
            proxy = Proxy.open(settings, upstream_transport)
            stack.push_async_callback(proxy.aclose)
            app.state.gateway = GatewayState(
                settings=settings,
                policies=policies,
                store=store,
                router=Router.from_settings(policies, settings, os.environ),
                proxy=proxy,
                ledger=Ledger(store, Pricing(policies)),
            )
            logger.info(
                "gateway ready: %d providers, %d priced models",
                len(policies.providers),
                len(policies.prices),
            )
            yield
            del app.state.gateway

    app = FastAPI(title="Paddock gateway", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(routes)
    return app
