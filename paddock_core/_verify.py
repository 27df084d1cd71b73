"""Verifying an org's chain: where it is stored (the one loop behind the control plane's
`GET /v1/audit/verify`, so `paddock audit verify`, and bench/audit), and in an exported file
(`paddock audit verify --file`).

An export line is the record's canonical encoding (keys sorted, compact: what its hash covers,
see paddock_core._audit) with `"hash"` added as the last key. It is a JSON object like any
other, and a verifier finds the hashed bytes in it without parsing it: everything before
`,"hash":` plus the closing brace. Lines in another shape (an older export, a hand edit) are
parsed and encoded again, which gives the same verdict, slower."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from ._audit import AuditRow, ChainLink, ChainVerifier
from ._store import Store

__all__ = ["ExportCheck", "export_line", "verify_export", "verify_stored_chain"]

_HASH_KEY = b',"hash":"'

logger = logging.getLogger(__name__)


async def verify_stored_chain(
    store: Store, org_id: str, *, hashes_at: Container[int] = ()
) -> tuple[ChainVerifier, dict[int, str]]:
    """The verifier after the org's whole chain (it stops at the first break), and the hashes
    found at the seqs of `hashes_at` (the signed checkpoints, to compare)."""
    verifier = ChainVerifier()
    seen: dict[int, str] = {}
    async with contextlib.aclosing(store.audit_chain(org_id)) as pages:
        async for page in pages:
            for seq, prev_hash, hash_, canonical in page:
                if not verifier.feed_link(seq, prev_hash, hash_, canonical):
                    if not await _recheck(store, org_id, verifier, seq):
                        return verifier, seen
                if seq in hashes_at:
                    seen[seq] = hash_
    return verifier, seen


async def _recheck(store: Store, org_id: str, verifier: ChainVerifier, seq: int) -> bool:
    """A hash mismatch on bytes the store built is confirmed with the reference encoding."""
    if verifier.broken is None or verifier.broken[1] != "hash_mismatch":
        return False
    rows = await store.audit_rows(org_id, after_seq=seq - 1, limit=1)
    if rows and rows[0].seq == seq and verifier.recheck(rows[0]):
        logger.warning("audit %s seq %d: store encoding differs from the reference", org_id, seq)
        return True
    return False


def export_line(link: ChainLink) -> bytes:
    """One record as an export line (no newline): its canonical bytes with `hash` last."""
    _, _, hash_, canonical = link
    return canonical[:-1] + _HASH_KEY + hash_.encode() + b'"}'


def _fast_link(line: bytes) -> ChainLink | None:
    """The link an export line in `export_line`'s shape carries, found without parsing it
    (None: another shape). In canonical JSON a quote inside a string is escaped, so the last
    `,"prev_hash":"` and `,"seq":` are the record's own keys: only strings follow them."""
    at = line.rfind(_HASH_KEY)
    if not line.startswith(b'{"actor":') or at < 0 or len(line) != at + len(_HASH_KEY) + 66:
        return None
    canonical = line[:at] + b"}"
    prev = canonical.rfind(b',"prev_hash":"')
    seq_at = canonical.rfind(b',"seq":')
    seq_end = canonical.find(b",", seq_at + 7)
    try:
        seq = int(canonical[seq_at + 7 : seq_end])
        prev_hash = canonical[prev + 14 : prev + 78].decode("ascii")
        hash_ = line[at + len(_HASH_KEY) : -2].decode("ascii")
    except ValueError:
        return None
    if prev < 0 or seq_at < 0:
        return None
    return seq, prev_hash, hash_, canonical


@dataclass
class ExportCheck:
    verifier: ChainVerifier = field(default_factory=ChainVerifier)
    hashes: dict[int, str] = field(default_factory=dict)
    """The hash at each seq checked (to compare with signed checkpoints)."""
    org_id: str = ""


def verify_export(lines: Iterable[bytes]) -> ExportCheck:
    """Verify an exported chain, line by line, stopping at the first break. A line that is
    not an audit event raises ValueError naming its number."""
    out = ExportCheck()
    verifier = out.verifier
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if not out.org_id:
            out.org_id = _row(line, number).org_id
        fast = _fast_link(line)
        if fast is not None and verifier.feed_link(*fast):
            out.hashes[fast[0]] = fast[2]
            continue
        if fast is not None and (verifier.broken is None or verifier.broken[1] != "hash_mismatch"):
            break  # out of order, missing or unlinked: no encoding changes that
        row = _row(line, number)
        if not (verifier.feed(row) if fast is None else verifier.recheck(row)):
            break
        out.hashes[row.seq] = row.hash
    return out


def _row(line: bytes, number: int) -> AuditRow:
    try:
        return AuditRow.from_json(json.loads(line))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"line {number}: not an audit event: {exc}") from exc
