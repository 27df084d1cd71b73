"""HTTP to the providers. The only module that imports httpx; its errors stop here.

Every httpx failure leaves as `UpstreamError` (`raise ... from exc`), with a `reason` detail:
`upstream_timeout`, `upstream_unreachable` or `upstream_stream_broken`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from paddock_core import UpstreamError

from ._routing import Route
from ._settings import GatewaySettings

__all__ = ["Proxy", "UpstreamReply", "UpstreamStream"]

logger = logging.getLogger(__name__)

# An error body is read whole before answering; anything longer is not an error message.
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class UpstreamReply:
    """A complete upstream answer: a non-stream completion, or any non-2xx answer."""

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

    def __init__(self, response: httpx.Response, provider: str) -> None:
        self._response = response
        self._provider = provider
        self._chunks = self._read()
        self.status = response.status_code
        self.content_type = response.headers.get("content-type", "text/event-stream")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def _read(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"provider {self._provider!r} broke off the stream ({type(exc).__name__})",
                reason="upstream_stream_broken",
            ) from exc

    async def aclose(self) -> None:
        # Shielded: this may run while our task is being cancelled (server shutdown), and an
        # interrupted close would leave the pooled connection half-read.
        with anyio.CancelScope(shield=True):
            await self._chunks.aclose()
            await self._response.aclose()


def _translate(exc: Exception, provider: str) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(
            f"provider {provider!r} timed out ({type(exc).__name__})", reason="upstream_timeout"
        )
    return UpstreamError(
        f"cannot reach provider {provider!r} ({type(exc).__name__}: {exc})",
        reason="upstream_unreachable",
    )


class Proxy:
    """Sends chat completions upstream over one pooled client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    def open(
        cls, settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> Proxy:
        timeout = httpx.Timeout(settings.upstream_timeout_s, connect=settings.connect_timeout_s)
        # trust_env=False: where provider traffic goes is configuration (provider_base_urls),
        # never an ambient HTTP_PROXY.
        client = httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False)
        return cls(client)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _request(self, route: Route, body: dict[str, Any]) -> httpx.Request:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if body.get("stream") else "application/json",
            **route.upstream.auth_headers(),
        }
        url = f"{route.upstream.base_url}/chat/completions"
        return self._client.build_request("POST", url, content=json.dumps(body), headers=headers)

    async def complete(self, route: Route, body: dict[str, Any]) -> UpstreamReply:
        """Send a non-stream request and read the whole answer."""
        provider = route.upstream.spec.name
        try:
            response = await self._client.send(self._request(route, body))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _translate(exc, provider) from exc
        return UpstreamReply(
            status=response.status_code,
            body=response.content,
            content_type=response.headers.get("content-type", "application/json"),
            retry_after=response.headers.get("retry-after"),
        )

    async def open_stream(
        self, route: Route, body: dict[str, Any]
    ) -> UpstreamStream | UpstreamReply:
        """Send a stream request. A 2xx answer comes back unread, anything else read whole."""
        provider = route.upstream.spec.name
        try:
            response = await self._client.send(self._request(route, body), stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _translate(exc, provider) from exc
        if 200 <= response.status_code < 300:
            return UpstreamStream(response, provider)
        try:
            body_bytes = b""
            async for chunk in response.aiter_bytes():
                body_bytes += chunk
                if len(body_bytes) > _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError as exc:
            # The status is the answer; a truncated error body only loses its message.
            logger.debug("error body from %r cut short: %s", provider, type(exc).__name__)
        finally:
            await response.aclose()
        return UpstreamReply(
            status=response.status_code,
            body=body_bytes[:_MAX_ERROR_BODY],
            content_type=response.headers.get("content-type", "application/json"),
            retry_after=response.headers.get("retry-after"),
        )
