"""Egress routes: a runner's effective egress rules, and live changes to its own."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from egress import EgressOverride

from ...services.egress import EgressService
from ..deps import Operator, Reader

router = APIRouter(prefix="/v1/runners", tags=["egress"])


def _egress(request: Request) -> EgressService:
    service: EgressService = request.app.state.egress
    return service


Egress = Annotated[EgressService, Depends(_egress)]


@router.get("/{runner_id}/egress")
async def get_egress(runner_id: str, who: Reader, egress: Egress) -> dict[str, Any]:
    """The runner's own rules (`override`) and what applies (`effective`, with its profile's)."""
    return await egress.get(who, runner_id)


@router.put("/{runner_id}/egress")
async def put_egress(
    runner_id: str, body: EgressOverride, who: Operator, egress: Egress
) -> dict[str, Any]:
    """Replace the runner's own rules: `allow` and `deny` host rules, `private_ranges` to open.

    Applies to the runner's next connection. Allow rules and private ranges must fall within
    what the org allows (403 otherwise); deny rules may always be added.
    """
    return await egress.put(who, runner_id, body)
