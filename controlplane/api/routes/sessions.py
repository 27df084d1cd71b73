"""Session routes: read, message (SSE or JSON), spend, close."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from ...services import MessageEvent
from ..deps import Operator, Reader, Sessions
from ..errors import error_body
from ..schemas import LlmCallPublic, MessageCreate, SessionPublic, SpendPublic

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.get("/{session_id}")
async def get_session(session_id: str, who: Reader, sessions: Sessions) -> SessionPublic:
    return SessionPublic.of(await sessions.get(who, session_id))


@router.post("/{session_id}/close")
async def close_session(session_id: str, who: Operator, sessions: Sessions) -> SessionPublic:
    return SessionPublic.of(await sessions.close(who, session_id))


@router.get("/{session_id}/spend")
async def session_spend(session_id: str, who: Reader, sessions: Sessions) -> SpendPublic:
    report = await sessions.spend(who, session_id)
    calls = [LlmCallPublic.of(c) for c in report.calls]
    return SpendPublic(session_id=session_id, totals=report.totals(), calls=calls)


@router.post("/{session_id}/messages", response_model=None)
async def send_message(
    session_id: str,
    body: MessageCreate,
    who: Operator,
    sessions: Sessions,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse | JSONResponse:
    session, runner = await sessions.check_can_message(who, session_id)
    events = sessions.send(who, session, runner, body.content)
    wants_json = body.stream is False or (
        body.stream is None
        and "application/json" in (accept or "")
        and "text/event-stream" not in (accept or "")
    )
    if not wants_json:
        return StreamingResponse(
            _sse(events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    async for event in events:
        if event.kind == "done":
            return JSONResponse(event.data)
        if event.kind == "error":
            return JSONResponse(error_body(**event.data["error"]), 502)
    return JSONResponse(error_body("agent_error", "the agent ended without a reply"), 502)


async def _sse(events: AsyncIterator[MessageEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n".encode()
