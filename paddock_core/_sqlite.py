"""SQLite store: the embedded default. One connection, one writer at a time, WAL mode.

Several processes may share the file (control plane and gateway under docker-compose): every
batch runs in `BEGIN IMMEDIATE`, so the audit chain's (seq, prev_hash) read and the insert that
follows cannot interleave with another writer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ._audit import GENESIS_HASH, chain_hash
from ._errors import NotFoundError, StoreError, VersionConflictError
from ._records import AuditEvent, LlmCallRecord, RunnerRecord, SessionRecord, utcnow
from ._store import (
    AppendAudit,
    BatchResult,
    InsertRunner,
    InsertSession,
    Operation,
    RecordLlmCall,
    UpdateRunner,
    UpdateSession,
)

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runners (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, version INTEGER NOT NULL,
    token_hash TEXT NOT NULL, spent_usd REAL NOT NULL DEFAULT 0, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runners_org ON runners(org_id);
CREATE UNIQUE INDEX IF NOT EXISTS runners_token ON runners(token_hash);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, runner_id TEXT NOT NULL,
    version INTEGER NOT NULL, spent_usd REAL NOT NULL DEFAULT 0, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_runner ON sessions(runner_id);
CREATE TABLE IF NOT EXISTS llm_calls (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, runner_id TEXT, session_id TEXT,
    created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS llm_calls_session ON llm_calls(session_id, created_at);
CREATE INDEX IF NOT EXISTS llm_calls_runner ON llm_calls(runner_id, created_at);
CREATE TABLE IF NOT EXISTS audit_events (
    org_id TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL, actor TEXT NOT NULL,
    type TEXT NOT NULL, runner_id TEXT, session_id TEXT, data TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (org_id, seq));
CREATE INDEX IF NOT EXISTS audit_runner ON audit_events(runner_id, seq);
CREATE INDEX IF NOT EXISTS audit_session ON audit_events(session_id, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
"""

