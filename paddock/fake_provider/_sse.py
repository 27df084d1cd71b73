"""A raw ASGI SSE response that can also break off mid-stream, as a dying provider does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["Cut", "SseResponse", "data", "event", "pause"]


class Cut(Exception):
    """Raised by an event generator to drop the connection where it stands."""


def data(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def event(name: str, body: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\n" + data({"type": name, **body})


async def pause(seconds: float) -> None:
    if seconds:
        await asyncio.sleep(seconds)


class SseResponse(Response):
    def __init__(self, events: AsyncIterator[bytes]) -> None:
        # Not Response.__init__: it would add a Content-Length for an empty body.
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.init_headers({"cache-control": "no-cache"})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        try:
            async for chunk in self._events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Cut:
            # Returning without the final body message: the server drops the connection, and
            # the client sees an incomplete chunked body, exactly like a provider dying.
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
