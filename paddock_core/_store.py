"""The `Store` port: everything Paddock persists, applied in atomic batches.

A batch is a list of typed operations. The store applies all of them or none; `UpdateRunner`
and `UpdateSession` are compare-and-set on (id, version) and lose with VersionConflictError.
Audit events in a batch are chained (seq, prev_hash, hash) inside the same transaction, so a
state change and its audit record are durable together before the caller answers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from ._audit import AuditRow, ChainLink
from ._errors import VersionConflictError
from ._records import AuditEvent, LlmCallRecord, RunnerRecord, SessionRecord, TranscriptEntry

__all__ = [
    "AppendAudit",
    "AppendCheckpoint",
    "AppendTranscript",
    "PurgeTranscripts",
    "AuditCheckpoint",
    "AuditQuery",
    "ObjectKind",
    "PutObject",
    "UpdateObject",
    "InsertRunner",
    "InsertSession",
    "Operation",
    "RecordLlmCall",
    "Store",
    "UpdateRunner",
    "UpdateSession",
    "check_expected",
]


@dataclass(frozen=True)
class InsertRunner:
    runner: RunnerRecord


@dataclass(frozen=True)
class UpdateRunner:
    runner_id: str
    expected_version: int
    changes: dict[str, Any]


@dataclass(frozen=True)
class InsertSession:
    session: SessionRecord


@dataclass(frozen=True)
class UpdateSession:
    session_id: str
    expected_version: int
    changes: dict[str, Any]


@dataclass(frozen=True)
class RecordLlmCall:
    """Insert the call and add its cost to its session's and runner's `spent_usd`."""

    call: LlmCallRecord


@dataclass(frozen=True)
class AppendAudit:
    event: AuditEvent


ObjectKind = Literal["org", "team", "user", "api_key", "org_gateway", "approval"]


@dataclass(frozen=True)
class PutObject:
    """Insert a tenancy object (org, team, user, API key); its id must be new."""

    kind: ObjectKind
    record: BaseModel


@dataclass(frozen=True)
class UpdateObject:
    """Merge `changes` into an object. With `expected`, compare-and-set: every field named
    there must hold that value (e.g. `{"version": 3}`), else VersionConflictError and the
    batch is not applied."""

    kind: ObjectKind
    object_id: str
    changes: dict[str, Any]
    expected: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeleteObject:
    """Remove an object that is done with (a decided approval past its retention). With
    `expected`, compare-and-set as for `UpdateObject`. A missing object is NotFoundError."""

    kind: ObjectKind
    object_id: str
    expected: dict[str, Any] | None = None


def check_expected(
    kind: str, object_id: str, current: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    """A store's half of `UpdateObject.expected`, run inside the batch's transaction."""
    for name, value in (expected or {}).items():
        if current.get(name) != value:
            raise VersionConflictError(
                f"{kind} {object_id} changed meanwhile ({name} is {current.get(name)!r},"
                f" expected {value!r})",
                current=current.get(name),
            )


@dataclass(frozen=True)
class AppendTranscript:
    entries: tuple[TranscriptEntry, ...]


@dataclass(frozen=True)
class PurgeTranscripts:
    """Delete an org's transcript entries created before `before` (retention)."""

    org_id: str
    before: datetime


@dataclass(frozen=True)
class AuditCheckpoint:
    """A signed statement of an org's chain head: `signature` = Ed25519 over
    `f"{org_id}:{seq}:{hash}"`, hex; `key_id` names the verifying key."""

    org_id: str
    seq: int
    hash: str
    time: datetime
    signature: str
    key_id: str


@dataclass(frozen=True)
class AppendCheckpoint:
    checkpoint: AuditCheckpoint


@dataclass(frozen=True)
class AuditQuery:
    """Filters for `Store.list_audit`; events come in seq order, after `after_seq`."""

    runner_id: str | None = None
    session_id: str | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0
    limit: int = 1000


Operation = (
    InsertRunner
    | UpdateRunner
    | InsertSession
    | UpdateSession
    | RecordLlmCall
    | AppendAudit
    | PutObject
    | UpdateObject
    | DeleteObject
    | AppendCheckpoint
    | AppendTranscript
    | PurgeTranscripts
)


@dataclass
class BatchResult:
    runners: dict[str, RunnerRecord] = field(default_factory=dict)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    events: list[AuditEvent] = field(default_factory=list)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, ops: Sequence[Operation]) -> BatchResult:
        """Apply every operation atomically; return the records as they now are."""
        ...

    async def get_runner(self, runner_id: str) -> RunnerRecord | None: ...

    async def list_runners(self, org_id: str | None = None) -> list[RunnerRecord]: ...

    async def find_runner_by_token(self, token_hash: str) -> RunnerRecord | None: ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def list_llm_calls(
        self,
        *,
        session_id: str | None = None,
        runner_id: str | None = None,
        org_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LlmCallRecord]:
        """Calls in time order; at least one of session_id, runner_id, org_id is required."""
        ...

    async def spend_usd(
        self,
        org_id: str,
        *,
        since: datetime,
        until: datetime,
        team_id: str | None = None,
        key_id: str | None = None,
        user_id: str | None = None,
    ) -> float:
        """Total cost (USD) of an org's calls in [since, until), of one team, key or user
        when given (what budgets are seeded from)."""
        ...

    async def list_audit(
        self,
        org_id: str,
        *,
        runner_id: str | None = None,
        session_id: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
        query: AuditQuery | None = None,
    ) -> list[AuditEvent]:
        """An org's events in seq order. `query`, when given, replaces the keyword filters."""
        ...

    async def audit_rows(self, org_id: str, *, after_seq: int, limit: int) -> list[AuditRow]:
        """Raw events in seq order, as stored (for export)."""
        ...

    def audit_chain(
        self, org_id: str, *, after_seq: int = 0
    ) -> AsyncGenerator[list[ChainLink], None]:
        """The org's chain after `after_seq`, up to its head when called, in seq order and in
        pages: what verification reads (`ChainVerifier.feed_link`)."""
        ...

    async def audit_head(self, org_id: str) -> tuple[int, str]:
        """(seq, hash) of the org's newest event; (0, GENESIS_HASH) for an empty chain."""
        ...

    async def list_checkpoints(self, org_id: str) -> list[AuditCheckpoint]: ...

    async def get_object(self, kind: ObjectKind, object_id: str) -> dict[str, Any] | None: ...

    async def list_objects(self, kind: ObjectKind, org_id: str | None) -> list[dict[str, Any]]: ...

    async def list_transcript(self, session_id: str) -> list[TranscriptEntry]:
        """A session's transcript entries, oldest first."""
        ...
