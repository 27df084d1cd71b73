"""Sessions: one open conversation per runner, its messages relayed to the agent, its spend.

No FastAPI imports. A message is checked (session open, runner running) before anything is
streamed, so the route can still answer a plain 4xx; after that, failures arrive as an
`error` event in the stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from paddock_core import (
    AppendAudit,
    AuditEvent,
    BackendError,
    ConflictError,
    InsertSession,
    LlmCallRecord,
    NotFoundError,
    RunnerRecord,
    SessionRecord,
    Store,
    UpdateSession,
    new_id,
    utcnow,
)

from ..domain import RunnerState
from .runners import Principal, RunnerService

__all__ = ["MessageEvent", "SessionService", "SpendReport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessageEvent:
    """One event of a reply: `delta` (text), `done` (the whole reply) or `error`."""

    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class SpendReport:
    session: SessionRecord
    calls: list[LlmCallRecord] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        cost = sum(c.cost_usd for c in self.calls)
        budget = self.session.budget_usd
        return {
            "calls": len(self.calls),
            "prompt_tokens": sum(c.prompt_tokens for c in self.calls),
            "completion_tokens": sum(c.completion_tokens for c in self.calls),
            "cost_usd": round(cost, 8),
            "budget_usd": budget,
            "remaining_usd": None if budget is None else round(max(budget - cost, 0.0), 8),
        }


class SessionService:
    def __init__(
        self,
        *,
        store: Store,
        runners: RunnerService,
        http: httpx.AsyncClient,
        message_timeout_s: float,
    ) -> None:
        self._store = store
        self._runners = runners
        self._http = http
        self._message_timeout_s = message_timeout_s

    async def get(self, who: Principal, session_id: str) -> SessionRecord:
        session = await self._store.get_session(session_id)
        if session is None or session.org_id != who.org_id:
            raise NotFoundError(f"session {session_id} not found", field="session_id")
        return session

    async def open(self, who: Principal, runner_id: str, budget_usd: float | None) -> SessionRecord:
        runner = await self._runners.get(who, runner_id)
        if runner.state == RunnerState.SUSPENDED and runner.session_id is None:
            runner = await self._runners.wake(runner_id, who.actor)  # a new session resumes it
        if runner.state == RunnerState.RUNNING:
            raise ConflictError(
                f"runner {runner_id} already has an open session ({runner.session_id})",
                state=runner.state,
                session_id=runner.session_id,
            )
        session = SessionRecord(
            id=new_id("ses"), org_id=who.org_id, runner_id=runner_id, budget_usd=budget_usd
        )
        opened = AuditEvent(
            org_id=who.org_id,
            actor=who.actor,
            type="session.opened",
            runner_id=runner_id,
            session_id=session.id,
            data={"budget_usd": budget_usd},
        )
        await self._runners.transition(
            runner_id,
            "open_session",
            who.actor,
            "session_opened",
            changes={"session_id": session.id, "last_active_at": utcnow()},
            extra=[InsertSession(session), AppendAudit(opened)],
        )
        return session

    async def close(
        self, who: Principal, session_id: str, *, reason: str = "requested"
    ) -> SessionRecord:
        session = await self.get(who, session_id)
        if session.state == "closed":
            return session  # closing twice is not an error
        runner = await self._runners.get(who, session.runner_id)
        if runner.state == RunnerState.SUSPENDED and runner.session_id == session.id:
            runner = await self._runners.wake(runner.id, who.actor)
        closed = AuditEvent(
            org_id=who.org_id,
            actor=who.actor,
            type="session.closed",
            runner_id=runner.id,
            session_id=session.id,
            data={"reason": reason},
        )
        update = UpdateSession(
            session.id,
            session.version,
            {"state": "closed", "closed_at": utcnow(), "close_reason": reason},
        )
        await self._runners.transition(
            runner.id,
            "close_session",
            who.actor,
            "session_closed",
            changes={"session_id": None},
            extra=[update, AppendAudit(closed)],
        )
        return await self.get(who, session_id)

    async def spend(self, who: Principal, session_id: str) -> SpendReport:
        session = await self.get(who, session_id)
        return SpendReport(session, await self._store.list_llm_calls(session_id=session_id))

    async def check_can_message(
        self, who: Principal, session_id: str
    ) -> tuple[SessionRecord, RunnerRecord]:
        """Raise the 4xx a message would get, before any byte is streamed."""
        session = await self.get(who, session_id)
        if session.state != "open":
            raise ConflictError(
                f"session {session_id} is closed ({session.close_reason})", state="closed"
            )
        runner = await self._runners.get(who, session.runner_id)
        if runner.session_id == session.id:
            # Activity: resets the idle timeout, and resumes a suspended runner first.
            runner = await self._runners.wake(runner.id, who.actor)
        if runner.state != RunnerState.RUNNING or runner.session_id != session.id:
            raise ConflictError(
                f"runner {runner.id} is {runner.state}; it cannot take messages", state=runner.state
            )
        return session, runner

    async def send(
        self, who: Principal, session: SessionRecord, runner: RunnerRecord, content: str
    ) -> AsyncIterator[MessageEvent]:
        """Relay one user message to the agent; yield its reply as it streams."""
        await self._audit(who, runner, session, "session.message", {"chars": len(content)})
        started = time.perf_counter()
        parts: list[str] = []
        error: str | None = None
        try:
            async for text in self._agent_turn(runner, session, content):
                parts.append(text)
                yield MessageEvent("delta", {"text": text})
        except BackendError as exc:
            error = exc.message
        reply = "".join(parts)
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        await self._audit(
            who,
            runner,
            session,
            "session.reply",
            {"chars": len(reply), "duration_ms": duration_ms, "ok": error is None},
        )
        if error is not None:
            yield MessageEvent("error", {"error": {"code": "agent_error", "message": error}})
            return
        current = await self._store.get_session(session.id)
        yield MessageEvent(
            "done",
            {
                "session_id": session.id,
                "reply": reply,
                "duration_ms": duration_ms,
                "spent_usd": current.spent_usd if current else None,
                "budget_usd": session.budget_usd,
            },
        )

    async def _agent_turn(
        self, runner: RunnerRecord, session: SessionRecord, content: str
    ) -> AsyncIterator[str]:
        url = f"{self._runners.agent_url(runner)}/v1/chat/completions"
        headers = {
            "Authorization": f"Bearer {self._runners.agent_token(runner.id)}",
            "x-openclaw-session-key": session.id,
        }
        body = {
            "model": "openclaw/default",
            "messages": [{"role": "user", "content": content}],
            "stream": True,
        }
        timeout = httpx.Timeout(self._message_timeout_s, connect=5.0)
        try:
            async with self._http.stream(
                "POST", url, json=body, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise BackendError(f"agent answered {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    text = _delta_text(line)
                    if text:
                        yield text
        except httpx.HTTPError as exc:
            raise BackendError(f"agent unreachable: {type(exc).__name__}: {exc}") from exc

    async def _audit(
        self,
        who: Principal,
        runner: RunnerRecord,
        session: SessionRecord,
        kind: str,
        data: dict[str, Any],
    ) -> None:
        event = AuditEvent(
            org_id=who.org_id,
            actor=who.actor,
            type=kind,
            runner_id=runner.id,
            session_id=session.id,
            data=data,
        )
        await self._store.apply([AppendAudit(event)])


def _delta_text(line: str) -> str:
    if not line.startswith("data:"):
        return ""
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return ""
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        return ""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    text = delta.get("content")
    return text if isinstance(text, str) else ""
