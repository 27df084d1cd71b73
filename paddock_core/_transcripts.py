"""Session transcripts: what an org chose to keep, and how one entry is made.

An org stores the text of its sessions only when it opts in (`transcript_content` on its
`org_gateway` record; off by default): otherwise each entry keeps only metadata (kind, role,
size). Stored text is redacted first, by the same PII scanner as the governance chain (the
`Redactor` each server passes in), so a transcript never holds a value the chain would have
blocked or redacted. Entries older than the org's retention are purged by the control plane.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._records import TranscriptEntry, new_id
from ._store import Store

__all__ = ["Redactor", "TranscriptSettings", "make_entry", "transcript_settings"]

Redactor = Callable[[str], tuple[str, list[str]]]
"""text -> (the text with PII replaced, the PII types found)."""

DEFAULT_RETENTION_DAYS = 30
_MARKER = re.compile(r"\[REDACTED:([a-z0-9_]+)\]")


@dataclass(frozen=True)
class TranscriptSettings:
    content: bool = False
    """Keep the text (redacted); False: metadata only."""
    retention_days: int = DEFAULT_RETENTION_DAYS


def settings_of(doc: Mapping[str, Any] | None) -> TranscriptSettings:
    if not doc:
        return TranscriptSettings()
    days = doc.get("transcript_retention_days")
    return TranscriptSettings(
        content=bool(doc.get("transcript_content")),
        retention_days=days if isinstance(days, int) and days > 0 else DEFAULT_RETENTION_DAYS,
    )


async def transcript_settings(store: Store, org_id: str) -> TranscriptSettings:
    return settings_of(await store.get_object("org_gateway", org_id))


def make_entry(
    *,
    org_id: str,
    session_id: str,
    runner_id: str | None,
    kind: str,
    role: str,
    source: str,
    text: str | None,
    keep: bool,
    redact: Redactor,
    data: Mapping[str, Any] | None = None,
    chars: int | None = None,
) -> TranscriptEntry:
    """One entry: the redacted text when `keep`, else only its size. `text` None: the text
    was not seen (a stream too long to keep), only its size `chars`."""
    stored: str | None = None
    found: list[str] = []
    if keep and text is not None:
        stored, found = redact(text)
        # The gateway's chain may have redacted the text already (PII step in `redact` mode).
        found += _MARKER.findall(stored)
    return TranscriptEntry(
        id=new_id("tr"),
        org_id=org_id,
        session_id=session_id,
        runner_id=runner_id,
        kind=kind,
        role=role,
        source=source,
        text=stored,
        chars=len(text) if text is not None else chars or 0,
        data=dict(data or {}),
        redacted=sorted(set(found)),
    )
