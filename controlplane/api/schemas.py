"""Request and response models: Create/Public families. Unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddock_core import AuditEvent, LlmCallRecord, RunnerRecord, SessionRecord, TranscriptEntry

__all__ = [
    "AuditEventPublic",
    "LlmCallPublic",
    "MessageCreate",
    "RunnerCreate",
    "RunnerPublic",
    "SessionCreate",
    "SessionPublic",
    "SpendPublic",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunnerCreate(_In):
    profile: str = Field(description="tool profile: minimal | standard | full (or custom)")
    sandbox: str = Field("hardened", description="sandbox level: hardened | gvisor")
    budget_usd: float | None = Field(None, ge=0, description="lifetime LLM budget, USD")
    image: str | None = Field(None, description="runner image kind: openclaw | probe")
    model: str | None = Field(None, description="model the agent uses, via the gateway")
    ttl_s: float | None = Field(
        None, gt=0, description="maximum lifetime, seconds (capped by the plane's runner_ttl_s)"
    )
    api: Literal["openai-completions", "anthropic-messages"] = Field(
        "openai-completions",
        description="the API the agent speaks to the gateway (OpenClaw image)",
    )


class SessionCreate(_In):
    budget_usd: float | None = Field(None, ge=0, description="session LLM budget, USD")


class MessageCreate(_In):
    content: str = Field(min_length=1, max_length=200_000)
    stream: bool | None = Field(
        None, description="SSE (true) or one JSON reply (false); default from Accept"
    )


class RunnerPublic(BaseModel):
    id: str
    org_id: str
    state: str
    version: int
    profile: str
    sandbox: str
    image: str
    model: str
    budget_usd: float | None
    spent_usd: float
    session_id: str | None
    backend: str
    failure: dict[str, str] | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    last_active_at: datetime | None
    pool: str | None
    """The warm pool it was claimed from, if any."""
    api: str

    @classmethod
    def of(cls, r: RunnerRecord) -> RunnerPublic:
        failure = (
            {"code": r.failure_code, "message": r.failure_message or ""} if r.failure_code else None
        )
        return cls(
            **r.model_dump(
                include={
                    "id",
                    "org_id",
                    "state",
                    "version",
                    "profile",
                    "sandbox",
                    "image",
                    "model",
                    "budget_usd",
                    "spent_usd",
                    "session_id",
                    "backend",
                    "created_at",
                    "updated_at",
                    "expires_at",
                    "last_active_at",
                    "pool",
                    "api",
                }
            ),
            failure=failure,
        )


class SessionPublic(BaseModel):
    id: str
    runner_id: str
    state: Literal["open", "closed"]
    budget_usd: float | None
    spent_usd: float
    created_at: datetime
    closed_at: datetime | None
    close_reason: str | None

    @classmethod
    def of(cls, s: SessionRecord) -> SessionPublic:
        return cls.model_validate(s.model_dump(exclude={"org_id", "version"}))


class LlmCallPublic(BaseModel):
    id: str
    provider: str
    model: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    status: int
    created_at: datetime

    @classmethod
    def of(cls, c: LlmCallRecord) -> LlmCallPublic:
        return cls.model_validate(c.model_dump(exclude={"org_id", "runner_id", "session_id"}))


class SpendPublic(BaseModel):
    session_id: str
    totals: dict[str, Any]
    calls: list[LlmCallPublic]


class AuditEventPublic(BaseModel):
    seq: int
    time: datetime
    actor: str
    type: str
    runner_id: str | None
    session_id: str | None
    data: dict[str, Any]
    hash: str

    @classmethod
    def of(cls, e: AuditEvent) -> AuditEventPublic:
        return cls.model_validate(e.model_dump(exclude={"org_id", "prev_hash"}))


class TranscriptEntryPublic(BaseModel):
    id: str
    kind: str
    role: str
    source: str
    text: str | None
    chars: int
    data: dict[str, Any]
    redacted: list[str]
    created_at: datetime

    @classmethod
    def of(cls, e: TranscriptEntry) -> TranscriptEntryPublic:
        return cls.model_validate(e.model_dump(exclude={"org_id", "session_id", "runner_id"}))


class TranscriptPublic(BaseModel):
    session_id: str
    runner_id: str
    content_stored: bool
    """False: the org keeps metadata only (kinds, roles, sizes), no text."""
    retention_days: int
    entries: list[TranscriptEntryPublic]


def render_transcript(session_id: str, content: bool, entries: list[TranscriptEntry]) -> str:
    """The transcript as text a person reads in the morning: one block per entry."""
    lines = [f"Transcript of session {session_id}" + ("" if content else " (metadata only)")]
    for e in entries:
        tool = e.data.get("tool")
        what = f"{e.kind} {tool}" if tool else e.kind
        head = f"[{e.created_at.strftime('%Y-%m-%d %H:%M:%S')}] {e.role} - {what}"
        if e.data.get("model"):
            head += f" ({e.data['model']})"
        if e.redacted:
            head += f" [redacted: {', '.join(e.redacted)}]"
        body = e.text if e.text is not None else f"({e.chars} characters, not stored)"
        lines.append(head)
        lines.extend("    " + line for line in (body.splitlines() or [""]))
    return "\n".join(lines) + "\n"
