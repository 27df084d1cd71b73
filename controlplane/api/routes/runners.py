"""Runner routes: create, read, stop, delete, audit events, open a session."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from ...services import RunnerRequest
from ..deps import Operator, Reader, Runners, Sessions
from ..schemas import AuditEventPublic, RunnerCreate, RunnerPublic, SessionCreate, SessionPublic

router = APIRouter(prefix="/v1/runners", tags=["runners"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_runner(
    body: RunnerCreate,
    who: Operator,
    runners: Runners,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="replays answer the same runner"),
    ] = None,
) -> RunnerPublic:
    request = RunnerRequest(
        body.profile, body.sandbox, body.budget_usd, body.image, body.model, body.ttl_s, body.api
    )
    runner, replayed = await runners.create(who, request, idempotency_key=idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return RunnerPublic.of(runner)


@router.get("")
async def list_runners(who: Reader, runners: Runners) -> dict[str, list[RunnerPublic]]:
    return {"runners": [RunnerPublic.of(r) for r in await runners.list_for(who)]}


@router.get("/{runner_id}")
async def get_runner(runner_id: str, who: Reader, runners: Runners) -> RunnerPublic:
    return RunnerPublic.of(await runners.get(who, runner_id))


@router.post("/{runner_id}/stop")
async def stop_runner(runner_id: str, who: Operator, runners: Runners) -> RunnerPublic:
    return RunnerPublic.of(await runners.stop(who, runner_id))


@router.delete("/{runner_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_runner(runner_id: str, who: Operator, runners: Runners) -> Response:
    await runners.delete(who, runner_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{runner_id}/events")
async def runner_events(
    runner_id: str,
    who: Reader,
    runners: Runners,
    after: int = Query(0, ge=0, description="return events with seq > after"),
    limit: int = Query(500, ge=1, le=5000),
) -> dict[str, Any]:
    events = await runners.events(who, runner_id, after_seq=after, limit=limit)
    public = [AuditEventPublic.of(e) for e in events]
    return {"events": public, "next_after": public[-1].seq if public else after}


@router.post("/{runner_id}/sessions", status_code=status.HTTP_201_CREATED)
async def open_session(
    runner_id: str, who: Operator, sessions: Sessions, body: SessionCreate | None = None
) -> SessionPublic:
    budget = body.budget_usd if body else None
    return SessionPublic.of(await sessions.open(who, runner_id, budget))
