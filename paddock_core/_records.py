"""Persistent records. Plain data: no behaviour beyond small derived values."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AuditEvent",
    "LlmCallRecord",
    "TranscriptEntry",
    "RunnerRecord",
    "SessionRecord",
    "new_id",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A short, URL-safe, sortable-enough id such as `rn_5f3a9c1e2b7d4a60`."""
    return f"{prefix}_{secrets.token_hex(8)}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunnerRecord(_Record):
    id: str
    org_id: str
    state: str
    version: int = 1
    profile: str
    sandbox: str
    image: str
    model: str
    budget_usd: float | None
    spent_usd: float = 0.0
    token_hash: str
    session_id: str | None = None
    backend: str
    backend_ref: dict[str, Any] = Field(default_factory=dict)
    egress: dict[str, Any] = Field(default_factory=dict)
    """The runner's own egress rules on top of its profile's ({allow, deny, private_ranges})."""
    failure_code: str | None = None
    failure_message: str | None = None
    created_by: str | None = None
    """The actor (key) that created the runner; its LLM spend is attributed to its team/user."""
    team_id: str | None = None
    user_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    deleted: bool = False
    expires_at: datetime | None = None
    """Absolute end of the runner's life (its TTL); also a label on its container."""
    last_active_at: datetime | None = None
    """The last message or session change; the idle timeout counts from it."""
    idempotency_key: str | None = None
    """The `Idempotency-Key` of the create request, unique per org."""
    pool: str | None = None
    """The warm pool it was made for (`image/profile/sandbox`), while pooled and after a claim."""
    claimed_at: datetime | None = None
    api: str = "openai-completions"
    """The API the agent speaks to the gateway: `openai-completions` or `anthropic-messages`."""


class SessionRecord(_Record):
    id: str
    org_id: str
    runner_id: str
    state: Literal["open", "closed"] = "open"
    version: int = 1
    budget_usd: float | None
    spent_usd: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None
    close_reason: str | None = None


class LlmCallRecord(_Record):
    id: str
    org_id: str
    runner_id: str | None
    session_id: str | None
    provider: str
    model: str
    stream: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens read from the provider's prompt cache (part of `prompt_tokens`)."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the provider's prompt cache (part of `prompt_tokens`)."""
    reasoning_tokens: int = 0
    """Hidden reasoning tokens (part of `completion_tokens`)."""
    cache_hit: bool = False
    """Answered from the gateway's response cache: nothing was sent upstream, cost is 0."""
    endpoint: str = "chat.completions"
    """chat.completions | responses | embeddings | messages."""
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    status: int
    created_at: datetime = Field(default_factory=utcnow)
    key_id: str | None = None
    """The API key that made the call (runner calls: None; the runner is the caller)."""
    team_id: str | None = None
    user_id: str | None = None


class AuditEvent(_Record):
    """One link of an org's hash chain. `seq`, `prev_hash` and `hash` are set by the store."""

    org_id: str
    actor: str
    type: str
    runner_id: str | None = None
    session_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    time: datetime = Field(default_factory=utcnow)
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""


class TranscriptEntry(_Record):
    """One line of a session's transcript: what a person sent, what the model was asked and
    answered, the tools it called. `text` is None when the org does not store content (then
    only the metadata is kept); when stored, PII is already redacted (`redacted` names the
    types found, never the values). Not audit: transcripts age out with the org's retention."""

    id: str
    org_id: str
    session_id: str
    runner_id: str | None = None
    kind: str
    """user_message | agent_reply | model_request | model_reply | tool_call | tool_result"""
    role: str
    """user | assistant | tool | system"""
    source: str
    """controlplane (messages sent through the API) | gateway (what the model saw)."""
    text: str | None = None
    chars: int = 0
    """Length of the original text (kept when the text is not)."""
    data: dict[str, Any] = Field(default_factory=dict)
    """call_id, model, tool name and arguments size, tokens: never content."""
    redacted: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
