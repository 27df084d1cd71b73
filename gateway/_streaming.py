"""Relaying a provider's SSE stream to the client as it arrives, metering it on the way.

The relay is a raw ASGI response rather than Starlette's `StreamingResponse` because it must run
its end-of-stream bookkeeping however the stream ends (finished, upstream broke off, client went
away and the task is being cancelled), and must stop reading upstream as soon as the client has
gone, so that nobody pays for tokens nobody reads.

Each upstream chunk goes to the client as soon as it arrives (translated event by event when the
protocols differ); nothing is held back. While the first token is slow to come, SSE comments
(`: keepalive`) keep idle-timeouts of clients and proxies from cutting the stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio
from anyio import CancelScope
from anyio.abc import TaskGroup
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from paddock_core import UpstreamError

from ._metrics import GatewayMetrics
from ._proxy import UpstreamStream
from ._usage import Usage
from .providers import StreamHandler

__all__ = ["CLIENT_GONE_STATUS", "KEEPALIVE", "SseRelay", "StreamEnd"]

logger = logging.getLogger(__name__)

CLIENT_GONE_STATUS = 499
"""Recorded status of a stream the client abandoned (nginx's "client closed request")."""
KEEPALIVE = b": keepalive\n\n"


@dataclass(frozen=True)
class StreamEnd:
    status: int
    """The upstream's status if the stream finished, 502 if upstream broke off,
    `CLIENT_GONE_STATUS` if the client went away first."""
    usage: Usage | None
    """As the provider reported it; None when the stream ended before its usage."""
    started: Usage | None
    """Input counts the provider told before answering (Anthropic), if any."""
    completion_chars: int
    captured: bytes | None
    """Every byte the client got, when the stream completed and capture was asked for."""


OnStreamEnd = Callable[[StreamEnd], Awaitable[None]]


class SseRelay(Response):
    """Streams `upstream` to the client through `handler`; awaits `on_end` exactly once."""

    def __init__(
        self,
        upstream: UpstreamStream,
        *,
        handler: StreamHandler,
        on_end: OnStreamEnd,
        error_event: Callable[[UpstreamError], bytes],
        headers: Mapping[str, str],
        keepalive_s: float,
        capture_limit: int | None,
        metrics: GatewayMetrics,
    ) -> None:
        # Not Response.__init__: it would add a Content-Length for an empty body.
        self.status_code = upstream.status
        self.media_type = "text/event-stream"
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **headers})
        self._upstream = upstream
        self._handler = handler
        self._on_end = on_end
        self._error_event = error_event
        self._keepalive_s = keepalive_s
        self._capture: bytearray | None = bytearray() if capture_limit else None
        self._capture_limit = capture_limit or 0
        self._metrics = metrics
        self._relayed_all = False
        self._upstream_failed = False
        self._ended = False
        self._waiting = False
        self._last_sent = 0.0
        self._send_lock = anyio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
        self._metrics.active_streams.inc()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_disconnect, receive, tasks.cancel_scope)
                await self._relay(send, tasks)
                tasks.cancel_scope.cancel()
        finally:
            # Shielded: when the server cancels this task (shutdown; servers that cancel on
            # disconnect) the bookkeeping, closing upstream and recording the call, must still
            # complete.
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
                await self._end()
            self._metrics.active_streams.dec()

    async def _end(self) -> None:
        """Run the end-of-stream bookkeeping once."""
        if self._ended:
            return
        self._ended = True
        meter = self._handler.meter
        status = self._end_status()
        captured = None
        if self._capture is not None and status == 200 and meter.done:
            captured = bytes(self._capture)
        end = StreamEnd(status, meter.usage, meter.started, meter.completion_chars, captured)
        try:
            await self._on_end(end)
        except Exception:
            # The bytes are already with the client; all that is left is to say so loudly.
            logger.exception("could not record the end of a stream")

    def _end_status(self) -> int:
        if self._upstream_failed:
            return 502
        # A client that hangs up right after `[DONE]` (OpenAI SDKs do) has had the whole answer.
        if self._relayed_all or self._handler.meter.done:
            return self.status_code
        return CLIENT_GONE_STATUS

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def _keepalive(self, send: Send) -> None:
        """Send a comment whenever upstream has been silent for `keepalive_s` (a slow first
        token, a long think). Runs beside the relay; never between two halves of a chunk."""
        while True:
            await anyio.sleep(max(self._last_sent + self._keepalive_s - time.monotonic(), 0.001))
            if self._waiting and time.monotonic() - self._last_sent >= self._keepalive_s:
                async with self._send_lock:
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    self._last_sent = time.monotonic()

    async def _send(self, send: Send, body: bytes, *, more: bool = True) -> None:
        async with self._send_lock:
            await send({"type": "http.response.body", "body": body, "more_body": more})
            self._last_sent = time.monotonic()

    async def _forward(self, chunk: bytes, send: Send) -> None:
        out = self._handler.feed(chunk)
        if self._capture is not None:
            self._capture += out
            if len(self._capture) > self._capture_limit:
                self._capture = None
        if self._handler.meter.done and not self._ended:
            # Record before the end reaches the client: whoever saw the end of the answer can
            # read its cost (agents' callers check spend right after). Shielded: a disconnect
            # now must not cancel the store write half-way.
            with anyio.CancelScope(shield=True):
                await self._end()
        if out:
            await self._send(send, out)

    async def _relay(self, send: Send, tasks: TaskGroup) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            self._last_sent = time.monotonic()
            tasks.start_soon(self._keepalive, send)
            chunks = aiter(self._upstream)
            try:
                while True:
                    self._waiting = True
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    finally:
                        self._waiting = False
                    await self._forward(chunk, send)
                self._relayed_all = True
                if tail := self._handler.finish():
                    await self._send(send, tail)
            except UpstreamError as exc:
                logger.warning("%s", exc.message)
                self._upstream_failed = True
                await self._send(send, self._error_event(exc))
            await self._send(send, b"", more=False)
        except OSError:
            # Servers speaking ASGI spec 2.4 report a gone client by raising from `send`.
            logger.debug("client went away mid-stream")
