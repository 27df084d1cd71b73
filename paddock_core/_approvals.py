"""Human approvals of held LLM calls (step 15 of the gateway's chain), shared by the gateway,
which creates, waits for and runs them, and the control plane, where humans decide.

    pending ──approve──▶ approved ──claim (the call runs, once)──▶ approved + executed_at
       ├────reject───▶ rejected
       └────deadline, or the held client left──▶ expired
    approved, never claimed by its deadline ──▶ expired

Stored as `approval` objects. Every change is compare-and-set on `version` and is applied in
one batch with its audit event (`approval.requested|approved|rejected|expired|executed`), so
a second decision loses with a 409 that names the status it lost to.

The held request body (`request`) is kept only while the call may still run: it is blanked in
the batch that makes it useless (reject, expire) or that claims it to run. It never enters the
audit trail, the public view, or a log line.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._errors import ConflictError, NotFoundError, VersionConflictError
from ._records import AuditEvent, utcnow
from ._store import AppendAudit, DeleteObject, PutObject, Store, UpdateObject

__all__ = [
    "APPROVAL_STATUSES",
    "ApprovalRecord",
    "ApprovalStatus",
    "claim_approval",
    "decide_approval",
    "expire_approval",
    "expire_overdue",
    "finished_at",
    "get_approval",
    "purge_decided",
    "put_approval",
]

ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]
APPROVAL_STATUSES: tuple[ApprovalStatus, ...] = ("pending", "approved", "rejected", "expired")
_KIND: Literal["approval"] = "approval"
_PRIVATE = frozenset({"request", "request_headers"})


class ApprovalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    org_id: str
    version: int = 1
    status: ApprovalStatus = "pending"
    mode: Literal["queue", "hold"]
    actor: str
    """Who made the held call (`runner:<id>`, `key:<id>`); only they may fetch its result."""
    runner_id: str | None = None
    session_id: str | None = None
    key_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    endpoint: str
    """chat | responses | embeddings | messages | count_tokens"""
    model: str
    stream: bool = False
    rule: str
    """Which rule held the call: `estimate_usd_over`, `model` or `tool`."""
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    """What the rule saw: `estimate_usd`, the matched model or tools, the threshold."""
    estimate_usd: float = 0.0
    """The call's worst case in USD (input estimate + output cap)."""
    policy: str = ""
    """The chain's policy version that held it."""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    """Pending: the decision deadline. Approved: the deadline to run it (queue: to fetch it)."""
    result_ttl_s: float = 3600.0
    """Seconds an approved call waits to be run (fetched, in queue mode)."""
    decided_by: str | None = None
    """The actor that decided (`key:<id>`), or `system` when it expired."""
    decided_by_user: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    """Why it was decided: the human's words, or `approval_timeout`, `client_disconnected`,
    `result_not_fetched` when it expired."""
    executed_at: datetime | None = None
    request: dict[str, Any] | None = None
    """The held body, in the client's protocol; None once it can no longer run."""
    request_headers: dict[str, str] = Field(default_factory=dict)
    request_bytes: int = 0

    def public(self) -> dict[str, Any]:
        """The record without the held request (what APIs show)."""
        return self.model_dump(mode="json", exclude=set(_PRIVATE))

    def overdue(self, now: datetime) -> bool:
        """Pending past its deadline, or approved and never run by its deadline."""
        live = self.status == "pending" or (self.status == "approved" and not self.executed_at)
        return live and now >= self.expires_at


def _event(record: ApprovalRecord, type_: str, actor: str, **data: Any) -> AuditEvent:
    facts = {
        "approval_id": record.id,
        "rule": record.rule,
        "estimate_usd": record.estimate_usd,
        "model": record.model,
        "endpoint": record.endpoint,
        "mode": record.mode,
        **data,
    }
    return AuditEvent(
        org_id=record.org_id,
        actor=actor,
        type=type_,
        runner_id=record.runner_id,
        session_id=record.session_id,
        data=facts,
    )


async def put_approval(store: Store, record: ApprovalRecord, **facts: Any) -> None:
    """Insert a pending approval with its `approval.requested` event (`facts`: more data)."""
    event = _event(record, "approval.requested", record.actor, **facts)
    await store.apply([PutObject(_KIND, record), AppendAudit(event)])


async def get_approval(store: Store, approval_id: str) -> ApprovalRecord | None:
    doc = await store.get_object(_KIND, approval_id)
    return None if doc is None else ApprovalRecord.model_validate(doc)


async def _change(
    store: Store, record: ApprovalRecord, changes: dict[str, Any], event: AuditEvent
) -> ApprovalRecord:
    changes = {**changes, "version": record.version + 1}
    update = UpdateObject(_KIND, record.id, changes, expected={"version": record.version})
    try:
        await store.apply([update, AppendAudit(event)])
    except VersionConflictError:
        current = await get_approval(store, record.id)
        if current is None:  # purged meanwhile (`purge_decided`)
            raise NotFoundError(f"approval {record.id} not found") from None
        raise ConflictError(
            f"approval {record.id} is already {current.status}"
            + (" and was used" if current.executed_at else ""),
            reason="approval_already_decided",
            status=current.status,
        ) from None
    return record.model_copy(update=changes)


