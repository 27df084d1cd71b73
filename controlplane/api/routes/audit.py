"""The audit trail: query, export (JSONL), verify, checkpoints; spend views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse

from paddock_core import AuditQuery, NotFoundError

from ...services import SpendGroup
from ..deps import Admin, Audit, Reader
from ..schemas import AuditEventPublic

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit")
async def query_audit(
    who: Reader,
    audit: Audit,
    runner_id: str | None = None,
    session_id: str | None = None,
    type: Annotated[list[str] | None, Query(description="event types; repeat for several")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int = Query(0, ge=0, description="cursor: events with seq > after"),
    limit: int = Query(500, ge=1, le=5000),
) -> dict[str, Any]:
    query = AuditQuery(runner_id, session_id, tuple(type or ()), since, until, after, limit)
    events = [AuditEventPublic.of(e) for e in await audit.query(who, query)]
    more = len(events) == limit
    return {"events": events, "next_after": events[-1].seq if more else None}


@router.get("/audit/export")
async def export_audit(who: Reader, audit: Audit) -> StreamingResponse:
    return StreamingResponse(
        audit.export(who),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="audit-{who.org_id}.jsonl"'},
    )


@router.get("/audit/verify")
async def verify_audit(who: Reader, audit: Audit) -> dict[str, Any]:
    return (await audit.verify(who)).as_dict()


@router.get("/audit/checkpoints")
async def list_checkpoints(who: Reader, audit: Audit) -> dict[str, Any]:
    checkpoints = await audit.checkpoints(who)
    return {
        "public_key": audit.public_key,
        "key_id": audit.key_id,
        "algorithm": "ed25519",
        "message": "{org_id}:{seq}:{hash}",
        "checkpoints": [
            {
                "seq": c.seq,
                "hash": c.hash,
                "time": c.time,
                "signature": c.signature,
                "key_id": c.key_id,
            }
            for c in checkpoints
        ],
    }


@router.post("/audit/checkpoints", status_code=status.HTTP_201_CREATED)
async def create_checkpoint(who: Admin, audit: Audit) -> dict[str, Any]:
    cp = await audit.checkpoint(who.org_id, who.actor)
    if cp is None:
        raise NotFoundError("nothing new to checkpoint: the newest checkpoint covers the head")
    return {"seq": cp.seq, "hash": cp.hash, "time": cp.time, "signature": cp.signature}


@router.get("/spend")
async def spend(
    who: Reader,
    audit: Audit,
    group_by: SpendGroup = "model",
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    return await audit.spend(who, group_by, since, until)
