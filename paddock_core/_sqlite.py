"""SQLite store: the embedded default.

One connection lives on one dedicated thread; every call hops to it once. Writes go through a
group commit: batches that arrive while a transaction is being written are applied together in
the next one, each inside its own SAVEPOINT (a batch that fails, e.g. a lost compare-and-set,
rolls back alone; batches of audit appends alone need none, and their rows go in together by
one executemany), and every caller is answered only after COMMIT, so an audit event is
durable before the API call that caused it answers.

Several processes may share the file (control plane and gateway under docker-compose): each
transaction is `BEGIN IMMEDIATE`, so reading an audit chain's head and appending to it cannot
interleave with another writer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ._audit import GENESIS_HASH, AuditRow, format_time, link
from ._errors import NotFoundError, StoreError, VersionConflictError
from ._records import (
    AuditEvent,
    RunnerRecord,
    SessionRecord,
    utcnow,
)
from ._sqlite_chain import ChainReader
from ._sqlite_reads import AUDIT_COLUMNS, SPENT, SqliteReads
from ._store import (
    AppendAudit,
    AppendCheckpoint,
    AppendTranscript,
    BatchResult,
    DeleteObject,
    InsertRunner,
    InsertSession,
    Operation,
    PurgeTranscripts,
    PutObject,
    RecordLlmCall,
    UpdateObject,
    UpdateRunner,
    UpdateSession,
    check_expected,
)

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

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
CREATE INDEX IF NOT EXISTS llm_calls_org ON llm_calls(org_id, created_at);
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
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    org_id TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, time TEXT NOT NULL,
    signature TEXT NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (org_id, seq));
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, org_id TEXT, doc TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS objects_org ON objects(kind, org_id);
CREATE TABLE IF NOT EXISTS transcripts (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, session_id TEXT NOT NULL,
    created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transcripts_session ON transcripts(session_id, created_at);
CREATE INDEX IF NOT EXISTS transcripts_org ON transcripts(org_id, created_at);
"""



