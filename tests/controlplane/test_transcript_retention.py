"""Transcript retention: each org's entries older than its `retention_days` are purged, other
orgs' and newer entries stay (on the real SQLite store)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controlplane.services.transcripts import purge_expired_transcripts
from paddock_core import (
    AppendTranscript,
    OrgGatewayRecord,
    OrgRecord,
    PutObject,
    SqliteStore,
    TranscriptEntry,
    new_id,
)

NOW = datetime(2031, 5, 1, tzinfo=UTC)


def _entry(org: str, days_old: int) -> TranscriptEntry:
    return TranscriptEntry(
        id=new_id("tr"),
        org_id=org,
        session_id=f"ses_{org}",
        kind="user_message",
        role="user",
        source="controlplane",
        chars=1,
        created_at=NOW - timedelta(days=days_old),
    )


def test_each_org_keeps_its_own_retention(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "p.db")
        await store.open()
        try:
            short = OrgGatewayRecord(id="org_s", org_id="org_s", transcript_retention_days=7)
            await store.apply(
                [
                    PutObject("org", OrgRecord(id="org_s", name="s")),
                    PutObject("org", OrgRecord(id="org_d", name="d")),  # default: 30 days
                    PutObject("org_gateway", short),
                    AppendTranscript(
                        tuple(_entry(o, d) for o in ("org_s", "org_d") for d in (3, 10, 40))
                    ),
                ]
            )
            assert await purge_expired_transcripts(store, NOW) == 2
            kept_s = [(NOW - e.created_at).days for e in await store.list_transcript("ses_org_s")]
            kept_d = [(NOW - e.created_at).days for e in await store.list_transcript("ses_org_d")]
            assert (kept_s, kept_d) == ([3], [10, 3])
        finally:
            await store.close()

    asyncio.run(main())
