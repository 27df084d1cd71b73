"""The fake's egress: what E2B's network layer does to a sandbox's outbound HTTP.

A VM reaches the fake's "internet" only here (its names resolve to this listener through
the VM's /etc/hosts). Per request, as E2B does per connection: the source address names the
sandbox; the Host is checked against its `allowOut` / `denyOut` (and `allow_internet_access`);
the transform headers of its `rules` for that host replace the request's own; then the request
goes to the loopback upstream the fake maps that name to. Plain HTTP only (no CONNECT): the
head is rewritten, the rest is piped as bytes, and the connection closes after one exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["EgressDecision", "EgressListener"]

logger = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class EgressDecision:
    """`upstream` (host:port on loopback) when allowed; else `refusal` says why."""

    upstream: tuple[str, int] | None
    headers: dict[str, str]
    refusal: str = ""


Decide = Callable[[str, str], EgressDecision]
"""(source address, host) -> decision."""


class EgressListener:
    def __init__(self, decide: Decide) -> None:
        self._decide = decide
        self._server: asyncio.Server | None = None
        self.port = 0

    async def open(self, host: str, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._exchange(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        method = request_line.split(" ", 1)[0]
        headers = [tuple(line.split(":", 1)) for line in lines if ":" in line]
        host = next((v.strip() for k, v in headers if k.strip().lower() == "host"), "")
        hostname = urlsplit(f"//{host}").hostname or ""
        source = str(writer.get_extra_info("peername")[0])
        decision = self._decide(source, hostname)
        if method == "CONNECT":
            decision = EgressDecision(None, {}, "the fake E2B egress does not tunnel TLS")
        if decision.upstream is None:
            logger.info("fake e2b egress: %s -> %s refused: %s", source, hostname, decision.refusal)
            body = f"fake E2B egress: {decision.refusal}\n".encode()
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        replaced = {name.lower() for name in decision.headers} | {"connection"}
        kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in replaced]
        added = [f"{k}: {v}" for k, v in decision.headers.items()]
        out_head = "\r\n".join([request_line, *kept, *added, "Connection: close", "", ""])
        up_reader, up_writer = await asyncio.open_connection(*decision.upstream)
        try:
            up_writer.write(out_head.encode("latin-1"))
            await up_writer.drain()
            upload = asyncio.create_task(_pipe(reader, up_writer))
            try:
                await _pipe(up_reader, writer)
            finally:
                upload.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await upload
        finally:
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(_CHUNK):
        sink.write(chunk)
        await sink.drain()