def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class SqliteStore(SqliteReads):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Reads use their own connection and thread, so they never wait behind the writer's
        # fsync (WAL lets readers see every committed transaction while a write is in flight).
        self._read_conn: sqlite3.Connection | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        # Point reads (one row by key: a runner by its token, a session, an object) run on
        # the event loop itself, on a third connection: they take microseconds, while a hop
        # to the read thread cost a gateway call a millisecond or more of waiting for the
        # thread and the GIL. It never waits for a lock (busy_timeout 0): a busy database
        # sends the read to the read thread instead.
        self._lookup_conn: sqlite3.Connection | None = None
        self._chain = ChainReader(path) if str(path) != ":memory:" else None
        self._pending: list[tuple[list[Operation], asyncio.Future[BatchResult]]] = []
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        if not url.startswith("sqlite:///"):
            raise StoreError(f"not a sqlite URL: {url!r}")
        return cls(Path(url.removeprefix("sqlite:///")))

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paddock-sqlite")
        await self._run(self._connect)
        if str(self._path) != ":memory:":  # a second connection would see another database
            self._read_executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="paddock-sqlite-read"
            )
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._read_executor, self._connect_reader)
            self._lookup_conn = sqlite3.connect(self._path, isolation_level=None)
            self._lookup_conn.execute("PRAGMA busy_timeout=0")
            self._lookup_conn.execute("PRAGMA query_only=ON")

    def _connect_reader(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA query_only=ON")
        self._read_conn = conn

    def _connect(self) -> None:
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed audit event survives a power cut, not only a process crash. The
        # group commit pays the fsync once per transaction, not once per event.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._lookup_conn is not None:
            self._lookup_conn.close()
            self._lookup_conn = None
        if self._chain is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._chain.close)
        if self._read_executor is not None:
            if self._read_conn is not None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._read_executor, self._read_conn.close)
            self._read_executor.shutdown(wait=True)
        self._read_conn = None
        self._read_executor = None
        if self._executor is not None:
            if self._conn is not None:
                await self._run(self._conn.close)
            self._executor.shutdown(wait=True)
        self._conn = None
        self._executor = None

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StoreError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    # --- writes: group commit -----------------------------------------------------------

    async def apply(self, ops: Sequence[Operation]) -> BatchResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchResult] = loop.create_future()
        self._pending.append((list(ops), future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        # A caller that goes away does not take its batch out of a transaction that may
        # already be committing: once queued, a batch is applied with its group, and the
        # cancelled future is only skipped when the answers go out. (No asyncio.shield: it
        # would add a future and a callback per batch for the same behaviour.)
        return await future

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                outcomes = await self._run(self._commit_group, [ops for ops, _ in group])
            except BaseException as exc:
                outcomes = [exc] * len(group)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _commit_group(self, group: list[list[Operation]]) -> list[BatchResult | BaseException]:
        db = self._db
        heads: dict[str, tuple[int, str]] = {}
        outcomes: list[BatchResult | BaseException] = []
        # Rows of batches made only of AppendAudit: linked at once, inserted by one executemany
        # before the next other batch and before COMMIT. Such a batch writes nothing else, and
        # its rows cannot collide (this transaction holds the write lock and read the heads), so
        # it needs no SAVEPOINT; if the insert still fails, the whole group fails.
        rows: list[AuditRow] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for ops in group:
                saved = dict(heads)
                events = [op.event for op in ops if isinstance(op, AppendAudit)]
                if len(events) == len(ops):
                    result, mark = BatchResult(), len(rows)
                    try:
                        for event in events:
                            linked, row = self._link(event, heads)
                            result.events.append(linked)
                            rows.append(row)
                    except Exception as exc:
                        heads = saved
                        del rows[mark:]
                        outcomes.append(_store_error(exc))
                    else:
                        outcomes.append(result)
                    continue
                self._insert_rows(db, rows)
                db.execute("SAVEPOINT batch")
                try:
                    result = BatchResult()
                    for op in ops:
                        self._apply_one(db, op, result, heads)
                except Exception as exc:
                    db.execute("ROLLBACK TO batch")
                    db.execute("RELEASE batch")
                    heads = saved
                    outcomes.append(_store_error(exc))
                else:
                    db.execute("RELEASE batch")
                    outcomes.append(result)
            self._insert_rows(db, rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _apply_one(
        self,
        db: sqlite3.Connection,
        op: Operation,
        out: BatchResult,
        heads: dict[str, tuple[int, str]],
    ) -> None:
        match op:
            case InsertRunner(runner=r):
                doc = r.model_dump(mode="json", exclude={SPENT})
                try:
                    db.execute(
                        "INSERT INTO runners (id, org_id, version, token_hash, spent_usd, doc)"
                        " VALUES (?,?,?,?,?,?)",
                        (r.id, r.org_id, r.version, r.token_hash, r.spent_usd, _dumps(doc)),
                    )
                except sqlite3.IntegrityError as exc:
                    raise StoreError(f"runner {r.id} already exists") from exc
                out.runners[r.id] = r
            case UpdateRunner(runner_id=rid, expected_version=v, changes=changes):
                out.runners[rid] = self._cas_update(db, "runners", rid, v, changes)
            case InsertSession(session=s):
                doc = s.model_dump(mode="json", exclude={SPENT})
                db.execute(
                    "INSERT INTO sessions (id, org_id, runner_id, version, spent_usd, doc)"
                    " VALUES (?,?,?,?,?,?)",
                    (s.id, s.org_id, s.runner_id, s.version, s.spent_usd, _dumps(doc)),
                )
                out.sessions[s.id] = s
            case UpdateSession(session_id=sid, expected_version=v, changes=changes):
                out.sessions[sid] = self._cas_update(db, "sessions", sid, v, changes)
            case RecordLlmCall(call=c):
                db.execute(
                    "INSERT INTO llm_calls (id, org_id, runner_id, session_id, created_at, doc)"
                    " VALUES (?,?,?,?,?,?)",
                    (
                        c.id,
                        c.org_id,
                        c.runner_id,
                        c.session_id,
                        format_time(c.created_at),  # fixed-width UTC: compares as text
                        _dumps(c.model_dump(mode="json")),
                    ),
                )
                if c.session_id:
                    db.execute(
                        "UPDATE sessions SET spent_usd = spent_usd + ? WHERE id = ?",
                        (c.cost_usd, c.session_id),
                    )
                if c.runner_id:
                    db.execute(
                        "UPDATE runners SET spent_usd = spent_usd + ? WHERE id = ?",
                        (c.cost_usd, c.runner_id),
                    )
            case AppendAudit(event=e):
                linked, row = self._link(e, heads)
                self._insert_rows(db, [row])
                out.events.append(linked)
            case PutObject(kind=kind, record=record):
                doc = record.model_dump(mode="json")
                try:
                    db.execute(
                        "INSERT INTO objects (kind, id, org_id, doc) VALUES (?,?,?,?)",
                        (kind, doc["id"], doc.get("org_id"), _dumps(doc)),
                    )
                except sqlite3.IntegrityError as exc:
                    raise StoreError(f"{kind} {doc['id']} already exists") from exc
            case UpdateObject(kind=kind, object_id=oid, changes=changes, expected=expected):
                row = db.execute(
                    "SELECT doc FROM objects WHERE kind = ? AND id = ?", (kind, oid)
                ).fetchone()
                if row is None:
                    raise NotFoundError(f"{kind} {oid} not found")
                current = json.loads(row[0])
                check_expected(kind, oid, current, expected)
                doc = {**current, **_jsonable(changes)}
                db.execute(
                    "UPDATE objects SET doc = ? WHERE kind = ? AND id = ?", (_dumps(doc), kind, oid)
                )
            case DeleteObject(kind=kind, object_id=oid, expected=expected):
                row = db.execute(
                    "SELECT doc FROM objects WHERE kind = ? AND id = ?", (kind, oid)
                ).fetchone()
                if row is None:
                    raise NotFoundError(f"{kind} {oid} not found")
                check_expected(kind, oid, json.loads(row[0]), expected)
                db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, oid))
            case AppendCheckpoint(checkpoint=cp):
                db.execute(
                    "INSERT INTO audit_checkpoints (org_id, seq, hash, time, signature, key_id)"
                    " VALUES (?,?,?,?,?,?)",
                    (cp.org_id, cp.seq, cp.hash, cp.time.isoformat(), cp.signature, cp.key_id),
                )
            case AppendTranscript(entries=entries):
                db.executemany(
                    "INSERT INTO transcripts (id, org_id, session_id, created_at, doc)"
                    " VALUES (?,?,?,?,?)",
                    [
                        (
                            t.id,
                            t.org_id,
                            t.session_id,
                            format_time(t.created_at),
                            _dumps(t.model_dump(mode="json")),
                        )
                        for t in entries
                    ],
                )
            case PurgeTranscripts(org_id=org_id, before=before):
                db.execute(
                    "DELETE FROM transcripts WHERE org_id = ? AND created_at < ?",
                    (org_id, format_time(before)),
                )

    def _cas_update(
        self, db: sqlite3.Connection, table: str, rid: str, version: int, changes: dict[str, Any]
    ) -> Any:
        if SPENT in changes or "version" in changes or "id" in changes:
            raise StoreError("spent_usd, version and id are not updatable")
        row = db.execute(
            f"SELECT doc, version, spent_usd FROM {table} WHERE id = ?", (rid,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{table[:-1]} {rid} not found")
        if row[1] != version:
            raise VersionConflictError(
                f"{table[:-1]} {rid} changed concurrently (version {row[1]}, expected {version})"
            )
        model = RunnerRecord if table == "runners" else SessionRecord
        record = model.model_validate({**json.loads(row[0]), SPENT: row[2]})
        extra = {"updated_at": utcnow()} if table == "runners" else {}
        # Re-validate, so a bad change fails here rather than on the next read.
        updated = model.model_validate(
            {**record.model_dump(), **changes, **extra, "version": version + 1}
        )
        doc = updated.model_dump(mode="json", exclude={SPENT})
        db.execute(
            f"UPDATE {table} SET doc = ?, version = ?, org_id = ? WHERE id = ? AND version = ?",
            (_dumps(doc), version + 1, updated.org_id, rid, version),
        )
        if isinstance(updated, RunnerRecord):  # keep the indexed copy in step with the doc
            db.execute("UPDATE runners SET token_hash = ? WHERE id = ?", (updated.token_hash, rid))
        return updated

    def _link(
        self, event: AuditEvent, heads: dict[str, tuple[int, str]]
    ) -> tuple[AuditEvent, AuditRow]:
        """Chain `event` after its org's head (read once per transaction) and advance the head."""
        head = heads.get(event.org_id)
        if head is None:
            head = self._head_sync(event.org_id)
        linked, row = link(event, head[0] + 1, head[1])
        heads[event.org_id] = (row.seq, row.hash)
        return linked, row

    @staticmethod
    def _insert_rows(db: sqlite3.Connection, rows: list[AuditRow]) -> None:
        """Insert and empty `rows`."""
        if rows:
            db.executemany(
                f"INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows
            )
            rows.clear()

    def _head_sync(self, org_id: str) -> tuple[int, str]:
        row = self._db.execute(
            "SELECT seq, hash FROM audit_events WHERE org_id = ? ORDER BY seq DESC LIMIT 1",
            (org_id,),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    async def audit_head(self, org_id: str) -> tuple[int, str]:
        return await self._run(self._head_sync, org_id)


def _store_error(exc: Exception) -> Exception:
    """SQLite's own errors (a duplicate id, say) as StoreError: callers see one error tree."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    refused = StoreError(f"batch refused: {exc}")
    refused.__cause__ = exc
    return refused


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}
