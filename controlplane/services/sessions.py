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
    AppendTranscript,
    AuditEvent,
    AuditQuery,
    BackendError,
    ConflictError,
    InsertSession,
    LlmCallRecord,
    NotFoundError,
    Operation,
    Redactor,
    RunnerRecord,
    SessionRecord,
    Store,
    TranscriptEntry,
    TranscriptSettings,
    UpdateSession,
    make_entry,
    new_id,
    transcript_settings,
    utcnow,
)

from ..domain import RunnerState
from .runners import Principal, RunnerService

__all__ = ["ENDING_EVENTS", "MessageEvent", "SessionService", "SpendReport"]

logger = logging.getLogger(__name__)

ENDING_EVENTS = ("budget.exhausted", "session.end_requested")
"""Audit events by which the gateway asks the control plane to end a session."""
"""Audited by the gateway when a session's budget cannot pay for another call."""


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
        on_budget_exhausted: str = "ready",
        redact: Redactor,
    ) -> None:
        """`on_budget_exhausted`: `ready` or `stop`, what a runner whose session ran out of
        budget becomes."""
        self._store = store
        self._on_exhausted = on_budget_exhausted
        self._ended_seen: dict[str, int] = {}  # org -> seq of the last ending event read
        self._runners = runners
        self._http = http
        self._message_timeout_s = message_timeout_s
        self._redact = redact

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

    async def close_if_ended(self, who: Principal, session_id: str) -> str | None:
        """Close an open session the gateway asked to end: out of budget (it audits
        `budget.exhausted`; spend at the budget counts too, reason `budget_exhausted`), or
        stopped by a policy (`session.end_requested`, e.g. reason `loop_detected`). Its runner
        goes back to ready, then stops if so configured. The reason, if it closed it."""
        session = await self._store.get_session(session_id)
        if session is None or session.state != "open":
            return None
        query = AuditQuery(session_id=session_id, types=ENDING_EVENTS, limit=1)
        asked = await self._store.list_audit(session.org_id, query=query)
        if asked:
            reason = str(asked[0].data.get("reason") or "budget_exhausted")
        elif session.budget_usd is not None and session.spent_usd >= session.budget_usd:
            reason = "budget_exhausted"
        else:
            return None
        try:
            await self.close(who, session_id, reason=reason)
            if self._on_exhausted == "stop":
                await self._runners.stop(who, session.runner_id, reason=reason)
        except ConflictError:  # closed or stopped meanwhile: nothing left to do
            return None
        logger.info("session %s closed: %s", session_id, reason)
        return reason

    async def close_ended_between_turns(self, live: list[RunnerRecord]) -> None:
        """Sessions the gateway asked to end between agent turns (out of budget, a loop; an
        agent working on its own) are closed here, by the reconciler's pass; after a turn,
        `send` does it at once. Reads only the ending events not read before (per org)."""
        open_sessions = {r.session_id: r for r in live if r.session_id is not None}
        for org_id in {r.org_id for r in open_sessions.values()}:
            after = self._ended_seen.get(org_id, 0)
            query = AuditQuery(types=ENDING_EVENTS, after_seq=after, limit=100)
            for event in await self._store.list_audit(org_id, query=query):
                self._ended_seen[org_id] = event.seq
                if event.session_id is not None and event.session_id in open_sessions:
                    who = Principal(org_id=org_id, actor="system")
                    await self.close_if_ended(who, event.session_id)

    async def spend(self, who: Principal, session_id: str) -> SpendReport:
        session = await self.get(who, session_id)
        return SpendReport(session, await self._store.list_llm_calls(session_id=session_id))

    async def transcript(
        self, who: Principal, session_id: str
    ) -> tuple[SessionRecord, TranscriptSettings, list[TranscriptEntry]]:
        session = await self.get(who, session_id)
        settings = await transcript_settings(self._store, session.org_id)
        return session, settings, await self._store.list_transcript(session_id)

    def _entry(
        self,
        runner: RunnerRecord,
        session: SessionRecord,
        settings: TranscriptSettings,
        kind: str,
        text: str,
    ) -> AppendTranscript:
        return AppendTranscript(
            (
                make_entry(
                    org_id=session.org_id,
                    session_id=session.id,
                    runner_id=runner.id,
                    kind=kind,
                    role="user" if kind == "user_message" else "assistant",
                    source="controlplane",
                    text=text,
                    keep=settings.content,
                    redact=self._redact,
                ),
            )
        )

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
        keep = await transcript_settings(self._store, session.org_id)
        sent = self._entry(runner, session, keep, "user_message", content)
        await self._audit(who, runner, session, "session.message", {"chars": len(content)}, sent)
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
            self._entry(runner, session, keep, "agent_reply", reply) if reply else None,
        )
        if error is not None:
            yield MessageEvent("error", {"error": {"code": "agent_error", "message": error}})
            return
        # The agent's calls during this turn may have used the session's budget up, or a
        # policy (a loop) asked for its end.
        closed = await self.close_if_ended(who, session.id)
        current = await self._store.get_session(session.id)
        if closed is None and current is not None and current.state == "closed":
            closed = current.close_reason  # the watch ended it during the turn
        done: dict[str, Any] = {
            "session_id": session.id,
            "reply": reply,
            "duration_ms": duration_ms,
            "spent_usd": current.spent_usd if current else None,
            "budget_usd": session.budget_usd,
        }
        if closed:
            done["closed"] = closed
        yield MessageEvent("done", done)

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
        transcript: AppendTranscript | None = None,
    ) -> None:
        event = AuditEvent(
            org_id=who.org_id,
            actor=who.actor,
            type=kind,
            runner_id=runner.id,
            session_id=session.id,
            data=data,
        )
        ops: list[Operation] = [AppendAudit(event)]
        if transcript is not None:
            ops.append(transcript)
        await self._store.apply(ops)


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
