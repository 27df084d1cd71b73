"""Finished approvals leave the store after their retention; live ones never do, and the
audit trail keeps every approval's story (run against every store, see conftest.py)."""

from __future__ import annotations

from datetime import timedelta

from paddock_core import (
    ApprovalRecord,
    Store,
    claim_approval,
    decide_approval,
    expire_approval,
    get_approval,
    new_id,
    purge_decided,
    put_approval,
    utcnow,
)
from tests.core.conftest import Backend


def _pending(org_id: str) -> ApprovalRecord:
    return ApprovalRecord(
        id=new_id("apr"),
        org_id=org_id,
        mode="queue",
        actor="key:pdk_held",
        endpoint="chat",
        model="fake-gpt",
        rule="model",
        message="needs a human",
        expires_at=utcnow() + timedelta(hours=1),
        request={"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]},
    )


def test_finished_approvals_are_purged_after_their_retention_and_live_ones_stay(
    backend: Backend,
) -> None:
    async def body(store: Store) -> None:
        records = {name: _pending("org_a") for name in ("pending", "rejected", "expired", "run")}
        records["approved"] = _pending("org_a")
        records["other_org"] = _pending("org_b")
        for record in records.values():
            await put_approval(store, record)
        await decide_approval(store, records["rejected"], approve=False, by="key:a", reason="no")
        await decide_approval(store, records["other_org"], approve=False, by="key:b", reason="no")
        await expire_approval(store, records["expired"], "approval_timeout")
        approved = await decide_approval(
            store, records["approved"], approve=True, by="key:a", reason="ok"
        )
        assert approved.status == "approved"  # approved, not yet run: still live
        run = await decide_approval(store, records["run"], approve=True, by="key:a", reason="ok")
        await claim_approval(store, run, by="key:pdk_held")

        assert await purge_decided(store, before=utcnow() - timedelta(minutes=5)) == 0
        assert await purge_decided(store, before=utcnow() + timedelta(seconds=1)) == 4
        left = {name for name, r in records.items() if await get_approval(store, r.id)}
        assert left == {"pending", "approved"}
        purged = [e for e in await store.list_audit("org_a") if e.type == "approvals.purged"]
        assert [e.data["count"] for e in purged] == [3]
        types = {e.type for e in await store.list_audit("org_a")}
        assert {"approval.rejected", "approval.expired", "approval.executed"} <= types
        assert await purge_decided(store, before=utcnow() + timedelta(seconds=1)) == 0

    backend.run(body)
