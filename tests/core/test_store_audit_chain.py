"""The `Store` contract for the audit chain (run against every implementation, see
conftest.py): appends link and verify, chains per org, queries, checkpoints; reading a chain to
verify it (`audit_chain`) and its export; the verifier's recheck of a store's encoding."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from paddock_core import (
    GENESIS_HASH,
    AppendAudit,
    AppendCheckpoint,
    AuditCheckpoint,
    AuditEvent,
    AuditQuery,
    AuditRow,
    ChainVerifier,
    SqliteStore,
    Store,
    StoreError,
    chain_hash,
    export_line,
    verify_export,
    verify_stored_chain,
)
from paddock_core._audit import chain_links
from tests.core.conftest import Backend
from tests.core.records import T0, assert_chain, event, json_i

# --- the audit chain ----------------------------------------------------------------------


def test_audit_chain_links_and_verifies_from_raw_rows(backend: Backend) -> None:
    odd = [
        event(data={"é": 'ü\u2028\x00"\\', "nested": {"b": [1, 2.5, None, True], "a": {}}}),
        event(runner_id="rn_1", session_id="ss_1", data={"emoji": "😀"}),
        event(time=datetime(2030, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=5)))),
        event(type_="ünïcode.type", data={}),
    ]

    async def body(store: Store) -> None:
        first = await store.apply([AppendAudit(odd[0])])
        second = await store.apply([AppendAudit(e) for e in odd[1:]])
        events = first.events + second.events
        assert [e.seq for e in events] == [1, 2, 3, 4]
        for e in events:
            assert e.hash == chain_hash(e)
        rows = await assert_chain(store, "org_a", 4)
        assert rows == [AuditRow.of(e) for e in events]
        assert await store.list_audit("org_a") == events
        assert rows[2].time == "2030-05-06T02:08:09.000000Z"

    backend.run(body)


def test_two_orgs_have_independent_chains(backend: Backend) -> None:
    async def body(store: Store) -> None:
        for i in range(5):
            ops = [AppendAudit(event("org_a", data={"i": i})), AppendAudit(event("org_b"))]
            if i % 2:
                ops.append(AppendAudit(event("org_b", data={"i": i})))
            await store.apply(ops)
        rows_a = await assert_chain(store, "org_a", 5)
        rows_b = await assert_chain(store, "org_b", 7)
        assert {r.org_id for r in rows_a} == {"org_a"} and {r.org_id for r in rows_b} == {"org_b"}
        assert await store.audit_head("org_c") == (0, GENESIS_HASH)
        assert await store.list_audit("org_c") == []

    backend.run(body)


def test_concurrent_appends_make_one_gap_free_chain(backend: Backend) -> None:
    async def body(store: Store) -> None:
        results = await asyncio.gather(
            *(store.apply([AppendAudit(event("org_a", data={"i": i}))]) for i in range(200)),
            *(store.apply([AppendAudit(event("org_b")), AppendAudit(event("org_b"))])
              for _ in range(50)),
        )  # fmt: skip
        seqs = sorted(e.seq for res in results[:200] for e in res.events)
        assert seqs == list(range(1, 201))
        rows = await assert_chain(store, "org_a", 200)
        assert sorted(json_i(r) for r in rows) == list(range(200))
        await assert_chain(store, "org_b", 100)

    backend.run(body)


def test_list_audit_filters(backend: Backend) -> None:
    def make(i: int) -> AuditEvent:
        return event(
            type_=("runner.created", "session.opened", "llm.call")[i % 3],
            runner_id=("rn_1", "rn_2", None, "rn_1")[i % 4],
            session_id="ss_1" if i % 2 else None,
            time=T0 + timedelta(minutes=i),
            data={"i": i},
        )

    async def body(store: Store) -> None:
        events = (await store.apply([AppendAudit(make(i)) for i in range(12)])).events
        await store.apply([AppendAudit(event("org_b", runner_id="rn_1"))])

        async def check(query: AuditQuery, expected: list[AuditEvent]) -> None:
            assert await store.list_audit("org_a", query=query) == expected

        await check(AuditQuery(), events)
        await check(AuditQuery(runner_id="rn_1"), [e for e in events if e.runner_id == "rn_1"])
        await check(AuditQuery(session_id="ss_1"), [e for e in events if e.session_id])
        both = AuditQuery(runner_id="rn_2", session_id="ss_1")
        await check(both, [e for e in events if e.runner_id == "rn_2" and e.session_id])
        types = ("llm.call", "session.opened")
        await check(AuditQuery(types=types), [e for e in events if e.type in types])
        since, until = T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)
        await check(AuditQuery(since=since), events[3:])
        await check(AuditQuery(until=until), events[:7])
        await check(AuditQuery(since=since, until=until), events[3:7])
        await check(AuditQuery(after_seq=10), events[10:])
        await check(AuditQuery(limit=4), events[:4])
        await check(AuditQuery(limit=0), [])
        pages, after = [], 0
        for _ in range(10):  # a cursor walk, bounded
            page = await store.list_audit("org_a", query=AuditQuery(after_seq=after, limit=5))
            if not page:
                break
            pages.extend(page)
            after = page[-1].seq
        assert pages == events
        legacy = await store.list_audit("org_a", runner_id="rn_1", after_seq=1, limit=2)
        assert legacy == [e for e in events if e.runner_id == "rn_1" and e.seq > 1][:2]
        assert await store.audit_rows("org_a", after_seq=11, limit=5) == [AuditRow.of(events[11])]

    backend.run(body)


def test_audit_head(backend: Backend) -> None:
    async def body(store: Store) -> None:
        assert await store.audit_head("org_a") == (0, GENESIS_HASH)
        events = (await store.apply([AppendAudit(event()) for _ in range(3)])).events
        assert await store.audit_head("org_a") == (3, events[-1].hash)

    backend.run(body)


def test_checkpoints_append_and_list(backend: Backend) -> None:
    def checkpoint(org_id: str, seq: int, head: str) -> AuditCheckpoint:
        return AuditCheckpoint(org_id, seq, head, T0 + timedelta(seconds=seq), "ab" * 32, "k1")

    async def body(store: Store) -> None:
        events = (await store.apply([AppendAudit(event()) for _ in range(5)])).events
        first = checkpoint("org_a", 2, events[1].hash)
        second = checkpoint("org_a", 5, events[4].hash)
        await store.apply([AppendCheckpoint(second), AppendAudit(event(type_="audit.checkpoint"))])
        await store.apply([AppendCheckpoint(first)])
        assert await store.list_checkpoints("org_a") == [first, second]
        assert await store.list_checkpoints("org_b") == []
        with pytest.raises(StoreError):
            await store.apply([AppendCheckpoint(first), AppendAudit(event())])
        assert await store.list_checkpoints("org_a") == [first, second]
        await assert_chain(store, "org_a", 6)

    backend.run(body)



# Strings whose JSON escaping differs between encoders if any does: quotes, backslashes,
# control characters (short and \u forms), DEL, non-ASCII, astral, line separators, NUL.
AWKWARD = [
    'q"uote',
    "back\\slash",
    "nl\nt\tb\bf\fr\r",
    "\x01\x1f\x7f",
    "é 漢 😀",
    "\u2028\u2029",
    "\x00",
]


def _events(org_id: str) -> list[AuditEvent]:
    out = []
    for i, text in enumerate(AWKWARD):
        out.append(
            AuditEvent(
                org_id=org_id,
                actor=f"key:{text}",
                type=f"test.{i}",
                runner_id=text if i % 2 else None,
                session_id=None if i % 2 else text,
                data={"text": text, "n": i, "nested": {"z": [text, None, 1.5], "a": True}},
            )
        )
    return out


def test_chain_pages_carry_the_reference_encoding(backend: Backend) -> None:
    async def body(store: Store) -> None:
        for awkward in _events("org_a"):
            await store.apply([AppendAudit(awkward)])
        await store.apply([AppendAudit(AuditEvent(org_id="org_b", actor="x", type="other"))])
        links = [link async for page in store.audit_chain("org_a") for link in page]
        rows = await store.audit_rows("org_a", after_seq=0, limit=100)
        # Byte for byte what the Python encoder makes of the stored rows: no recheck needed.
        assert links == chain_links(rows)
        assert [seq for seq, *_ in links] == list(range(1, len(AWKWARD) + 1))
        later = [link async for page in store.audit_chain("org_a", after_seq=3) for link in page]
        assert later == links[3:]
        verifier, seen = await verify_stored_chain(store, "org_a", hashes_at={2, 5})
        assert verifier.report().ok and verifier.checked == len(AWKWARD)
        assert seen == {2: links[1][2], 5: links[4][2]}

    backend.run(body)


def test_a_mismatch_the_reference_encoding_does_not_confirm_is_no_break() -> None:
    event = _events("org_a")[0].model_copy(update={"seq": 1, "prev_hash": "0" * 64})
    event = event.model_copy(update={"hash": chain_hash(event)})
    row = AuditRow.of(event)
    verifier = ChainVerifier()
    # A store that encoded the record differently from the reference (here: with spaces).
    assert not verifier.feed_link(row.seq, row.prev_hash, row.hash, b"{ differently }")
    assert verifier.broken is not None and verifier.broken[1] == "hash_mismatch"
    assert verifier.recheck(row) is True
    assert verifier.report().ok and verifier.checked == 1

    edited = row._replace(data='{"text":"edited"}')
    verifier = ChainVerifier()
    assert not verifier.feed_link(edited.seq, edited.prev_hash, edited.hash, b"{}")
    assert verifier.recheck(edited) is False  # the reference agrees: it was edited
    assert verifier.report().first_broken_seq == 1


def test_an_in_memory_sqlite_store_reads_its_chain_through_its_one_connection() -> None:
    async def body() -> None:
        store = SqliteStore(Path(":memory:"))
        await store.open()
        try:
            for awkward in _events("org_a"):
                await store.apply([AppendAudit(awkward)])
            links = [link async for page in store.audit_chain("org_a") for link in page]
            assert links == chain_links(await store.audit_rows("org_a", after_seq=0, limit=100))
            verifier, _ = await verify_stored_chain(store, "org_a")
            assert verifier.report().ok and verifier.checked == len(AWKWARD)
        finally:
            await store.close()

    asyncio.run(body())


def _exported(backend: Backend) -> list[bytes]:
    async def body(store: Store) -> list[bytes]:
        for awkward in _events("org_a"):
            await store.apply([AppendAudit(awkward)])
        return [export_line(link) async for page in store.audit_chain("org_a") for link in page]

    lines: list[bytes] = backend.run(body)
    return lines


def test_an_export_verifies_offline_and_pinpoints_tampering(backend: Backend) -> None:
    lines = _exported(backend)
    for line in lines:
        assert line.startswith(b'{"actor":') and json.loads(line)["hash"]
    found = verify_export(lines)
    assert found.verifier.report().ok and found.verifier.checked == len(AWKWARD)
    assert found.org_id == "org_a" and sorted(found.hashes) == list(range(1, len(AWKWARD) + 1))

    edited = list(lines)
    edited[2] = edited[2].replace(b'"type":"test.2"', b'"type":"test.x"')
    report = verify_export(edited).verifier.report()
    assert (report.first_broken_seq, report.problem, report.checked) == (3, "hash_mismatch", 2)
    missing = lines[:3] + lines[4:]
    assert verify_export(missing).verifier.report().problem == "missing_record"
    swapped = [lines[0], lines[2], lines[1], *lines[3:]]
    assert verify_export(swapped).verifier.report().first_broken_seq == 2


def test_an_export_in_the_older_line_shape_still_verifies(backend: Backend) -> None:
    older = []
    for line in _exported(backend):
        obj = json.loads(line)  # the older shape: stored column order, data as an object
        keys = ("org_id", "seq", "time", "actor", "type", "runner_id", "session_id", "data")
        shaped = {k: obj[k] for k in (*keys, "prev_hash", "hash")}
        older.append(json.dumps(shaped, ensure_ascii=False, separators=(",", ":")).encode())
    found = verify_export(older)
    assert found.verifier.report().ok and found.verifier.checked == len(AWKWARD)
    older[4] = older[4].replace(b'"n":4', b'"n":5')
    assert verify_export(older).verifier.report().first_broken_seq == 5
