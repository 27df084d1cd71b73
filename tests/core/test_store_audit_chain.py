"""The `Store` contract for reading a chain to verify it (`audit_chain`, run against every
implementation, see conftest.py), and the verifier's recheck of a store's encoding."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from paddock_core import (
    AppendAudit,
    AuditEvent,
    AuditRow,
    ChainVerifier,
    SqliteStore,
    Store,
    chain_hash,
    export_line,
    verify_export,
    verify_stored_chain,
)
from paddock_core._audit import chain_links
from tests.core.conftest import Backend

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
        for event in _events("org_a"):
            await store.apply([AppendAudit(event)])
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
            for event in _events("org_a"):
                await store.apply([AppendAudit(event)])
            links = [link async for page in store.audit_chain("org_a") for link in page]
            assert links == chain_links(await store.audit_rows("org_a", after_seq=0, limit=100))
            verifier, _ = await verify_stored_chain(store, "org_a")
            assert verifier.report().ok and verifier.checked == len(AWKWARD)
        finally:
            await store.close()

    asyncio.run(body())


def _exported(backend: Backend) -> list[bytes]:
    async def body(store: Store) -> list[bytes]:
        for event in _events("org_a"):
            await store.apply([AppendAudit(event)])
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
