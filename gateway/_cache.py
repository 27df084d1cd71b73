"""The exact-match response cache: a port, its in-memory implementation, and the key.

key = SHA-256 over (org, API, provider, upstream model, normalized body): the org is part of
the key, so an answer is never served to another org, whatever the bodies. Normalized = the
body's JSON with sorted keys and no whitespace, without fields that do not shape the answer
(`user`, `metadata`, `store`). Stream and non-stream calls are distinct entries.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from ._usage import Usage

__all__ = ["CachedAnswer", "MemoryResponseCache", "ResponseCache", "cache_key"]

_IGNORED = frozenset({"user", "metadata", "store"})


@dataclass(frozen=True)
class CachedAnswer:
    body: bytes
    """What the client got: the JSON body, or the whole SSE stream."""
    content_type: str
    usage: Usage
    """What the original call used (recorded on a hit, at $0)."""


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, answer: CachedAnswer) -> None: ...


def cache_key(org_id: str, endpoint: str, provider: str, model: str, body: dict[str, Any]) -> str:
    kept = {k: v for k, v in body.items() if k not in _IGNORED and k != "model"}
    canonical = json.dumps(
        [org_id, endpoint, provider, model, kept],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class MemoryResponseCache:
    """LRU within `max_bytes`, entries expire after `ttl_s` seconds."""

    def __init__(self, *, max_bytes: int, ttl_s: float) -> None:
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self._ttl_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def put(self, key: str, answer: CachedAnswer) -> None:
        if len(answer.body) > self._max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic(), answer)
        self._bytes += len(answer.body)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, answer = self._entries.pop(key)
        self._bytes -= len(answer.body)
