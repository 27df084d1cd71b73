"""DNS: the stub that answers runners, and the resolvers the proxy uses.

A runner resolves nothing by itself. Its container's resolver (Docker's embedded DNS) forwards
every name it does not know to the runner's bridge address, port 53, which the host firewall
redirects to `DnsStub`: it answers NXDOMAIN to every query, never forwards one, and reports who
asked for what. Names are resolved by the proxy, after the allowlist check, with `Resolver`.

Only the small part of RFC 1035 this needs: one question per query, A/AAAA answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

__all__ = [
    "DnsQuery",
    "DnsStub",
    "Resolver",
    "SystemResolver",
    "UpstreamResolver",
    "build_query",
    "nxdomain",
    "parse_answers",
    "parse_query",
]

logger = logging.getLogger(__name__)

_QTYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    65: "HTTPS",
    255: "ANY",
}
_NXDOMAIN = 3
_MAX_DATAGRAM = 4096


@dataclass(frozen=True)
class DnsQuery:
    id: int
    name: str
    qtype: str
    question: bytes
    """The question section as sent (echoed in the answer)."""
    flags: int


def _read_name(data: bytes, offset: int, *, allow_pointers: bool) -> tuple[str, int]:
    labels: list[str] = []
    jumps = 0
    end: int | None = None
    while True:
        if offset >= len(data):
            raise ValueError("truncated name")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if not allow_pointers or offset + 1 >= len(data) or jumps > 16:
                raise ValueError("bad compression pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            jumps += 1
            continue
        if length & 0xC0:
            raise ValueError("bad label")
        offset += 1
        if length == 0:
            break
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length
    name = ".".join(labels).lower()
    if len(name) > 253:
        raise ValueError("name too long")
    return name, end if end is not None else offset


def parse_query(data: bytes) -> DnsQuery | None:
    """The query in a datagram, or None when it is not one standard query we can answer."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack_from("!HHH", data)
    if flags & 0x8000 or qdcount != 1:  # a response, or not exactly one question
        return None
    try:
        name, offset = _read_name(data, 12, allow_pointers=False)
    except ValueError:
        return None
    if offset + 4 > len(data):
        return None
    qtype = struct.unpack_from("!H", data, offset)[0]
    return DnsQuery(qid, name, _QTYPES.get(qtype, str(qtype)), data[12 : offset + 4], flags)


def nxdomain(query: DnsQuery) -> bytes:
    """NXDOMAIN for `query`: same id and question, RD copied, RA set, nothing else."""
    flags = 0x8000 | (query.flags & 0x7900) | 0x0080 | _NXDOMAIN
    return struct.pack("!HHHHHH", query.id, flags, 1, 0, 0, 0) + query.question


def build_query(name: str, qtype: int = 1, qid: int | None = None) -> tuple[int, bytes]:
    qid = secrets.randbelow(0x10000) if qid is None else qid
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.strip(".").split(".")
    )
    return qid, struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(
        "!HH", qtype, 1
    )


def parse_answers(data: bytes, qid: int) -> list[str] | None:
    """A and AAAA addresses of a response to query `qid`; None when it is not that response."""
    if len(data) < 12:
        return None
    rid, flags, qdcount, ancount = struct.unpack_from("!HHHH", data)
    if rid != qid or not flags & 0x8000:
        return None
    if flags & 0x000F:  # NXDOMAIN, SERVFAIL, REFUSED, ...
        return []
    try:
        offset = 12
        for _ in range(qdcount):
            _, offset = _read_name(data, offset, allow_pointers=True)
            offset += 4
        out: list[str] = []
        for _ in range(ancount):
            _, offset = _read_name(data, offset, allow_pointers=True)
            rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", data, offset)
            offset += 10
            rdata = data[offset : offset + rdlen]
            offset += rdlen
            if rtype == 1 and rdlen == 4:
                out.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == 28 and rdlen == 16:
                out.append(socket.inet_ntop(socket.AF_INET6, rdata))
    except (ValueError, struct.error):
        return None
    return out


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[str]:
        """The addresses of `host` (IPv4 first); [] when it has none. Never raises for DNS."""
        ...


class SystemResolver:
    """The host's own resolver (getaddrinfo)."""

    async def resolve(self, host: str) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return []
        addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return sorted(addrs, key=lambda a: ":" in a)


class UpstreamResolver:
    """One DNS server over UDP (A records, then AAAA), two tries of `timeout_s` seconds."""

    def __init__(self, host: str, port: int = 53, *, timeout_s: float = 2.0) -> None:
        self._addr = (host, port)
        self._timeout_s = timeout_s

    async def resolve(self, host: str) -> list[str]:
        out: list[str] = []
        for qtype in (1, 28):
            out += await self._ask(host, qtype)
        return out

    async def _ask(self, host: str, qtype: int) -> list[str]:
        loop = asyncio.get_running_loop()
        for _ in range(2):
            qid, packet = build_query(host, qtype)
            answer: asyncio.Future[list[str]] = loop.create_future()
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_Answer, qid, answer), remote_addr=self._addr
            )
            try:
                transport.sendto(packet)
                return await asyncio.wait_for(answer, self._timeout_s)
            except (TimeoutError, OSError):
                continue
            finally:
                transport.close()
        logger.warning("DNS server %s:%d did not answer for %s", *self._addr, host)
        return []


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, qid: int, answer: asyncio.Future[list[str]]) -> None:
        self._qid = qid
        self._answer = answer

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:  # noqa: ARG002
        parsed = parse_answers(data, self._qid)
        if parsed is not None and not self._answer.done():
            self._answer.set_result(parsed)

    def error_received(self, exc: Exception) -> None:
        if not self._answer.done():
            self._answer.set_exception(exc)


class DnsStub(asyncio.DatagramProtocol):
    """Answers NXDOMAIN to every query and reports it: `on_query(source address, query)`."""

    def __init__(self, on_query: Callable[[str, DnsQuery], None]) -> None:
        self._on_query = on_query
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def serve(
        cls, host: str, port: int, on_query: Callable[[str, DnsQuery], None]
    ) -> tuple[DnsStub, int]:
        """Start the stub; returns it and the bound port (for `port` 0)."""
        loop = asyncio.get_running_loop()
        transport, stub = await loop.create_datagram_endpoint(
            lambda: cls(on_query), local_addr=(host, port), reuse_port=False
        )
        bound = transport.get_extra_info("sockname")[1]
        return stub, int(bound)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's selector transport does not subclass DatagramTransport; it is one.)
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        if len(data) > _MAX_DATAGRAM or self._transport is None:
            return
        query = parse_query(data)
        if query is None:
            return
        self._transport.sendto(nxdomain(query), addr)
        try:
            self._on_query(str(addr[0]), query)
        except Exception:  # reporting must never stop the answers
            logger.exception("reporting a DNS query failed")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
