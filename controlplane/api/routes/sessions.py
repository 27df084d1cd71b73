"""Session routes: read, message (SSE or JSON), spend, close."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ...services import MessageEvent
from ..deps import Operator, Reader, Sessions
from ..errors import error_body
from ..schemas import (
    LlmCallPublic,
    MessageCreate,
    SessionPublic,
    SpendPublic,
    TranscriptEntryPublic,
    TranscriptPublic,
    render_transcript,
)

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


@router.get("/{session_id}/transcript", response_model=None)
async def session_transcript(
    session_id: str,
    who: Reader,
    sessions: Sessions,
    format: Literal["json", "text"] = "json",  # noqa: A002 (the query parameter's name)
) -> TranscriptPublic | PlainTextResponse:
    """The session's transcript: what a person sent, what the model was asked and answered,
    the tools it called. Text only when the org stores content (else sizes), PII redacted."""
    session, settings, entries = await sessions.transcript(who, session_id)
    if format == "text":
        return PlainTextResponse(render_transcript(session.id, settings.content, entries))
    return TranscriptPublic(
        session_id=session.id,
        runner_id=session.runner_id,
        content_stored=settings.content,
        retention_days=settings.retention_days,
        entries=[TranscriptEntryPublic.of(e) for e in entries],
    )


async def _sse(events: AsyncIterator[MessageEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n".encode()
