"""MongoDB store, on PyMongo's asyncio client: the same contract as `SqliteStore`.

Needs MongoDB 5.0 or newer running as a replica set (a single node is enough:
`mongod --replSet rs0`, then `rs.initiate()` once) or a sharded cluster: every `apply` is one
multi-document transaction (snapshot read concern, majority write concern), and MongoDB has
transactions only there. `open()` refuses a standalone server with a StoreError.

An org's audit chain is extended by reading its newest event inside the transaction and
inserting the next seq; a unique index on (org_id, seq) makes two writers that read the same
head collide (a write conflict or duplicate key), and the loser's whole batch is retried, a
bounded number of times. Inside one process, batches that append to an org's chain or record
its LLM calls (hot `$inc`s on one runner and session) queue on the org's lock instead. `time`
and `data` are stored as the canonical text of `_audit`, so `audit_rows` verifies exactly as
with SQLite. `spent_usd` changes only by `$inc`, never by a compare-and-set update.

MongoDB has no triggers: this module never updates or deletes an audit event, checkpoint or
LLM call (no code path could), and a deployment should give Paddock a role that cannot either:
no `remove` anywhere, `update` only on runners, sessions and objects. In `mongosh`, as an
administrator, in the `paddock` database (`use paddock`):

    db.createRole({role: "paddockStore", roles: [], privileges: [
      {resource: {db: "paddock", collection: ""},
       actions: ["find", "insert", "createCollection", "createIndex"]},
      {resource: {db: "paddock", collection: "runners"}, actions: ["update"]},
      {resource: {db: "paddock", collection: "sessions"}, actions: ["update"]},
      {resource: {db: "paddock", collection: "objects"}, actions: ["update"]}]})
    db.createUser({user: "paddock", pwd: passwordPrompt(), roles: ["paddockStore"]})

(`open()` creates the collections and indexes; once they exist, `createCollection` and
`createIndex` may be taken away too.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from ._audit import GENESIS_HASH, AuditRow, ChainLink, format_time, link, links_of_rows
from ._errors import NotFoundError, StoreError, VersionConflictError
from ._records import (
    AuditEvent,
    LlmCallRecord,
    RunnerRecord,
    SessionRecord,
    TranscriptEntry,
    utcnow,
)
from ._store import (
    AppendAudit,
    AppendCheckpoint,
    AppendTranscript,
    AuditCheckpoint,
    AuditQuery,
    BatchResult,
    DeleteObject,
    InsertRunner,
    InsertSession,
    ObjectKind,
    Operation,
    PurgeTranscripts,
    PutObject,
    RecordLlmCall,
    UpdateObject,
    UpdateRunner,
    UpdateSession,
    check_expected,
)

__all__ = ["MongoStore"]

Doc = dict[str, Any]
_M = TypeVar("_M", RunnerRecord, SessionRecord)

_SPENT = "spent_usd"
_ATTEMPTS = 10
"""Tries of one batch that keeps losing its audit seq or a write to a concurrent writer."""
_BACKOFF_S = 0.005
"""First pause between tries, seconds; doubled each try, capped at 0.25 s, jittered."""
_NO_ID = {"_id": 0}
_CHAIN_PAGE = 10_000
_BY_ID = [("_id", ASCENDING)]
"""Insertion order: ObjectIds grow within a process (and by the second across processes)."""
_INDEXES = {  # "a,b" is a compound index, "!" a unique one
    "runners": ("id!", "token_hash!", "org_id"),
    "sessions": ("id!", "runner_id"),
    "llm_calls": ("id!", "session_id,created_at", "runner_id,created_at", "org_id,created_at"),
    "audit_events": ("org_id,seq!", "org_id,runner_id,seq", "org_id,session_id,seq"),
    "audit_checkpoints": ("org_id,seq!",),
    "objects": ("kind,id!", "kind,org_id"),
    "transcripts": ("id!", "session_id,created_at", "org_id,created_at"),
}


class _ChainRace(Exception):
    """Another writer took the audit seq this transaction meant to insert."""


def _is_duplicate(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    errors = exc.details.get("writeErrors", []) if isinstance(exc, BulkWriteError) else []
    return any(e.get("code") == 11000 for e in errors)


class MongoStore:
    def __init__(self, url: str, database: str = "paddock") -> None:
        """`url`: a `mongodb://` or `mongodb+srv://` URL (not contacted before `open`)."""
        self._url = url
        self.database = database
        self._client: AsyncMongoClient[Doc] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_url(cls, url: str) -> MongoStore:
        """The database is the URL's path (`mongodb://host/mydb`), `paddock` if it has none."""
        if not url.startswith(("mongodb://", "mongodb+srv://")):
            raise StoreError("not a MongoDB URL")
        return cls(url, unquote(urlsplit(url).path.lstrip("/")) or "paddock")

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(self._url)
        except PyMongoError as exc:
            raise StoreError(f"bad MongoDB URL: {exc}") from exc
        try:
            hello = await client.admin.command("hello")
            if "setName" not in hello and hello.get("msg") != "isdbgrid":
                raise StoreError(
                    "the MongoDB server is a standalone: Paddock needs transactions, so a replica"
                    " set (one node is enough: mongod --replSet rs0, then rs.initiate()) or a"
                    " sharded cluster"
                )
            db = client[self.database]
            for name, indexes in _INDEXES.items():
                for index in indexes:
                    keys = [(f, ASCENDING) for f in index.rstrip("!").split(",")]
                    await db[name].create_index(keys, unique=index.endswith("!"))
        except BaseException as exc:
            await client.close()
            if isinstance(exc, PyMongoError):
                raise StoreError(f"cannot open the MongoDB store: {exc}") from exc
            raise
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = None

    @property
    def _mongo(self) -> AsyncMongoClient[Doc]:
        if self._client is None:
            raise StoreError("store is not open")
        return self._client

    def _c(self, name: str) -> AsyncCollection[Doc]:
        return self._mongo[self.database][name]

    # --- writes -------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Operation]) -> BatchResult:
        # Shielded: a caller that goes away does not abandon a transaction that may commit.
        return await asyncio.shield(self._apply(list(ops)))

    async def _apply(self, ops: list[Operation]) -> BatchResult:
        orgs = sorted(
            {op.event.org_id for op in ops if isinstance(op, AppendAudit)}
            | {op.call.org_id for op in ops if isinstance(op, RecordLlmCall)}
        )
        async with contextlib.AsyncExitStack() as stack:
            for org_id in orgs:  # sorted: two batches never wait for each other in a cycle
                await stack.enter_async_context(self._locks.setdefault(org_id, asyncio.Lock()))
            lost: Exception | None = None
            for attempt in range(_ATTEMPTS):
                try:
                    return await self._transaction(ops)
                except _ChainRace as exc:
                    lost = exc
                except PyMongoError as exc:
                    if not exc.has_error_label("TransientTransactionError"):
                        raise StoreError(f"MongoDB refused the batch: {exc}") from exc
                    lost = exc
                delay = min(0.25, _BACKOFF_S * 2**attempt)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        raise StoreError(f"batch lost {_ATTEMPTS} times in a row to concurrent writers") from lost

    async def _transaction(self, ops: list[Operation]) -> BatchResult:
        async with self._mongo.start_session() as s:
            await s.start_transaction(
                read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
            )
            out, heads, rows = BatchResult(), dict[str, tuple[int, str]](), list[AuditRow]()
            for op in ops:  # an exception leaves the session, which aborts the transaction
                await self._apply_one(s, op, out, heads, rows)
            if rows:
                try:
                    await self._c("audit_events").insert_many(
                        [row._asdict() for row in rows], session=s
                    )
                except PyMongoError as exc:
                    if _is_duplicate(exc):
                        raise _ChainRace from exc
                    raise
            for attempt in range(_ATTEMPTS):
                try:
                    await s.commit_transaction()
                    break
                except PyMongoError as exc:  # committed or not? Only the commit may be retried.
                    unknown = exc.has_error_label("UnknownTransactionCommitResult")
                    if not unknown or attempt + 1 == _ATTEMPTS:
                        raise
        return out

    async def _apply_one(
        self,
        s: AsyncClientSession,
        op: Operation,
        out: BatchResult,
        heads: dict[str, tuple[int, str]],
        rows: list[AuditRow],
    ) -> None:
        match op:
            case InsertRunner(runner=r):
                doc = r.model_dump(mode="json", exclude={_SPENT})
                row = {"id": r.id, "org_id": r.org_id, "version": r.version, _SPENT: r.spent_usd}
                await self._insert("runners", {**row, "token_hash": r.token_hash, "doc": doc}, s)
                out.runners[r.id] = r
            case UpdateRunner(runner_id=rid, expected_version=v, changes=changes):
                out.runners[rid] = await self._cas(s, RunnerRecord, rid, v, changes)
            case InsertSession(session=x):
                doc = x.model_dump(mode="json", exclude={_SPENT})
                row = {"id": x.id, "org_id": x.org_id, "version": x.version, _SPENT: x.spent_usd}
                await self._insert("sessions", {**row, "runner_id": x.runner_id, "doc": doc}, s)
                out.sessions[x.id] = x
            case UpdateSession(session_id=sid, expected_version=v, changes=changes):
                out.sessions[sid] = await self._cas(s, SessionRecord, sid, v, changes)
            case RecordLlmCall(call=c):
                row = {"id": c.id, "org_id": c.org_id, "created_at": format_time(c.created_at)}
                row |= {"runner_id": c.runner_id, "session_id": c.session_id}
                await self._insert("llm_calls", {**row, "doc": c.model_dump(mode="json")}, s)
                inc = {"$inc": {_SPENT: c.cost_usd}}
                if c.session_id:
                    await self._c("sessions").update_one({"id": c.session_id}, inc, session=s)
                if c.runner_id:
                    await self._c("runners").update_one({"id": c.runner_id}, inc, session=s)
            case AppendAudit(event=e):
                head = heads.get(e.org_id)
                if head is None:
                    head = await self._head(e.org_id, s)
                linked, audit_row = link(e, head[0] + 1, head[1])
                heads[e.org_id] = (audit_row.seq, audit_row.hash)
                rows.append(audit_row)
                out.events.append(linked)
            case PutObject(kind=kind, record=record):
                doc = record.model_dump(mode="json")
                row = {"kind": kind, "id": doc["id"], "org_id": doc.get("org_id"), "doc": doc}
                await self._insert("objects", row, s, f"{kind} {doc['id']}")
            case UpdateObject(kind=kind, object_id=oid, changes=changes, expected=expected):
                found = await self._c("objects").find_one({"kind": kind, "id": oid}, session=s)
                if found is None:
                    raise NotFoundError(f"{kind} {oid} not found")
                check_expected(kind, oid, found["doc"], expected)
                doc = {**found["doc"], **_jsonable(changes)}
                await self._c("objects").update_one(
                    {"kind": kind, "id": oid}, {"$set": {"doc": doc}}, session=s
                )
            case DeleteObject(kind=kind, object_id=oid, expected=expected):
                found = await self._c("objects").find_one({"kind": kind, "id": oid}, session=s)
                if found is None:
                    raise NotFoundError(f"{kind} {oid} not found")
                check_expected(kind, oid, found["doc"], expected)
                await self._c("objects").delete_one({"kind": kind, "id": oid}, session=s)
            case AppendCheckpoint(checkpoint=cp):
                row = {**asdict(cp), "time": cp.time.isoformat()}
                await self._insert("audit_checkpoints", row, s, f"checkpoint {cp.seq}")
            case AppendTranscript(entries=entries):
                for t in entries:
                    row = {"id": t.id, "org_id": t.org_id, "session_id": t.session_id}
                    row |= {"created_at": format_time(t.created_at)}
                    await self._insert("transcripts", {**row, "doc": t.model_dump(mode="json")}, s)
            case PurgeTranscripts(org_id=org_id, before=before):
                await self._c("transcripts").delete_many(
                    {"org_id": org_id, "created_at": {"$lt": format_time(before)}}, session=s
                )

    async def _insert(
        self, name: str, row: Doc, s: AsyncClientSession, what: str | None = None
    ) -> None:
        try:
            await self._c(name).insert_one(row, session=s)
        except DuplicateKeyError as exc:
            raise StoreError(f"{what or name[:-1] + ' ' + row['id']} already exists") from exc

    async def _cas(
        self, s: AsyncClientSession, model: type[_M], rid: str, version: int, changes: Doc
    ) -> _M:
        if _SPENT in changes or "version" in changes or "id" in changes:
            raise StoreError("spent_usd, version and id are not updatable")
        name = "runner" if model is RunnerRecord else "session"
        found = await self._c(f"{name}s").find_one({"id": rid}, session=s)
        if found is None:
            raise NotFoundError(f"{name} {rid} not found")
        if found["version"] != version:
            raise VersionConflictError(
                f"{name} {rid} changed concurrently"
                f" (version {found['version']}, expected {version})"
            )
        record = model.model_validate({**found["doc"], _SPENT: found[_SPENT]})
        extra = {"updated_at": utcnow()} if model is RunnerRecord else {}
        # Re-validate, so a bad change fails here rather than on the next read.
        updated = model.model_validate(
            {**record.model_dump(), **changes, **extra, "version": version + 1}
        )
        doc = updated.model_dump(mode="json", exclude={_SPENT})
        fields: Doc = {"doc": doc, "version": version + 1, "org_id": updated.org_id}
        if isinstance(updated, RunnerRecord):  # keep the indexed copies in step with the doc
            fields["token_hash"] = updated.token_hash
        done = await self._c(f"{name}s").update_one(
            {"id": rid, "version": version}, {"$set": fields}, session=s
        )
        if done.matched_count != 1:  # the transaction's snapshot makes this unreachable
            raise VersionConflictError(f"{name} {rid} changed concurrently")
        return updated

    async def _head(self, org_id: str, s: AsyncClientSession | None = None) -> tuple[int, str]:
        newest = await self._c("audit_events").find_one(
            {"org_id": org_id}, {"seq": 1, "hash": 1}, sort=[("seq", DESCENDING)], session=s
        )
        return (int(newest["seq"]), str(newest["hash"])) if newest else (0, GENESIS_HASH)

    # --- reads --------------------------------------------------------------------------

    async def _find(
        self, name: str, query: Doc, sort: list[tuple[str, int]], limit: int = 0
    ) -> list[Doc]:
        try:
            cursor = self._c(name).find(query, _NO_ID, sort=sort, limit=limit)
            return await cursor.to_list()
        except PyMongoError as exc:
            raise StoreError(f"MongoDB read failed: {exc}") from exc

    async def _one(self, name: str, query: Doc) -> Doc | None:
        found = await self._find(name, query, [("_id", ASCENDING)], limit=1)
        return found[0] if found else None

    async def get_runner(self, runner_id: str) -> RunnerRecord | None:
        found = await self._one("runners", {"id": runner_id})
        return _record(RunnerRecord, found) if found else None

    async def list_runners(self, org_id: str | None = None) -> list[RunnerRecord]:
        query = {} if org_id is None else {"org_id": org_id}
        return [_record(RunnerRecord, d) for d in await self._find("runners", query, _BY_ID)]

    async def find_runner_by_token(self, token_hash: str) -> RunnerRecord | None:
        found = await self._one("runners", {"token_hash": token_hash})
        return _record(RunnerRecord, found) if found else None

    async def get_session(self, session_id: str) -> SessionRecord | None:
        found = await self._one("sessions", {"id": session_id})
        return _record(SessionRecord, found) if found else None

    async def list_llm_calls(
        self,
        *,
        session_id: str | None = None,
        runner_id: str | None = None,
        org_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LlmCallRecord]:
        keys = {"session_id": session_id, "runner_id": runner_id, "org_id": org_id}
        query: Doc = {k: v for k, v in keys.items() if v is not None}
        if not query:
            raise StoreError("list_llm_calls needs session_id, runner_id or org_id")
        if window := _window(since, until):
            query["created_at"] = window
        docs = await self._find("llm_calls", query, [("created_at", ASCENDING), *_BY_ID])
        return [LlmCallRecord.model_validate(d["doc"]) for d in docs]

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
        match: Doc = {"org_id": org_id, "created_at": _window(since, until)}
        for name, value in (("team_id", team_id), ("key_id", key_id), ("user_id", user_id)):
            if value is not None:
                match[f"doc.{name}"] = value
        pipeline: list[Doc] = [
            {"$match": match},
            {"$group": {"_id": None, "total": {"$sum": "$doc.cost_usd"}}},
        ]
        try:
            found = await (await self._c("llm_calls").aggregate(pipeline)).to_list()
        except PyMongoError as exc:
            raise StoreError(f"MongoDB read failed: {exc}") from exc
        return float(found[0]["total"]) if found else 0.0

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
        if q.limit == 0:
            return []  # MongoDB reads limit 0 as "no limit"
        query: Doc = {"org_id": org_id, "seq": {"$gt": q.after_seq}}
        for field, value in (("runner_id", q.runner_id), ("session_id", q.session_id)):
            if value is not None:
                query[field] = value
        if q.types:
            query["type"] = {"$in": list(q.types)}
        if window := _window(q.since, q.until):
            query["time"] = window
        docs = await self._find("audit_events", query, [("seq", ASCENDING)], max(q.limit, 0))
        return [AuditRow(*(d[f] for f in AuditRow._fields)) for d in docs]

    async def audit_chain(
        self, org_id: str, *, after_seq: int = 0
    ) -> AsyncGenerator[list[ChainLink], None]:
        head, _ = await self.audit_head(org_id)

        def read(after: int) -> Awaitable[list[AuditRow]]:
            return self.audit_rows(org_id, after_seq=after, limit=_CHAIN_PAGE)

        async for page in links_of_rows(read, after_seq, head):
            yield page

    async def audit_head(self, org_id: str) -> tuple[int, str]:
        try:
            return await self._head(org_id)
        except PyMongoError as exc:
            raise StoreError(f"MongoDB read failed: {exc}") from exc

    async def list_checkpoints(self, org_id: str) -> list[AuditCheckpoint]:
        docs = await self._find("audit_checkpoints", {"org_id": org_id}, [("seq", ASCENDING)])
        return [AuditCheckpoint(**{**d, "time": datetime.fromisoformat(d["time"])}) for d in docs]

    async def get_object(self, kind: ObjectKind, object_id: str) -> dict[str, Any] | None:
        found = await self._one("objects", {"kind": kind, "id": object_id})
        return dict(found["doc"]) if found else None

    async def list_objects(self, kind: ObjectKind, org_id: str | None) -> list[dict[str, Any]]:
        query = {"kind": kind} if org_id is None else {"kind": kind, "org_id": org_id}
        return [dict(d["doc"]) for d in await self._find("objects", query, _BY_ID)]


    async def list_transcript(self, session_id: str) -> list[TranscriptEntry]:
        sort = [("created_at", ASCENDING), ("_id", ASCENDING)]
        docs = await self._find("transcripts", {"session_id": session_id}, sort)
        return [TranscriptEntry.model_validate(d["doc"]) for d in docs]


def _record(model: type[_M], found: Doc) -> _M:
    return model.model_validate({**found["doc"], _SPENT: found[_SPENT]})


def _window(since: datetime | None, until: datetime | None) -> Doc:
    """A range over canonical time strings: since inclusive, until exclusive."""
    window: Doc = {}
    if since is not None:
        window["$gte"] = format_time(since)
    if until is not None:
        window["$lt"] = format_time(until)
    return window


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}