_SPENT = "spent_usd"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        if not url.startswith("sqlite:///"):
            raise StoreError(f"not a sqlite URL: {url!r}")
        return cls(Path(url.removeprefix("sqlite:///")))

    async def open(self) -> None:
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=10000")
        await self._db.executescript(_SCHEMA)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    # --- writes -------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Operation]) -> BatchResult:
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = BatchResult()
                for op in ops:
                    await self._apply_one(db, op, result)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
            return result

    async def _apply_one(self, db: aiosqlite.Connection, op: Operation, out: BatchResult) -> None:
        match op:
            case InsertRunner(runner=r):
                doc = r.model_dump(mode="json", exclude={_SPENT})
                try:
                    await db.execute(
                        "INSERT INTO runners (id, org_id, version, token_hash, spent_usd, doc)"
                        " VALUES (?,?,?,?,?,?)",
                        (r.id, r.org_id, r.version, r.token_hash, r.spent_usd, _dumps(doc)),
                    )
                except sqlite3.IntegrityError as exc:
                    raise StoreError(f"runner {r.id} already exists") from exc
                out.runners[r.id] = r
            case UpdateRunner(runner_id=rid, expected_version=v, changes=changes):
                out.runners[rid] = await self._cas_update(db, "runners", rid, v, changes)
            case InsertSession(session=s):
                doc = s.model_dump(mode="json", exclude={_SPENT})
                await db.execute(
                    "INSERT INTO sessions (id, org_id, runner_id, version, spent_usd, doc)"
                    " VALUES (?,?,?,?,?,?)",
                    (s.id, s.org_id, s.runner_id, s.version, s.spent_usd, _dumps(doc)),
                )
                out.sessions[s.id] = s
            case UpdateSession(session_id=sid, expected_version=v, changes=changes):
                out.sessions[sid] = await self._cas_update(db, "sessions", sid, v, changes)
            case RecordLlmCall(call=c):
                await db.execute(
                    "INSERT INTO llm_calls (id, org_id, runner_id, session_id, created_at, doc)"
                    " VALUES (?,?,?,?,?,?)",
                    (
                        c.id,
                        c.org_id,
                        c.runner_id,
                        c.session_id,
                        c.created_at.isoformat(),
                        _dumps(c.model_dump(mode="json")),
                    ),
                )
                if c.session_id:
                    await db.execute(
                        "UPDATE sessions SET spent_usd = spent_usd + ? WHERE id = ?",
                        (c.cost_usd, c.session_id),
                    )
                if c.runner_id:
                    await db.execute(
                        "UPDATE runners SET spent_usd = spent_usd + ? WHERE id = ?",
                        (c.cost_usd, c.runner_id),
                    )
            case AppendAudit(event=e):
                out.events.append(await self._append_audit(db, e))

    async def _cas_update(
        self, db: aiosqlite.Connection, table: str, rid: str, version: int, changes: dict[str, Any]
    ) -> Any:
        if _SPENT in changes or "version" in changes or "id" in changes:
            raise StoreError("spent_usd, version and id are not updatable")
        cursor = await db.execute(
            f"SELECT doc, version, spent_usd FROM {table} WHERE id = ?", (rid,)
        )
        row = await cursor.fetchone()
        if row is None:
            raise NotFoundError(f"{table[:-1]} {rid} not found")
        if row[1] != version:
            raise VersionConflictError(
                f"{table[:-1]} {rid} changed concurrently (version {row[1]}, expected {version})"
            )
        model = RunnerRecord if table == "runners" else SessionRecord
        record = model.model_validate({**json.loads(row[0]), _SPENT: row[2]})
        updated = record.model_copy(update={**changes, "version": version + 1})
        if table == "runners":
            updated = updated.model_copy(update={"updated_at": utcnow()})
        updated = model.model_validate(updated.model_dump())  # re-validate the changed fields
        doc = updated.model_dump(mode="json", exclude={_SPENT})
        await db.execute(
            f"UPDATE {table} SET doc = ?, version = ? WHERE id = ? AND version = ?",
            (_dumps(doc), version + 1, rid, version),
        )
        return updated

    async def _append_audit(self, db: aiosqlite.Connection, event: AuditEvent) -> AuditEvent:
        cursor = await db.execute(
            "SELECT seq, hash FROM audit_events WHERE org_id = ? ORDER BY seq DESC LIMIT 1",
            (event.org_id,),
        )
        last = await cursor.fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        linked = event.model_copy(update={"seq": seq, "prev_hash": prev, "hash": ""})
        linked = linked.model_copy(update={"hash": chain_hash(linked)})
        await db.execute(
            "INSERT INTO audit_events (org_id, seq, time, actor, type, runner_id, session_id,"
            " data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                linked.org_id,
                seq,
                linked.time.isoformat(),
                linked.actor,
                linked.type,
                linked.runner_id,
                linked.session_id,
                _dumps(linked.data),
                prev,
                linked.hash,
            ),
        )
        return linked

    # --- reads --------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        async with self._lock:
            cursor = await self.db.execute(sql, args)
            return list(await cursor.fetchall())

    async def get_runner(self, runner_id: str) -> RunnerRecord | None:
        rows = await self._fetch("SELECT doc, spent_usd FROM runners WHERE id = ?", (runner_id,))
        return _runner(rows[0]) if rows else None

    async def list_runners(self, org_id: str | None = None) -> list[RunnerRecord]:
        if org_id is None:
            rows = await self._fetch("SELECT doc, spent_usd FROM runners ORDER BY rowid", ())
        else:
            rows = await self._fetch(
                "SELECT doc, spent_usd FROM runners WHERE org_id = ? ORDER BY rowid", (org_id,)
            )
        return [_runner(r) for r in rows]

    async def find_runner_by_token(self, token_hash: str) -> RunnerRecord | None:
        rows = await self._fetch(
            "SELECT doc, spent_usd FROM runners WHERE token_hash = ?", (token_hash,)
        )
        return _runner(rows[0]) if rows else None

    async def get_session(self, session_id: str) -> SessionRecord | None:
        rows = await self._fetch("SELECT doc, spent_usd FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            return None
        return SessionRecord.model_validate({**json.loads(rows[0][0]), _SPENT: rows[0][1]})

    async def list_llm_calls(
        self, *, session_id: str | None = None, runner_id: str | None = None
    ) -> list[LlmCallRecord]:
        if session_id is not None:
            sql, arg = "SELECT doc FROM llm_calls WHERE session_id = ?", session_id
        elif runner_id is not None:
            sql, arg = "SELECT doc FROM llm_calls WHERE runner_id = ?", runner_id
        else:
            raise StoreError("list_llm_calls needs session_id or runner_id")
        rows = await self._fetch(sql + " ORDER BY created_at, rowid", (arg,))
        return [LlmCallRecord.model_validate_json(r[0]) for r in rows]

    async def list_audit(
        self,
        org_id: str,
        *,
        runner_id: str | None = None,
        session_id: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        sql = (
            "SELECT org_id, seq, time, actor, type, runner_id, session_id, data, prev_hash, hash"
            " FROM audit_events WHERE org_id = ? AND seq > ?"
        )
        args: list[Any] = [org_id, after_seq]
        if runner_id is not None:
            sql += " AND runner_id = ?"
            args.append(runner_id)
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        rows = await self._fetch(sql + " ORDER BY seq LIMIT ?", (*args, limit))
        return [
            AuditEvent(
                org_id=r[0],
                seq=r[1],
                time=r[2],
                actor=r[3],
                type=r[4],
                runner_id=r[5],
                session_id=r[6],
                data=json.loads(r[7]),
                prev_hash=r[8],
                hash=r[9],
            )
            for r in rows
        ]


def _runner(row: Any) -> RunnerRecord:
    return RunnerRecord.model_validate({**json.loads(row[0]), _SPENT: row[1]})
