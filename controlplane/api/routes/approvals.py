"""Approvals of held LLM calls: viewers read them; operators and admins decide."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from paddock_core import ApprovalStatus

from ...services.approvals import ApprovalService
from ..deps import Operator, Reader

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])


def _approvals(request: Request) -> ApprovalService:
    service: ApprovalService = request.app.state.approvals
    return service


Approvals = Annotated[ApprovalService, Depends(_approvals)]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000, description="why; goes to the audit trail")


@router.get("")
async def list_approvals(
    who: Reader, approvals: Approvals, status: Annotated[ApprovalStatus | None, Query()] = None
) -> dict[str, Any]:
    """The org's approvals, oldest first; `status=pending` for the ones waiting on a human."""
    return {"approvals": [a.public() for a in await approvals.list(who, status)]}


@router.get("/{approval_id}")
async def get_approval(approval_id: str, who: Reader, approvals: Approvals) -> dict[str, Any]:
    return (await approvals.get(who, approval_id)).public()


@router.post("/{approval_id}/approve")
async def approve(
    approval_id: str, body: Decision, who: Operator, approvals: Approvals
) -> dict[str, Any]:
    """Let the held call run (409 naming the status if it was decided or expired)."""
    record = await approvals.decide(who, approval_id, approve=True, reason=body.reason)
    return record.public()


@router.post("/{approval_id}/reject")
async def reject(
    approval_id: str, body: Decision, who: Operator, approvals: Approvals
) -> dict[str, Any]:
    """Refuse the held call: its caller gets 403 (step `approval`) with this reason."""
    record = await approvals.decide(who, approval_id, approve=False, reason=body.reason)
    return record.public()
