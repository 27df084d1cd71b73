"""The SQLite store's reads, mixed into `SqliteStore` (paddock_core._sqlite), which owns the
connections and threads they use:

- `_fetch`: a query on the read connection and its own thread, so reads never wait behind the
  writer's fsync (WAL lets readers see every committed transaction while a write is in flight);
- `_lookup`: a point read (one row by key: a runner by its token, a session, an object) inline
  on the event loop, on a connection that never waits for a lock (see `SqliteStore`);
- `audit_chain`: the pages verification reads, from `ChainReader` (paddock_core._sqlite_chain).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from ._audit import AuditRow, ChainLink, format_time, links_of_rows
from ._errors import StoreError
from ._records import AuditEvent, LlmCallRecord, RunnerRecord, SessionRecord, TranscriptEntry
from ._sqlite_chain import PAGE, ChainReader
from ._store import AuditCheckpoint, AuditQuery, ObjectKind

__all__ = ["AUDIT_COLUMNS", "SPENT", "SqliteReads", "runner_of"]

_T = TypeVar("_T")

SPENT = "spent_usd"
AUDIT_COLUMNS = "org_id, seq, time, actor, type, runner_id, session_id, data, prev_hash, hash"


def runner_of(row: Any) -> RunnerRecord:
    return RunnerRecord.model_validate({**json.loads(row[0]), SPENT: row[1]})


class SqliteReads:
    """Every read of the store. `SqliteStore` provides what is declared here (its connections,
    its writer thread's `_run` and `_db`, and `audit_head`, read on the writer's connection)."""

    _read_conn: sqlite3.Connection | None
    _read_executor: ThreadPoolExecutor | None
    _lookup_conn: sqlite3.Connection | None
    _chain: ChainReader | None

    @property
    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        raise NotImplementedError

    async def audit_head(self, org_id: str) -> tuple[int, str]:
        raise NotImplementedError

    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        if self._read_executor is None or self._read_conn is None:

            def run() -> list[Any]:
                return list(self._db.execute(sql, args).fetchall())

            return await self._run(run)
        conn = self._read_conn

        def read() -> list[Any]:
            return list(conn.execute(sql, args).fetchall())

        return await asyncio.get_running_loop().run_in_executor(self._read_executor, read)

    async def _lookup(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """A point read (at most a few rows, by key): inline, see `_lookup_conn`."""
        if self._lookup_conn is not None:
            try:
                return self._lookup_conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
        return await self._fetch(sql, args)

    async def get_runner(self, runner_id: str) -> RunnerRecord | None:
        rows = await self._lookup("SELECT doc, spent_usd FROM runners WHERE id = ?", (runner_id,))
        return runner_of(rows[0]) if rows else None

    async def list_runners(self, org_id: str | None = None) -> list[RunnerRecord]:
        if org_id is None:
            rows = await self._fetch("SELECT doc, spent_usd FROM runners ORDER BY rowid", ())
        else:
            rows = await self._fetch(
                "SELECT doc, spent_usd FROM runners WHERE org_id = ? ORDER BY rowid", (org_id,)
            )
        return [runner_of(r) for r in rows]

    async def find_runner_by_token(self, token_hash: str) -> RunnerRecord | None:
        rows = await self._lookup(
            "SELECT doc, spent_usd FROM runners WHERE token_hash = ?", (token_hash,)
        )
        return runner_of(rows[0]) if rows else None

    async def get_session(self, session_id: str) -> SessionRecord | None:
        rows = await self._lookup("SELECT doc, spent_usd FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            return None
        return SessionRecord.model_validate({**json.loads(rows[0][0]), SPENT: rows[0][1]})

    async def list_llm_calls(
        self,
        *,
        session_id: str | None = None,
        runner_id: str | None = None,
        org_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LlmCallRecord]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("session_id", session_id),
            ("runner_id", runner_id),
            ("org_id", org_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if not where:
            raise StoreError("list_llm_calls needs session_id, runner_id or org_id")
        if since is not None:
            where.append("created_at >= ?")
            args.append(format_time(since))
        if until is not None:
            where.append("created_at < ?")
            args.append(format_time(until))
        rows = await self._fetch(
            f"SELECT doc FROM llm_calls WHERE {' AND '.join(where)} ORDER BY created_at, rowid",
            tuple(args),
        )
        return [LlmCallRecord.model_validate_json(r[0]) for r in rows]

    async def spend_usd(
        self,
        org_id: str,
        *,
        since: datetime,
        until: datetime,
        team_id: str | None = None,
        key_id: str | None = None,
        user_id: str | None = None,
    ) -> float:
        where = ["org_id = ?", "created_at >= ?", "created_at < ?"]
        args: list[Any] = [org_id, format_time(since), format_time(until)]
        for name, value in (("team_id", team_id), ("key_id", key_id), ("user_id", user_id)):
            if value is not None:
                where.append(f"json_extract(doc, '$.{name}') = ?")
                args.append(value)
        rows = await self._fetch(
            f"SELECT TOTAL(json_extract(doc, '$.cost_usd')) FROM llm_calls"
            f" WHERE {' AND '.join(where)}",
            tuple(args),
        )
        return float(rows[0][0])

    async def list_audit(
        self,
        org_id: str,
        *,
        runner_id: str | None = None,
        session_id: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
        query: AuditQuery | None = None,
    ) -> list[AuditEvent]:
        q = query or AuditQuery(
            runner_id=runner_id, session_id=session_id, after_seq=after_seq, limit=limit
        )
        return [r.to_event() for r in await self._audit_rows(org_id, q)]

    async def audit_rows(self, org_id: str, *, after_seq: int, limit: int) -> list[AuditRow]:
        return await self._audit_rows(org_id, AuditQuery(after_seq=after_seq, limit=limit))

    async def _audit_rows(self, org_id: str, q: AuditQuery) -> list[AuditRow]:
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE org_id = ? AND seq > ?"
        args: list[Any] = [org_id, q.after_seq]
        if q.runner_id is not None:
            sql += " AND runner_id = ?"
            args.append(q.runner_id)
        if q.session_id is not None:
            sql += " AND session_id = ?"
            args.append(q.session_id)
        if q.types:
            sql += f" AND type IN ({','.join('?' * len(q.types))})"
            args.extend(q.types)
        if q.since is not None:
            sql += " AND time >= ?"
            args.append(format_time(q.since))
        if q.until is not None:
            sql += " AND time < ?"
            args.append(format_time(q.until))
        rows = await self._fetch(sql + " ORDER BY seq LIMIT ?", (*args, q.limit))
        return [AuditRow(*r) for r in rows]

    async def audit_chain(
        self, org_id: str, *, after_seq: int = 0
    ) -> AsyncGenerator[list[ChainLink], None]:
        head, _ = await self.audit_head(org_id)
        if self._chain is not None:
            async for page in self._chain.pages(org_id, after_seq, head):
                yield page
            return

        def read(after: int) -> Awaitable[list[AuditRow]]:  # in memory: the one connection
            return self.audit_rows(org_id, after_seq=after, limit=PAGE)

        async for page in links_of_rows(read, after_seq, head):
            yield page

    async def list_checkpoints(self, org_id: str) -> list[AuditCheckpoint]:
        rows = await self._fetch(
            "SELECT org_id, seq, hash, time, signature, key_id FROM audit_checkpoints"
            " WHERE org_id = ? ORDER BY seq",
            (org_id,),
        )
        return [
            AuditCheckpoint(r[0], r[1], r[2], datetime.fromisoformat(r[3]), r[4], r[5])
            for r in rows
        ]

    async def get_object(self, kind: ObjectKind, object_id: str) -> dict[str, Any] | None:
        rows = await self._lookup(
            "SELECT doc FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
        )
        return json.loads(rows[0][0]) if rows else None

    async def list_objects(self, kind: ObjectKind, org_id: str | None) -> list[dict[str, Any]]:
        if org_id is None:
            rows = await self._fetch(
                "SELECT doc FROM objects WHERE kind = ? ORDER BY rowid", (kind,)
            )
        else:
            rows = await self._fetch(
                "SELECT doc FROM objects WHERE kind = ? AND org_id = ? ORDER BY rowid",
                (kind, org_id),
            )
        return [json.loads(r[0]) for r in rows]


    async def list_transcript(self, session_id: str) -> list[TranscriptEntry]:
        rows = await self._fetch(
            "SELECT doc FROM transcripts WHERE session_id = ? ORDER BY created_at, rowid",
            (session_id,),
        )
        return [TranscriptEntry.model_validate_json(r[0]) for r in rows]
