"""Approvals of held LLM calls: list them, and decide (approve or reject, with a reason).

The gateway creates approvals and runs the approved calls (gateway._approvals); here humans
decide. Deciding is compare-and-set: a second decision, or one after the deadline, is a 409
naming the status it lost to. Each decision is audited (`approval.approved|rejected`, who and
why) in the batch that records it, and that audit event is what wakes the waiting gateway (the
store's notifier). No FastAPI imports.
"""

from __future__ import annotations

from paddock_core import (
    ApprovalRecord,
    ApprovalStatus,
    NotFoundError,
    Store,
    decide_approval,
    expire_overdue,
    get_approval,
)

from .runners import Principal

__all__ = ["ApprovalService"]


class ApprovalService:
    def __init__(self, *, store: Store) -> None:
        self._store = store

    async def list(self, who: Principal, status: ApprovalStatus | None) -> list[ApprovalRecord]:
        """The org's approvals, oldest first (overdue ones are expired as they are read)."""
        out = []
        for doc in await self._store.list_objects("approval", who.org_id):
            record = await expire_overdue(self._store, ApprovalRecord.model_validate(doc))
            if status is None or record.status == status:
                out.append(record)
        return out

    async def get(self, who: Principal, approval_id: str) -> ApprovalRecord:
        record = await get_approval(self._store, approval_id)
        if record is None or record.org_id != who.org_id:
            raise NotFoundError(f"approval {approval_id} not found", field="approval_id")
        return await expire_overdue(self._store, record)

    async def decide(
        self, who: Principal, approval_id: str, *, approve: bool, reason: str
    ) -> ApprovalRecord:
        record = await self.get(who, approval_id)
        return await decide_approval(
            self._store, record, approve=approve, by=who.actor, reason=reason, user_id=who.user_id
        )
