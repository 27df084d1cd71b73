"""The gateway's HTTP routes. Thin: the work lives in `_completions`, `_auth` and `_costs`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ._auth import CallerDep, ServingCallerDep
from ._completions import handle_chat
from ._state import StateDep

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/models")
async def list_models(state: StateDep, caller: CallerDep) -> dict[str, Any]:
    """The models the caller may use, in OpenAI's list shape."""
    ids = list(state.policies.prices)
    if caller.runner is not None and caller.runner.model not in ids:
        ids.append(caller.runner.model)
    data = []
    for model in ids:
        found = state.router.provider_for(model)
        owner = found[0].spec.name if found else "paddock"
        data.append({"id": model, "object": "model", "created": 0, "owned_by": owner})
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, state: StateDep, caller: ServingCallerDep) -> Response:
    return await handle_chat(state, caller, await request.body())
