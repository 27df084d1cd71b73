"""Records and chain checks the store contract tests share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from paddock_core import (
    GENESIS_HASH,
    AuditEvent,
    AuditRow,
    ChainVerifier,
    LlmCallRecord,
    RunnerRecord,
    SessionRecord,
    Store,
    new_id,
)

T0 = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def runner(org_id: str = "org_a", **kw: Any) -> RunnerRecord:
    fields: dict[str, Any] = {
        "id": new_id("rn"),
        "org_id": org_id,
        "state": "provisioning",
        "profile": "minimal",
        "sandbox": "standard",
        "image": "probe",
        "model": "gpt-4o-mini",
        "budget_usd": 5.0,
        "token_hash": new_id("tok"),
        "backend": "fake",
    }
    return RunnerRecord(**{**fields, **kw})


def session(r: RunnerRecord) -> SessionRecord:
    return SessionRecord(id=new_id("ss"), org_id=r.org_id, runner_id=r.id, budget_usd=1.0)


def call(
    org_id: str,
    runner_id: str | None,
    session_id: str | None,
    cost_usd: float = 0.25,
    at: datetime | None = None,
) -> LlmCallRecord:
    return LlmCallRecord(
        id=new_id("call"),
        org_id=org_id,
        runner_id=runner_id,
        session_id=session_id,
        provider="openai",
        model="gpt-4o-mini",
        stream=False,
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=cost_usd,
        status=200,
        created_at=at or datetime.now(UTC),
    )


def event(org_id: str = "org_a", type_: str = "runner.created", **kw: Any) -> AuditEvent:
    return AuditEvent(org_id=org_id, actor="pdk_test0001", type=type_, **kw)


def json_i(row: AuditRow) -> int:
    """The `i` of an event whose data is `{"i": i}`."""
    return int(row.data.removeprefix('{"i":').removesuffix("}"))


async def all_rows(store: Store, org_id: str) -> list[AuditRow]:
    return await store.audit_rows(org_id, after_seq=0, limit=1_000_000)


async def assert_chain(store: Store, org_id: str, length: int) -> list[AuditRow]:
    """The org's chain is seq 1..length, linked, and verifies from its raw rows."""
    rows = await all_rows(store, org_id)
    assert [r.seq for r in rows] == list(range(1, length + 1))
    assert [r.prev_hash for r in rows] == [GENESIS_HASH] + [r.hash for r in rows[:-1]]
    verifier = ChainVerifier()
    assert all(verifier.feed(r) for r in rows)
    report = verifier.report()
    assert report.ok and report.checked == length
    assert await store.audit_head(org_id) == (report.head_seq, report.head_hash)
    return rows
