"""How the control plane's HTTP reaches an agent in an E2B sandbox.

A sandbox port is `https://{port}-{sandbox id}.{domain}`. With public traffic off (Paddock's
default) E2B wants the sandbox's traffic token in `e2b-traffic-access-token` on every request;
this transport adds it. With a `sandbox_url` (E2B's shared host, a self-hosted router, the fake)
it sends the request there instead, naming the sandbox and port in the `E2b-Sandbox-Id` and
`E2b-Sandbox-Port` headers, as the SDK does for envd.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set

import httpx

__all__ = ["AgentTransport"]

_HOST = re.compile(r"^(\d+)-([A-Za-z0-9]+)\.(.+)$")


class AgentTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, tokens: Mapping[str, str], domains: Set[str], sandbox_url: str | None
    ) -> None:
        """`tokens` (sandbox id -> traffic token) and `domains` are the backend's, live."""
        self._tokens = tokens
        self._domains = domains
        self._sandbox_url = sandbox_url.rstrip("/") if sandbox_url else None
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        match = _HOST.match(request.url.host)
        if match is None or match.group(3) not in self._domains:
            return await self._inner.handle_async_request(request)
        port, sandbox_id = match.group(1), match.group(2)
        headers = request.headers.copy()
        if token := self._tokens.get(sandbox_id):
            headers["e2b-traffic-access-token"] = token
        url = request.url
        if self._sandbox_url:
            url = httpx.URL(self._sandbox_url + request.url.raw_path.decode("ascii"))
            headers["Host"] = url.netloc.decode("ascii")
            headers["E2b-Sandbox-Id"] = sandbox_id
            headers["E2b-Sandbox-Port"] = port
        routed = httpx.Request(
            request.method,
            url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(routed)

    async def aclose(self) -> None:
        await self._inner.aclose()
