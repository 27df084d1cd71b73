"""The gateway's HTTP routes. Thin: the work lives in `_pipeline` and the modules it calls."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, cast

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route

from paddock_core import AuthenticationError, claim_approval

from ._approvals import approval_for, pending_answer, rejection
from ._auth import CallerDep, ServingCallerDep, authenticate, require_serving
from ._calls import STARTED_KEY, parse_call, read_body
from ._errors import PROTOCOL_KEY
from ._pipeline import handle_call
from ._state import StateDep, state_of
from .providers import Endpoint, client_protocol

__all__ = ["LLM_PATHS", "LLM_ROUTES", "handle_llm_request", "router"]

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics; the admin key is required unless `metrics_public` is set."""
    if not state.settings.metrics_public:
        admin = state.settings.admin_key
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if (
            admin is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(given.strip().encode(), admin.get_secret_value().encode())
        ):
            raise AuthenticationError("metrics need the admin key", reason="admin_key_required")
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/models")
async def list_models(request: Request, state: StateDep, caller: CallerDep) -> dict[str, Any]:
    """The models this key may use: the priced local models and configured aliases (and the
    runner's own model). OpenAI's list shape, or Anthropic's for Anthropic clients."""
    org = await state.orgs.get(caller.org_id)
    owners: dict[str, str] = {}
    for model in state.policies.prices:
        found = state.router.provider_for(model, org)
        if found is not None and state.router.upstream(found[0], org).configured:
            owners[model] = found[0]
    owners.update(state.router.configured_models(org))
    if caller.runner is not None and caller.runner.model not in owners:
        found = state.router.provider_for(caller.runner.model, org)
        owners[caller.runner.model] = found[0] if found else "paddock"
    if "anthropic-version" in request.headers:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
            for m in owners
        ]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": owner}
            for m, owner in owners.items()
        ],
    }


@router.get("/v1/approvals/{approval_id}")
async def approval_result(
    approval_id: str, request: Request, state: StateDep, caller: ServingCallerDep
) -> Response:
    """A held call (queue mode), for the caller who made it: 202 while pending; 403 (step
    `approval`) once rejected or expired; once approved, the call runs now and this answers
    with its result, once (a second fetch is 409 `approval_already_used`)."""
    record = await approval_for(state, caller, approval_id)
    request.scope[PROTOCOL_KEY] = client_protocol(record.endpoint)  # errors in its shape
    if record.status == "pending":
        return pending_answer(record)
    if record.status != "approved":
        raise rejection(record)
    claimed = await claim_approval(state.store, record, by=caller.actor)
    raw = json.dumps(claimed.request).encode()
    call = parse_call(cast(Endpoint, claimed.endpoint), raw, claimed.request_headers)
    started = request.scope.get(STARTED_KEY) or time.perf_counter()
    return await handle_call(state, caller, call, started, claimed)


LLM_PATHS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
}
"""POST paths of the LLM calls; the app dispatches them to `handle_llm_request` directly."""


async def handle_llm_request(endpoint: Endpoint, request: Request, started: float) -> Response:
    """One LLM call. It takes none of FastAPI's dependency solving or middleware: the same
    steps as the Annotated dependencies above, in order."""
    state = state_of(request)
    caller = await require_serving(await authenticate(request, state))
    raw = await read_body(request, state.settings.max_body_bytes)
    call = parse_call(endpoint, raw, request.headers)
    return await handle_call(state, caller, call, started)


def _route(path: str, endpoint: Endpoint) -> Route:
    async def handle(request: Request) -> Response:
        started = request.scope.get(STARTED_KEY) or time.perf_counter()
        return await handle_llm_request(endpoint, request, started)

    return Route(path, handle, methods=["POST"])


LLM_ROUTES = [_route(path, endpoint) for path, endpoint in LLM_PATHS.items()]
"""The same calls as routes: what the app does not dispatch itself (another method: 405)."""
