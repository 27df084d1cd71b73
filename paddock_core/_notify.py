"""Wake-ups for followers of the audit trail.

The store is the source of truth: a follower always reads the events after the last seq it
delivered, so nothing is lost or duplicated. A notifier only makes it read *now* instead of at
its next poll. `LocalNotifier` wakes followers in this process; `RedisNotifier` also publishes
to Redis, so an event appended by one process wakes followers in every other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from ._store import BatchResult, Operation, Store

__all__ = ["LocalNotifier", "Notifier", "NotifyingStore", "RedisNotifier", "make_notifier"]

logger = logging.getLogger(__name__)

_CHANNEL_PREFIX = "paddock:audit:"


class Notifier(Protocol):
    async def publish(self, org_id: str, head_seq: int) -> None: ...

    def listen(self, org_id: str) -> contextlib.AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever `org_id`'s chain grows; clear it before re-reading."""
        ...

    async def close(self) -> None: ...


class LocalNotifier:
    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Event]] = defaultdict(set)

    def wake(self, org_id: str) -> None:
        for event in self._listeners.get(org_id, ()):
            event.set()

    async def publish(self, org_id: str, head_seq: int) -> None:  # noqa: ARG002 (seq unused)
        self.wake(org_id)

    @contextlib.asynccontextmanager
    async def listen(self, org_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._listeners[org_id].add(event)
        try:
            yield event
        finally:
            self._listeners[org_id].discard(event)
            if not self._listeners[org_id]:
                del self._listeners[org_id]

    async def close(self) -> None:
        self._listeners.clear()


class RedisNotifier(LocalNotifier):
    """Publishes to `paddock:audit:<org>`; one pattern subscription per process fans out."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.from_url(url)
        self._task: asyncio.Task[None] | None = None

    async def publish(self, org_id: str, head_seq: int) -> None:
        self.wake(org_id)
        try:
            await self._redis.publish(f"{_CHANNEL_PREFIX}{org_id}", str(head_seq))
        except Exception as exc:  # followers still catch up at their next poll
            logger.warning("could not publish an audit wake-up to Redis: %s", exc)

    @contextlib.asynccontextmanager
    async def listen(self, org_id: str) -> AsyncIterator[asyncio.Event]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._subscribe())
        async with super().listen(org_id) as event:
            yield event

    async def _subscribe(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.psubscribe(f"{_CHANNEL_PREFIX}*")
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    self.wake(channel.removeprefix(_CHANNEL_PREFIX))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Redis audit subscription lost (%s); retrying in 1 s", exc)
                await asyncio.sleep(1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._redis.aclose()
        await super().close()


def make_notifier(redis_url: str | None) -> Notifier:
    return RedisNotifier(redis_url) if redis_url else LocalNotifier()


class NotifyingStore:
    """A Store that tells a notifier about every audit event it commits."""

    def __init__(self, inner: Store, notifier: Notifier) -> None:
        self._inner = inner
        self._notifier = notifier

    async def apply(self, ops: Sequence[Operation]) -> BatchResult:
        result = await self._inner.apply(ops)
        heads: dict[str, int] = {}
        for event in result.events:
            heads[event.org_id] = max(heads.get(event.org_id, 0), event.seq)
        for org_id, seq in heads.items():
            await self._notifier.publish(org_id, seq)
        return result

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        attr: Callable[..., Awaitable[Any]] = getattr(self._inner, name)
        return attr
