"""Hash chaining of audit events.

hash = SHA-256(canonical encoding of the event without `hash`); `prev_hash` links the chain.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._records import AuditEvent

__all__ = ["GENESIS_HASH", "canonical_bytes", "chain_hash", "verify_chain"]

GENESIS_HASH = "0" * 64


def canonical_bytes(event: AuditEvent) -> bytes:
    body: dict[str, Any] = event.model_dump(mode="json", exclude={"hash"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


def verify_chain(events: list[AuditEvent]) -> tuple[int, int | None]:
    """Check a chain in seq order: (records checked, seq of the first broken record or None)."""
    prev = GENESIS_HASH
    expected_seq = events[0].seq if events else 1
    for checked, event in enumerate(events):
        if event.seq != expected_seq or event.prev_hash != prev or chain_hash(event) != event.hash:
            return checked, event.seq
        prev = event.hash
        expected_seq += 1
    return len(events), None
