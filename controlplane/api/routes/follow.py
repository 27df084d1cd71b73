"""Live following as Server-Sent Events, resumable with Last-Event-ID (the audit seq)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from paddock_core import AuditQuery, InvalidRequestError, NotFoundError

from ...services import FollowService, Principal
from ..deps import Reader, Runners, Sessions
from ..schemas import AuditEventPublic

router = APIRouter(prefix="/v1", tags=["follow"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _follow(request: Request) -> FollowService:
    service: FollowService = request.app.state.follow
    return service


def _resume_point(last_event_id: str | None, after: int) -> int:
    if last_event_id is None:
        return after
    try:
        return max(int(last_event_id), 0)
    except ValueError:
        raise InvalidRequestError(
            "Last-Event-ID must be the seq of the last event received", field="Last-Event-ID"
        ) from None


def _frame(seq: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


_HEARTBEAT = b": keepalive\n\n"


@router.get("/runners/{runner_id}/events/stream")
async def follow_runner_events(
    runner_id: str,
    request: Request,
    who: Reader,
    runners: Runners,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    await runners.events(who, runner_id, limit=1)  # 404 for other orgs' runners
    query = AuditQuery(runner_id=runner_id, after_seq=_resume_point(last_event_id, after))

    async def frames() -> AsyncIterator[bytes]:
        async for event in _follow(request).follow(who.org_id, query):
            if event is None:
                yield _HEARTBEAT
            else:
                yield _frame(
                    event.seq, event.type, AuditEventPublic.of(event).model_dump(mode="json")
                )

    return StreamingResponse(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get("/sessions/{session_id}/spend/stream")
async def follow_session_spend(
    session_id: str,
    request: Request,
    who: Reader,
    sessions: Sessions,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    session = await sessions.get(who, session_id)
    start = _resume_point(last_event_id, after)
    base = AuditQuery(session_id=session_id)
    return StreamingResponse(
        _spend_frames(_follow(request), who, base, start, session.budget_usd, session_id),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )


@router.get("/orgs/{org_id}/spend/stream")
async def follow_org_spend(
    org_id: str,
    request: Request,
    who: Reader,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    if org_id != who.org_id:
        raise NotFoundError(f"org {org_id} not found", field="org_id")
    start = _resume_point(last_event_id, after)
    return StreamingResponse(
        _spend_frames(_follow(request), who, AuditQuery(), start, None, None),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )


async def _spend_frames(
    follow: FollowService,
    who: Principal,
    base: AuditQuery,
    start: int,
    budget_usd: float | None,
    session_id: str | None,
) -> AsyncIterator[bytes]:
    totals = await follow.spend_before(who.org_id, base, start)
    types = ("llm.call", "session.closed") if session_id else ("llm.call",)
    query = AuditQuery(session_id=base.session_id, types=types, after_seq=start)
    async for event in follow.follow(who.org_id, query):
        if event is None:
            yield _HEARTBEAT
            continue
        if event.type == "session.closed":
            yield _frame(
                event.seq,
                "closed",
                {"session_id": session_id, **event.data, "totals": totals.as_dict(budget_usd)},
            )
            return
        totals.add(event)
        call = {
            k: event.data.get(k)
            for k in (
                "call_id",
                "model",
                "provider",
                "prompt_tokens",
                "completion_tokens",
                "cost_usd",
                "latency_ms",
                "status",
            )
        }
        yield _frame(
            event.seq,
            "call",
            {
                "runner_id": event.runner_id,
                "session_id": event.session_id,
                "time": event.time,
                **call,
                "totals": totals.as_dict(budget_usd),
            },
        )
