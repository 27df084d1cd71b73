"""The audit trail seen from the API: queries, export, verification, checkpoints, spend views.

No FastAPI imports. Nothing here updates or deletes an event: the store offers no way to.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from paddock_core import (
    AppendAudit,
    AppendCheckpoint,
    AuditCheckpoint,
    AuditEvent,
    AuditQuery,
    CheckpointSigner,
    LlmCallRecord,
    Store,
    VerifyReport,
    check_checkpoints,
    export_line,
    utcnow,
    verify_stored_chain,
)

from .runners import Principal

__all__ = ["AuditService", "SpendGroup", "SPEND_GROUPS", "VerifyResult"]

logger = logging.getLogger(__name__)

SpendGroup = Literal["call", "session", "runner", "org", "team", "key", "user", "model", "day"]
SPEND_GROUPS: tuple[str, ...] = SpendGroup.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class VerifyResult:
    report: VerifyReport
    checkpoints_checked: int
    checkpoint_problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self.report)
        body["checkpoints_checked"] = self.checkpoints_checked
        if self.checkpoint_problem:
            body["ok"] = False
            body["problem"] = body["problem"] or "checkpoint_mismatch"
            body["detail"] = self.checkpoint_problem
        return body


class AuditService:
    def __init__(self, *, store: Store, signer: CheckpointSigner) -> None:
        self._store = store
        self._signer = signer

    @property
    def public_key(self) -> str:
        return self._signer.public_key

    @property
    def key_id(self) -> str:
        return self._signer.key_id

    async def query(self, who: Principal, query: AuditQuery) -> list[AuditEvent]:
        return await self._store.list_audit(who.org_id, query=query)

    async def export(self, who: Principal) -> AsyncIterator[bytes]:
        """The org's whole chain (up to its head now) as JSONL, one event per line, in seq
        order; each line is the event's canonical encoding with its hash (`export_line`)."""
        async with contextlib.aclosing(self._store.audit_chain(who.org_id)) as pages:
            async for page in pages:
                yield b"".join([export_line(link) + b"\n" for link in page])

    async def verify(self, who: Principal) -> VerifyResult:
        return await self.verify_org(who.org_id)

    async def verify_org(self, org_id: str) -> VerifyResult:
        checkpoints = {c.seq: c for c in await self._store.list_checkpoints(org_id)}
        verifier, seen = await verify_stored_chain(self._store, org_id, hashes_at=checkpoints)
        _, problem = check_checkpoints(
            self._signer.public_key,
            org_id,
            [(cp.seq, cp.hash, cp.signature) for cp in checkpoints.values()],
            seen,
            chain_broken=verifier.broken is not None,
        )
        return VerifyResult(verifier.report(), len(checkpoints), problem)

    async def checkpoints(self, who: Principal) -> list[AuditCheckpoint]:
        return await self._store.list_checkpoints(who.org_id)

    async def checkpoint(self, org_id: str, actor: str = "system") -> AuditCheckpoint | None:
        """Sign the org's current head, unless the newest checkpoint already covers it."""
        seq, head = await self._store.audit_head(org_id)
        existing = await self._store.list_checkpoints(org_id)
        if seq == 0 or (existing and existing[-1].seq >= seq):
            return None
        cp = AuditCheckpoint(
            org_id, seq, head, utcnow(), self._signer.sign(org_id, seq, head), self._signer.key_id
        )
        # The checkpoint event itself follows the head it signs; the next checkpoint covers it.
        event = AuditEvent(
            org_id=org_id, actor=actor, type="audit.checkpoint", data={"seq": seq, "hash": head}
        )
        await self._store.apply([AppendCheckpoint(cp), AppendAudit(event)])
        return cp

    async def spend(
        self,
        who: Principal,
        group_by: SpendGroup,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        calls = await self._store.list_llm_calls(org_id=who.org_id, since=since, until=until)
        groups: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        )
        for call in calls:
            row = groups[_group_key(call, group_by)]
            row["calls"] += 1
            row["prompt_tokens"] += call.prompt_tokens
            row["completion_tokens"] += call.completion_tokens
            row["cost_usd"] += call.cost_usd
        rows = [
            {group_by: key, **v, "cost_usd": round(v["cost_usd"], 8)}
            for key, v in sorted(groups.items())
        ]
        total = sum(c.cost_usd for c in calls)
        return {
            "group_by": group_by,
            "rows": rows,
            "total_usd": round(total, 8),
            "calls": len(calls),
        }


def _group_key(call: LlmCallRecord, group_by: str) -> str:
    value = {
        "call": call.id,
        "session": call.session_id,
        "runner": call.runner_id,
        "org": call.org_id,
        "team": call.team_id,
        "key": call.key_id,
        "user": call.user_id,
        "model": call.model,
        "day": call.created_at.date().isoformat(),
    }[group_by]
    return value if value is not None else "(none)"