async def decide_approval(
    store: Store,
    record: ApprovalRecord,
    *,
    approve: bool,
    by: str,
    reason: str,
    user_id: str | None = None,
) -> ApprovalRecord:
    """Approve or reject a pending approval; ConflictError (naming the status) otherwise.
    `by`: the deciding actor (`key:<id>`); `user_id`: the user that key belongs to, if any."""
    now = utcnow()
    if record.overdue(now):
        await expire_approval(store, record, "approval_timeout")
        raise ConflictError(
            f"approval {record.id} expired at {record.expires_at.isoformat()}",
            reason="approval_already_decided",
            status="expired",
        )
    if record.status != "pending":
        raise ConflictError(
            f"approval {record.id} is already {record.status}",
            reason="approval_already_decided",
            status=record.status,
        )
    status: ApprovalStatus = "approved" if approve else "rejected"
    changes: dict[str, Any] = {
        "status": status,
        "decided_by": by,
        "decided_by_user": user_id,
        "decided_at": now,
        "reason": reason,
    }
    if approve:
        changes["expires_at"] = now + timedelta(seconds=record.result_ttl_s)
    else:
        changes["request"] = None
    event = _event(
        record, f"approval.{status}", by, decided_by=by, decided_by_user=user_id, reason=reason
    )
    return await _change(store, record, changes, event)


async def expire_approval(
    store: Store, record: ApprovalRecord, reason: str, *, by: str = "system"
) -> ApprovalRecord:
    """Expire a live approval (its held body goes with it); ConflictError if it was decided
    (or claimed) meanwhile."""
    changes: dict[str, Any] = {
        "status": "expired",
        "decided_at": utcnow(),
        "reason": reason,
        "request": None,
    }
    if record.status == "pending":
        changes["decided_by"] = by
    event = _event(record, "approval.expired", by, reason=reason, was=record.status)
    return await _change(store, record, changes, event)


async def claim_approval(store: Store, record: ApprovalRecord, *, by: str) -> ApprovalRecord:
    """Take an approved call to run it, exactly once: its body leaves the store in this batch
    (the returned record still holds it, in memory). ConflictError if it was claimed already."""
    if record.status != "approved" or record.executed_at is not None:
        raise ConflictError(
            f"approval {record.id} is {record.status}"
            + (" and was already used" if record.executed_at else ""),
            reason="approval_already_used" if record.executed_at else "approval_not_approved",
            status=record.status,
        )
    changes: dict[str, Any] = {"executed_at": utcnow(), "request": None}
    event = _event(record, "approval.executed", by, decided_by=record.decided_by)
    claimed = await _change(store, record, changes, event)
    return claimed.model_copy(update={"request": record.request})


def finished_at(record: ApprovalRecord) -> datetime | None:
    """When the approval stopped mattering: decided and refused or expired, or run. None while
    it is pending or approved and not yet run."""
    if record.status in ("rejected", "expired"):
        return record.decided_at
    return record.executed_at if record.status == "approved" else None


async def purge_decided(store: Store, *, before: datetime) -> int:
    """Remove approvals that finished before `before` (their requests, decisions and runs stay
    in the audit trail); one batch per org with an `approvals.purged` event. Returns how many
    went."""
    done: dict[str, list[ApprovalRecord]] = {}
    for doc in await store.list_objects(_KIND, None):
        record = ApprovalRecord.model_validate(doc)
        finished = finished_at(record)
        if finished is not None and finished < before:
            done.setdefault(record.org_id, []).append(record)
    purged = 0
    for org_id, records in done.items():
        event = AuditEvent(
            org_id=org_id,
            actor="system",
            type="approvals.purged",
            data={"count": len(records), "finished_before": before.isoformat()},
        )
        deletes = [DeleteObject(_KIND, r.id, expected={"version": r.version}) for r in records]
        try:
            await store.apply([*deletes, AppendAudit(event)])
        except (VersionConflictError, NotFoundError):
            continue  # another sweeper was first; the next pass sees what is left
        purged += len(records)
    return purged


async def expire_overdue(store: Store, record: ApprovalRecord) -> ApprovalRecord:
    """The record as it stands now: an overdue one is expired first (losing that race to a
    decision is fine: the record is read again)."""
    if not record.overdue(utcnow()):
        return record
    reason = "approval_timeout" if record.status == "pending" else "result_not_fetched"
    try:
        return await expire_approval(store, record, reason)
    except ConflictError:
        return await get_approval(store, record.id) or record
