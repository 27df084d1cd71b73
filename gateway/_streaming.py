"""Relaying a provider's SSE stream to the client as it arrives, metering it on the way.

The relay is a raw ASGI response rather than Starlette's `StreamingResponse` because it must run
its end-of-stream bookkeeping however the stream ends (finished, upstream broke off, client went
away and the task is being cancelled), and must stop reading upstream as soon as the client has
gone, so that nobody pays for tokens nobody reads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio
from anyio import CancelScope
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from paddock_core import UpstreamError

from ._costs import Usage, reply_text_chars, usage_from
from ._proxy import UpstreamStream

__all__ = ["CLIENT_GONE_STATUS", "SseMeter", "SseRelay", "StreamEnd"]

logger = logging.getLogger(__name__)

CLIENT_GONE_STATUS = 499
"""Recorded status of a stream the client abandoned (nginx's "client closed request")."""

# One SSE line longer than this is not a chat chunk; it is skipped rather than buffered.
_MAX_LINE = 1024 * 1024


class SseMeter:
    """Watches an OpenAI-style SSE stream go by and keeps only what costing needs: the last
    `usage` reported and the number of characters of generated text (never the text)."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._skipping = False
        self.usage: Usage | None = None
        self.completion_chars = 0
        self.done = False
        """True once `data: [DONE]` went by: the provider has said everything it will say."""

    def feed(self, data: bytes) -> None:
        self._pending += data
        while (end := self._pending.find(b"\n")) >= 0:
            line = bytes(self._pending[:end])
            del self._pending[: end + 1]
            if self._skipping:
                self._skipping = False
            else:
                self._line(line)
        if len(self._pending) > _MAX_LINE:
            self._pending.clear()
            self._skipping = True

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
        if not payload or self.done:
            return
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if (usage := usage_from(event.get("usage"))) is not None:
            self.usage = usage
        choices = event.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                self.completion_chars += reply_text_chars(choice.get("delta"))


@dataclass(frozen=True)
class StreamEnd:
    status: int
    """The upstream's status if the stream finished, 502 if upstream broke off,
    `CLIENT_GONE_STATUS` if the client went away first."""
    usage: Usage | None
    """As the provider reported it; None when the stream ended before its usage chunk."""
    completion_chars: int


OnStreamEnd = Callable[[StreamEnd], Awaitable[None]]


def _sse_error(exc: UpstreamError) -> bytes:
    # OpenAI SDKs raise on a `data:` event holding an `error` object, so the client learns the
    # stream failed instead of taking the truncated text for the whole answer.
    error = {"message": exc.message, "type": "upstream_error", "code": exc.details.get("reason")}
    return b"data: " + json.dumps({"error": {**error, "param": None}}).encode() + b"\n\n"


class SseRelay(Response):
    """Streams `upstream` to the client; awaits `on_end` exactly once, however it ends."""

    def __init__(
        self, upstream: UpstreamStream, *, on_end: OnStreamEnd, headers: Mapping[str, str]
    ) -> None:
        # Not Response.__init__: it would add a Content-Length for an empty body.
        self.status_code = upstream.status
        self.media_type = upstream.content_type
        self.background = None
        self.init_headers({"cache-control": "no-cache", **headers})
        self._upstream = upstream
        self._on_end = on_end
        self._meter = SseMeter()
        self._relayed_all = False
        self._upstream_failed = False
        self._ended = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_disconnect, receive, tasks.cancel_scope)
                await self._relay(send)
                tasks.cancel_scope.cancel()
        finally:
            # Shielded: when the server cancels this task (shutdown; servers that cancel on
            # disconnect) the bookkeeping, closing upstream and recording the call, must still
            # complete.
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
                await self._end()

    async def _end(self) -> None:
        """Run the end-of-stream bookkeeping once."""
        if self._ended:
            return
        self._ended = True
        end = StreamEnd(self._end_status(), self._meter.usage, self._meter.completion_chars)
        try:
            await self._on_end(end)
        except Exception:
            # The bytes are already with the client; all that is left is to say so loudly.
            logger.exception("could not record the end of a stream")

    def _end_status(self) -> int:
        if self._upstream_failed:
            return 502
        # A client that hangs up right after `[DONE]` (OpenAI SDKs do) has had the whole answer.
        if self._relayed_all or self._meter.done:
            return self.status_code
        return CLIENT_GONE_STATUS

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def _relay(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            try:
                async for chunk in self._upstream:
                    self._meter.feed(chunk)
                    if self._meter.done:
                        # Record before `[DONE]` reaches the client: whoever saw the end of the
                        # answer can read its cost (agents' callers check spend right after).
                        # Shielded: a disconnect now must not cancel the store write half-way
                        # (that would leave the shared connection inside a transaction).
                        with anyio.CancelScope(shield=True):
                            await self._end()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._relayed_all = True
            except UpstreamError as exc:
                logger.warning("%s", exc.message)
                self._upstream_failed = True
                error = _sse_error(exc)
                await send({"type": "http.response.body", "body": error, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            # Servers speaking ASGI spec 2.4 report a gone client by raising from `send`.
            logger.debug("client went away mid-stream")
