"""The REST API subset the `e2b` SDK (2.x) speaks, with E2B's status codes and error bodies,
plus `/_fake/...` for the tests' knobs.

    POST   /v2/sandboxes                    create (Idempotency-Key honoured)      201
    GET    /v2/sandboxes                    list (metadata, state=a,b, limit, nextToken) 200
    GET    /sandboxes/{id}                  detail                                   200
    DELETE /sandboxes/{id}                  kill                                     204
    POST   /sandboxes/{id}/timeout          set the timeout, from now                204
    PUT    /sandboxes/{id}/network          replace the egress config                204
    POST   /sandboxes/{id}/pause            pause (409 when paused already)          204
    POST   /v2/sandboxes/{id}/connect       resume / extend                          200
    POST   /sandboxes/{id}/resume           resume (legacy)                          201

Every call needs `X-API-KEY`; errors are `{"code": status, "message": ...}`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ._envd import SandboxRouter, route_of
from ._state import FakeE2B, FakeE2BConfig, FakeError

__all__ = ["FakeE2BApp", "create_fake_e2b"]

logger = logging.getLogger(__name__)

_PAGE = 100


def _error(exc: FakeError) -> JSONResponse:
    headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after is not None else None
    return JSONResponse(
        {"code": exc.status, "message": exc.message}, status_code=exc.status, headers=headers
    )


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise FakeError(400, "request body must be JSON") from exc
    if not isinstance(body, dict):
        raise FakeError(400, "request body must be a JSON object")
    return body


def _api(fake: FakeE2B) -> FastAPI:
    app = FastAPI(title="Paddock fake E2B")

    @app.exception_handler(FakeError)
    async def on_fake_error(_: Request, exc: FakeError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        logger.error("fake e2b: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(FakeError(500, f"{type(exc).__name__}: {exc}"))

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/_fake/"):
            response: Response = await call_next(request)
            return response
        if request.headers.get("x-api-key") != fake.config.api_key:
            return _error(FakeError(401, "Invalid API key, please visit the dashboard"))
        response = await call_next(request)
        return response

    @app.post("/v2/sandboxes", status_code=201)
    async def create(request: Request) -> JSONResponse:
        key = request.headers.get("idempotency-key")
        sandbox = await fake.create(await _json(request), key)
        return JSONResponse(sandbox.created_body(fake.config.domain), status_code=201)

    @app.get("/v2/sandboxes")
    async def list_sandboxes(request: Request) -> JSONResponse:
        query = request.query_params
        metadata = {unquote(k): unquote(v) for k, v in parse_qsl(query.get("metadata", ""), True)}
        states = [x for item in query.getlist("state") for x in item.split(",") if x]
        found = fake.list(metadata, states)
        start = int(query.get("nextToken") or 0)
        limit = min(int(query.get("limit") or _PAGE), _PAGE)
        page = found[start : start + limit]
        headers = {"x-next-token": str(start + limit)} if start + limit < len(found) else {}
        return JSONResponse([s.listed_body() for s in page], headers=headers)

    @app.get("/sandboxes/{sandbox_id}")
    async def detail(sandbox_id: str) -> JSONResponse:
        return JSONResponse(fake.get(sandbox_id).detail_body(fake.config.domain))

    @app.delete("/sandboxes/{sandbox_id}", status_code=204)
    async def kill(sandbox_id: str) -> Response:
        await fake.kill(sandbox_id)
        return Response(status_code=204)

    @app.post("/sandboxes/{sandbox_id}/timeout", status_code=204)
    async def set_timeout(sandbox_id: str, request: Request) -> Response:
        fake.set_timeout(sandbox_id, (await _json(request)).get("timeout"))
        return Response(status_code=204)

    @app.put("/sandboxes/{sandbox_id}/network", status_code=204)
    async def update_network(sandbox_id: str, request: Request) -> Response:
        body = await _json(request)  # replaces the egress config; omitted fields are cleared
        sandbox = fake.get(sandbox_id)
        sandbox.allow_internet_access = body.pop("allowInternetAccess", None)
        sandbox.network = {**body, "allowPublicTraffic": sandbox.network.get("allowPublicTraffic")}
        return Response(status_code=204)

    @app.post("/sandboxes/{sandbox_id}/pause", status_code=204)
    async def pause(sandbox_id: str) -> Response:
        await fake.pause(sandbox_id)
        return Response(status_code=204)

    @app.post("/v2/sandboxes/{sandbox_id}/connect")
    async def connect(sandbox_id: str, request: Request) -> JSONResponse:
        sandbox = await fake.connect(sandbox_id, (await _json(request)).get("timeout"))
        return JSONResponse(sandbox.created_body(fake.config.domain))

    @app.post("/sandboxes/{sandbox_id}/resume", status_code=201)
    async def resume(sandbox_id: str, request: Request) -> JSONResponse:
        body = await _json(request)
        sandbox = await fake.connect(sandbox_id, body.get("timeout", 300))
        return JSONResponse(sandbox.created_body(fake.config.domain), status_code=201)

    # --- knobs and views for tests (no API key) ----------------------------------------------

    @app.get("/_fake/info")
    async def info() -> dict[str, Any]:
        return {
            "instance": fake.config.instance,
            "domain": fake.config.domain,
            "network": fake.vms.network_name,
            "egress": {host: fake.egress_url(host) for host in fake.config.upstreams},
        }

    @app.get("/_fake/stats")
    async def stats() -> dict[str, Any]:
        return {
            **fake.stats,
            "sandboxes": {
                s.sandbox_id: {"state": s.state, "timeouts_set": s.timeouts_set, "end_at": s.end_at}
                for s in fake.sandboxes.values()
            },
        }

    @app.post("/_fake/refuse-creates")
    async def refuse_creates(request: Request) -> dict[str, bool]:
        body = await _json(request)
        fake.refuse_creates(
            int(body.get("count", 1)),
            str(body.get("message", "rate limit exceeded")),
            body.get("retry_after"),
        )
        return {"ok": True}

    @app.post("/_fake/reset")
    async def reset() -> dict[str, bool]:
        fake.clear_refusals()
        return {"ok": True}

    @app.post("/_fake/sandboxes/{sandbox_id}/vanish")
    async def vanish(sandbox_id: str) -> dict[str, bool]:
        await fake.vanish(sandbox_id)
        return {"ok": True}

    return app


class FakeE2BApp:
    """The fake E2B as one ASGI app: the REST API, and every sandbox's envd and ports
    (requests that name a sandbox by `E2b-Sandbox-Id` or by host). Point the SDK's `api_url`
    and `sandbox_url` at it. `fake` is the state behind it (for in-process tests)."""

    def __init__(self, config: FakeE2BConfig | None = None) -> None:
        self.fake = FakeE2B(config or FakeE2BConfig())
        self._api = _api(self.fake)
        self._router = SandboxRouter(self.fake)

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.fake.open()
            try:
                yield
            finally:
                await self._router.aclose()
                await self.fake.close()

        self._api.router.lifespan_context = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_of(scope) is not None:
            await self._router(scope, receive, send)
        else:
            await self._api(scope, receive, send)


def create_fake_e2b(config: FakeE2BConfig | None = None) -> FakeE2BApp:
    """The fake E2B app (see `FakeE2BApp`); its lifespan creates and removes the VMs."""
    return FakeE2BApp(config)
