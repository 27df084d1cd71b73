"""Hash chaining of audit events, and its verification.

hash = SHA-256 of the event's canonical encoding: the compact, key-sorted JSON of
{actor, data, org_id, prev_hash, runner_id, seq, session_id, time, type}, where `time` is always
`YYYY-MM-DDTHH:MM:SS.ffffffZ` and `data` is itself canonical JSON. Stores keep `data` as exactly
that text, so a chain can be verified from raw rows without parsing them (fast), and an exported
JSONL file can be verified offline by anyone with this description.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from ._records import AuditEvent

__all__ = [
    "GENESIS_HASH",
    "AuditRow",
    "ChainLink",
    "ChainVerifier",
    "VerifyReport",
    "canonical_bytes",
    "canonical_data",
    "chain_hash",
    "chain_links",
    "links_of_rows",
    "format_time",
    "link",
    "verify_chain",
]

GENESIS_HASH = "0" * 64

# Stateless and reused: the same output as json.dumps with these arguments, without building an
# encoder per call (the chain encodes every event on append and on every verification).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_time(t: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC (a naive `t` is taken as local time)."""
    utc = t if t.tzinfo is UTC else t.astimezone(UTC)
    if utc.year < 1000:  # strftime does not zero-pad such years; keep its exact output
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def canonical_data(data: dict[str, Any]) -> str:
    return _CANONICAL_JSON.encode(data)


def _s(value: str | None) -> str:
    """Exactly json.dumps(value, ensure_ascii=False); a fraction of its cost for a str or None."""
    if isinstance(value, str):
        return encode_basestring(value)
    # None, or whatever a tampered row or export holds: it must fail to match, not crash.
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _encode(
    org_id: str,
    seq: int,
    time: str,
    actor: str,
    type_: str,
    runner_id: str | None,
    session_id: str | None,
    data: str,
    prev_hash: str,
) -> bytes:
    return (
        f'{{"actor":{_s(actor)},"data":{data},"org_id":{_s(org_id)},"prev_hash":{_s(prev_hash)},'
        f'"runner_id":{_s(runner_id)},"seq":{seq},"session_id":{_s(session_id)},'
        f'"time":{_s(time)},"type":{_s(type_)}}}'
    ).encode()


def canonical_bytes(event: AuditEvent) -> bytes:
    return _encode(
        event.org_id,
        event.seq,
        format_time(event.time),
        event.actor,
        event.type,
        event.runner_id,
        event.session_id,
        canonical_data(event.data),
        event.prev_hash,
    )


def chain_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


def link(event: AuditEvent, seq: int, prev_hash: str) -> tuple[AuditEvent, AuditRow]:
    """`event` chained as number `seq` after `prev_hash`: the linked event and its stored row.

    Each field is encoded once, for both the hash and the row a store writes.
    """
    time, data = format_time(event.time), canonical_data(event.data)
    org_id, actor, type_ = event.org_id, event.actor, event.type
    runner_id, session_id = event.runner_id, event.session_id
    digest = hashlib.sha256(
        _encode(org_id, seq, time, actor, type_, runner_id, session_id, data, prev_hash)
    ).hexdigest()
    linked = event.model_copy(update={"seq": seq, "prev_hash": prev_hash, "hash": digest})
    row = AuditRow(org_id, seq, time, actor, type_, runner_id, session_id, data, prev_hash, digest)
    return linked, row


ChainLink = tuple[int, str, str, bytes]
"""(seq, prev_hash, hash, the canonical bytes the hash covers): one record as verification
reads it. A store may build the bytes itself (SQLite does, in SQL); `ChainVerifier.recheck`
confirms a mismatch with this module's own encoding before it counts as a break."""


def chain_links(rows: Iterable[AuditRow]) -> list[ChainLink]:
    """Rows as verification reads them, encoded here."""
    return [(r.seq, r.prev_hash, r.hash, _encode(*r[:9])) for r in rows]


async def links_of_rows(
    read: Callable[[int], Awaitable[list[AuditRow]]], after_seq: int, head: int
) -> AsyncGenerator[list[ChainLink], None]:
    """`audit_chain` for a store that reads whole rows (`read(after_seq)`: the next page)."""
    while after_seq < head:
        rows = [r for r in await read(after_seq) if r.seq <= head]
        if not rows:
            return
        yield chain_links(rows)
        after_seq = rows[-1].seq


