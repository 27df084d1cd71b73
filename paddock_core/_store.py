"""The `Store` port: everything Paddock persists, applied in atomic batches.

A batch is a list of typed operations. The store applies all of them or none; `UpdateRunner`
and `UpdateSession` are compare-and-set on (id, version) and lose with VersionConflictError.
Audit events in a batch are chained (seq, prev_hash, hash) inside the same transaction, so a
state change and its audit record are durable together before the caller answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._records import AuditEvent, LlmCallRecord, RunnerRecord, SessionRecord

__all__ = [
    "AppendAudit",
    "InsertRunner",
    "InsertSession",
    "Operation",
    "RecordLlmCall",
    "Store",
    "UpdateRunner",
    "UpdateSession",
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


Operation = (
    InsertRunner | UpdateRunner | InsertSession | UpdateSession | RecordLlmCall | AppendAudit
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
        self, *, session_id: str | None = None, runner_id: str | None = None
    ) -> list[LlmCallRecord]: ...

    async def list_audit(
        self,
        org_id: str,
        *,
        runner_id: str | None = None,
        session_id: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEvent]: ...
