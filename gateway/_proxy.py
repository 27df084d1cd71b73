"""Requests to the providers: URL, headers (the gateway's key, never the caller's), JSON body,
over an `UpstreamTransport`; answers read whole, or left open for the stream relay."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from paddock_core import UpstreamError

from ._routing import Upstream
from ._transport import RawResponse, UpstreamTransport

__all__ = ["Proxy", "UpstreamReply", "UpstreamStream"]

logger = logging.getLogger(__name__)

# An error body is read whole before answering; anything longer is not an error message.
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class UpstreamReply:
    """A complete upstream answer: a non-stream answer, or any non-2xx answer."""

    status: int
    body: bytes
    content_type: str
    retry_after: str | None = None
    """The provider's Retry-After header, worth passing on with a 429 or 503."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class UpstreamStream:
    """A 2xx streaming answer being read. Iterate for body bytes; `aclose()` exactly once."""

    def __init__(self, response: RawResponse) -> None:
        self._response = response
        self._chunks = self._read()
        self.status = response.status
        self.content_type = response.headers.get("content-type", "text/event-stream")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def _read(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._response.chunks():
            yield chunk

    async def aclose(self) -> None:
        # Shielded: this may run while our task is being cancelled (server shutdown), and an
        # interrupted close would leave the pooled connection half-read.
        with anyio.CancelScope(shield=True):
            await self._chunks.aclose()
            await self._response.aclose()


def _reply(response: RawResponse, body: bytes) -> UpstreamReply:
    return UpstreamReply(
        status=response.status,
        body=body,
        content_type=response.headers.get("content-type", "application/json"),
        retry_after=response.headers.get("retry-after"),
    )


class Proxy:
    def __init__(self, transport: UpstreamTransport) -> None:
        self._transport = transport

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _send(
        self,
        upstream: Upstream,
        path: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        stream: bool,
    ) -> RawResponse:
        sent = {
            **headers,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            **upstream.auth_headers(),
        }
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        url = upstream.base_url + path
        return await self._transport.send(upstream.spec.name, url, sent, content, stream=stream)

    async def complete(
        self, upstream: Upstream, path: str, body: dict[str, Any], headers: Mapping[str, str]
    ) -> UpstreamReply:
        """Send a non-stream request and read the whole answer."""
        response = await self._send(upstream, path, body, headers, stream=False)
        try:
            return _reply(response, await response.read())
        finally:
            await response.aclose()

    async def open_stream(
        self, upstream: Upstream, path: str, body: dict[str, Any], headers: Mapping[str, str]
    ) -> UpstreamStream | UpstreamReply:
        """Send a stream request. A 2xx answer comes back unread, anything else read whole."""
        response = await self._send(upstream, path, body, headers, stream=True)
        if 200 <= response.status < 300:
            return UpstreamStream(response)
        try:
            body_bytes = await response.read(_MAX_ERROR_BODY)
        except UpstreamError as exc:
            # The status is the answer; a truncated error body only loses its message.
            logger.debug("error body from %r cut short: %s", upstream.spec.name, exc.message)
            body_bytes = b""
        finally:
            await response.aclose()
        return _reply(response, body_bytes)
