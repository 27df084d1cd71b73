"""Transcript retention: entries older than their org's `retention_days` are deleted.
(Transcripts are not audit: the audit trail keeps only metadata and is never purged.)"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from paddock_core import PaddockError, PurgeTranscripts, Store, transcript_settings, utcnow

__all__ = ["purge_expired_transcripts", "purge_transcripts_periodically"]

logger = logging.getLogger(__name__)


async def purge_expired_transcripts(store: Store, now: datetime | None = None) -> int:
    """One pass over every org; returns how many orgs were purged."""
    now = now or utcnow()
    purged = 0
    for org in await store.list_objects("org", None):
        settings = await transcript_settings(store, org["id"])
        before = now - timedelta(days=settings.retention_days)
        try:
            await store.apply([PurgeTranscripts(org["id"], before)])
            purged += 1
        except PaddockError:
            logger.exception("purging the transcripts of org %s failed", org["id"])
    return purged


async def purge_transcripts_periodically(store: Store, interval_s: float) -> None:
    while True:
        await purge_expired_transcripts(store)
        await asyncio.sleep(interval_s)
