"""The `Store` contract for session transcripts (run against every implementation, see
conftest.py): appended in batches with other operations, listed per session in order, purged per
org by age, and refused whole when a batch fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paddock_core import (
    AppendAudit,
    AppendTranscript,
    AuditEvent,
    PurgeTranscripts,
    Store,
    StoreError,
    TranscriptEntry,
    new_id,
)
from tests.core.conftest import Backend

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def entry(
    session_id: str, org_id: str = "org_a", at: datetime = T0, **kw: object
) -> TranscriptEntry:
    fields: dict[str, object] = {
        "id": new_id("tr"),
        "org_id": org_id,
        "session_id": session_id,
        "kind": "user_message",
        "role": "user",
        "source": "controlplane",
        "text": "hello",
        "chars": 5,
        "created_at": at,
    }
    return TranscriptEntry.model_validate({**fields, **kw})


def test_entries_list_per_session_in_order(backend: Backend) -> None:
    async def body(store: Store) -> None:
        first = [entry("ss_1", at=T0 + timedelta(seconds=i), text=f"t{i}") for i in range(3)]
        await store.apply([AppendTranscript(tuple(first))])
        same_time = [entry("ss_1", at=T0 + timedelta(seconds=9), text=f"u{i}") for i in range(3)]
        event = AuditEvent(org_id="org_a", actor="test", type="session.message")
        await store.apply([AppendTranscript(tuple(same_time)), AppendAudit(event)])
        await store.apply([AppendTranscript((entry("ss_2"),))])
        got = await store.list_transcript("ss_1")
        assert [e.text for e in got] == ["t0", "t1", "t2", "u0", "u1", "u2"]
        assert got[0] == first[0]
        assert [e.session_id for e in await store.list_transcript("ss_2")] == ["ss_2"]
        assert await store.list_transcript("ss_none") == []

    backend.run(body)


def test_purge_removes_only_the_orgs_old_entries(backend: Backend) -> None:
    async def body(store: Store) -> None:
        old, new = T0, T0 + timedelta(days=10)
        entries = (
            entry("ss_a", "org_a", old, text="old a"),
            entry("ss_a", "org_a", new, text="new a"),
            entry("ss_b", "org_b", old, text="old b"),
        )
        await store.apply([AppendTranscript(entries)])
        await store.apply([PurgeTranscripts("org_a", T0 + timedelta(days=1))])
        assert [e.text for e in await store.list_transcript("ss_a")] == ["new a"]
        assert [e.text for e in await store.list_transcript("ss_b")] == ["old b"]

    backend.run(body)


def test_a_failed_batch_leaves_no_transcript(backend: Backend) -> None:
    async def body(store: Store) -> None:
        kept = entry("ss_x")
        await store.apply([AppendTranscript((kept,))])
        with pytest.raises(StoreError):
            # The second entry reuses an id: the whole batch is refused.
            await store.apply([AppendTranscript((entry("ss_x", text="lost"), kept))])
        assert [e.text for e in await store.list_transcript("ss_x")] == ["hello"]

    backend.run(body)