class AuditRow(NamedTuple):
    """An event as a store holds it: `time` formatted, `data` as canonical JSON text."""

    org_id: str
    seq: int
    time: str
    actor: str
    type: str
    runner_id: str | None
    session_id: str | None
    data: str
    prev_hash: str
    hash: str

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> AuditRow:
        """A row from one line of an export (`data` as an object)."""
        return cls(
            obj["org_id"],
            int(obj["seq"]),
            obj["time"],
            obj["actor"],
            obj["type"],
            obj.get("runner_id"),
            obj.get("session_id"),
            canonical_data(obj["data"]),
            obj["prev_hash"],
            obj["hash"],
        )

    @classmethod
    def of(cls, event: AuditEvent) -> AuditRow:
        return cls(
            event.org_id,
            event.seq,
            format_time(event.time),
            event.actor,
            event.type,
            event.runner_id,
            event.session_id,
            canonical_data(event.data),
            event.prev_hash,
            event.hash,
        )

    def to_event(self) -> AuditEvent:
        return AuditEvent(
            org_id=self.org_id,
            seq=self.seq,
            time=datetime.fromisoformat(self.time),
            actor=self.actor,
            type=self.type,
            runner_id=self.runner_id,
            session_id=self.session_id,
            data=json.loads(self.data),
            prev_hash=self.prev_hash,
            hash=self.hash,
        )


@dataclass(frozen=True)
class VerifyReport:
    """`problem` names what broke at `first_broken_seq`:
    hash_mismatch (the record was edited), missing_record (records before it were deleted),
    out_of_order (reordered or duplicated), broken_link (inserted or removed before it),
    checkpoint_mismatch (the chain differs from a signed checkpoint)."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None = None
    problem: str | None = None
    detail: str | None = None


class ChainVerifier:
    """Feed rows in stored order; it remembers the first break."""

    def __init__(self) -> None:
        self.checked = 0
        self.head_seq = 0
        self.head_hash = GENESIS_HASH
        self.broken: tuple[int, str, str] | None = None

    def feed(self, row: AuditRow) -> bool:
        """False once the chain is broken (further rows are not checked)."""
        return self.feed_link(row.seq, row.prev_hash, row.hash, _encode(*row[:9]))

    def feed_link(self, seq: int, prev_hash: str, hash_: str, canonical: bytes) -> bool:
        """`feed`, for a record whose canonical bytes are already built (`ChainLink`)."""
        if self.broken is not None:
            return False
        expected = self.head_seq + 1
        if seq != expected:
            problem = "missing_record" if seq > expected else "out_of_order"
            self.broken = (expected, problem, f"found seq {seq} where {expected} belongs")
            return False
        if prev_hash != self.head_hash:
            self.broken = (seq, "broken_link", "prev_hash does not match the record before")
            return False
        if hashlib.sha256(canonical).hexdigest() != hash_:
            self.broken = (seq, "hash_mismatch", "the record's content does not match its hash")
            return False
        self.checked += 1
        self.head_seq, self.head_hash = seq, hash_
        return True

    def recheck(self, row: AuditRow) -> bool:
        """After a `hash_mismatch` found on bytes a store built: check `row` (the same record)
        with this module's encoding, the reference. True when it holds after all (the chain
        goes on); False when the break stands."""
        if self.broken is None or self.broken[:2] != (row.seq, "hash_mismatch"):
            return False
        self.broken = None
        return self.feed(row)

    def report(self) -> VerifyReport:
        if self.broken is None:
            return VerifyReport(True, self.checked, self.head_seq, self.head_hash)
        seq, problem, detail = self.broken
        return VerifyReport(
            False, self.checked, self.head_seq, self.head_hash, seq, problem, detail
        )


def verify_chain(events: Iterable[AuditEvent]) -> tuple[int, int | None]:
    """Check a chain in seq order: (records checked, seq of the first broken record or None)."""
    verifier = ChainVerifier()
    for event in events:
        if not verifier.feed(AuditRow.of(event)):
            break
    report = verifier.report()
    return report.checked, report.first_broken_seq
