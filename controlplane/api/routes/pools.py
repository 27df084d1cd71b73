"""Warm pools: what each holds (platform admin only; pooled runners belong to no org)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from paddock_core import PermissionDeniedError

from ...services.pool import WarmPool
from ..deps import Admin

router = APIRouter(prefix="/v1/pools", tags=["pools"])


@router.get("")
async def list_pools(who: Admin, request: Request) -> dict[str, list[dict[str, Any]]]:
    if not who.platform:
        raise PermissionDeniedError("only the platform admin key sees the warm pools")
    pool: WarmPool = request.app.state.pool
    return {"pools": await pool.status()}
