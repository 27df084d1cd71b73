"""The egress proxy: HTTP CONNECT tunnels and plain-HTTP forwarding, one request each.

Every request is authenticated (runner id and token in `Proxy-Authorization`, from the
runner's own address), checked against the runner's rules (`_rules`) before any name is
resolved, resolved here, checked again per address, audited, and only then connected, to the
address that was checked (no second lookup). A CONNECT to a name must then present the same
name in its TLS ClientHello (SNI), so an allowed name cannot front a forbidden one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from paddock_core import AuthenticationError, PaddockError, RunnerRecord

from ._directory import DecisionLog, RunnerDirectory
from ._dns import Resolver
from ._policy import EgressPolicy
from ._rules import IPAddress, ProviderHosts, check_address, check_target, ip_of
from ._tls import client_hello_sni, is_tls_handshake, tls_record_length

__all__ = ["EgressProxy", "is_host_address"]

logger = logging.getLogger(__name__)

HEAD_LIMIT = 16 * 1024
_HEAD_TIMEOUT_S = 10.0
_HOP_HEADERS = frozenset(
    {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "upgrade"}
)


def is_host_address(addr: IPAddress) -> bool:
    """Whether `addr` belongs to this host (binding to it works): the proxy never goes there."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(addr), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class _Request:
    method: str
    host: str
    port: int
    path: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class _Refusal(Exception):
    def __init__(self, status: int, rule: str, message: str) -> None:
        super().__init__(message)
        self.status, self.rule, self.message = status, rule, message


class EgressProxy:
    def __init__(
        self,
        *,
        directory: RunnerDirectory,
        log: DecisionLog,
        policy: EgressPolicy,
        providers: Callable[[], ProviderHosts],
        resolver: Resolver,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 300.0,
        max_connections: int = 64,
        is_local: Callable[[IPAddress], bool] = is_host_address,
    ) -> None:
        self._directory = directory
        self._log = log
        self._policy = policy
        self._providers = providers
        self._resolver = resolver
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._is_local = is_local
        self._open: dict[str, int] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection (the asyncio.start_server callback)."""
        peer = writer.get_extra_info("peername")
        source = str(ip_of(str(peer[0])) or peer[0]) if peer else "?"
        try:
            await self._serve(reader, writer, source)
        except Exception:  # one bad connection must never take the server down
            logger.exception("egress proxy: connection from %s failed", source)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        try:
            request = await asyncio.wait_for(_read_request(reader), _HEAD_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return
        except (ValueError, asyncio.LimitOverrunError) as exc:
            await _answer(writer, 400, "bad_request", f"bad proxy request: {exc}")
            return
        runner: RunnerRecord | None = None
        try:
            runner = await self._authenticate(request, source)
        except _Refusal as refusal:
            await self._refuse(writer, request, source, None, refusal)
            return
        self._open[runner.id] = self._open.get(runner.id, 0) + 1  # held until the end
        try:
            try:
                up_reader, up_writer = await self._decide_and_connect(request, runner, source)
            except _Refusal as refusal:
                await self._refuse(writer, request, source, runner, refusal)
                return
            try:
                if request.method == "CONNECT":
                    writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    await writer.drain()
                    if not await self._check_sni(reader, up_writer, request, runner, source):
                        return
                else:
                    up_writer.write(_origin_request(request))
                await self._pipe(reader, writer, up_reader, up_writer)
            finally:
                up_writer.close()
        finally:
            self._open[runner.id] -= 1
            if not self._open[runner.id]:
                del self._open[runner.id]

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        request: _Request,
        source: str,
        runner: RunnerRecord | None,
        refusal: _Refusal,
    ) -> None:
        """Audit a refusal (attributed by address when the caller is unknown) and answer it."""
        who = runner or await self._directory.by_address(source)
        await self._audit(who, source, request, "deny", refusal.rule, strict=False)
        await _answer(writer, refusal.status, refusal.rule, refusal.message)

    async def _authenticate(self, request: _Request, source: str) -> RunnerRecord:
        scheme, _, value = (request.header("proxy-authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            raise _Refusal(407, "auth:missing", "proxy credentials required")
        try:
            user, _, token = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _Refusal(407, "auth:malformed", "malformed proxy credentials") from None
        try:
            runner = await self._directory.authenticate(user, token, source)
        except AuthenticationError as exc:
            raise _Refusal(407, f"auth:{exc.details.get('reason')}", exc.message) from None
        if self._open.get(runner.id, 0) >= self._max_connections:
            raise _Refusal(429, "too_many_connections", "too many open proxy connections")
        return runner

    async def _decide_and_connect(
        self, request: _Request, runner: RunnerRecord, source: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            rules = self._policy.rules_for(runner.profile, runner.egress)
        except (PaddockError, ValueError):  # stored rules that do not parse: nothing passes
            raise _Refusal(403, "bad_rules", "the runner's egress rules are invalid") from None
        providers = self._providers()
        decision = check_target(rules, providers, request.host, request.port)
        if not decision.allowed:
            raise _Refusal(403, decision.rule, f"egress to {request.host} is not allowed")
        literal = ip_of(request.host)
        names = [str(literal)] if literal else await self._resolver.resolve(request.host)
        if not names:
            raise _Refusal(403, "unresolvable", f"{request.host} does not resolve")
        usable: list[str] = []
        first_denial = ""
        for name in names:
            addr = ipaddress.ip_address(name)
            denial = check_address(
                rules, providers, addr, request.port, is_local=self._is_local(addr)
            )
            if denial is None:
                usable.append(name)
            first_denial = first_denial or (denial.rule if denial else "")
        if not usable:
            raise _Refusal(403, first_denial, f"egress to {request.host} is not allowed")
        # Nothing leaves unaudited: a failed audit write refuses the request.
        try:
            await self._audit(runner, source, request, "allow", decision.rule, strict=True)
        except PaddockError:
            raise _Refusal(503, "audit_unavailable", "cannot audit; refusing") from None
        for address in usable:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(address, request.port), self._connect_timeout_s
                )
            except (OSError, TimeoutError) as exc:
                logger.info("egress: %s:%d (%s): %s", request.host, request.port, address, exc)
        raise _Refusal(502, "connect_failed", f"cannot connect to {request.host}:{request.port}")

    async def _check_sni(
        self,
        reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        request: _Request,
        runner: RunnerRecord,
        source: str,
    ) -> bool:
        """Forward the tunnel's first bytes; refuse a TLS ClientHello naming another host."""
        try:
            first = await asyncio.wait_for(_first_record(reader), self._idle_timeout_s)
        except (TimeoutError, ConnectionError):
            return False
        if is_tls_handshake(first):
            rule, sni = None, None
            try:
                sni = client_hello_sni(first)
            except ValueError:
                rule = "bad_client_hello"
            if sni is not None and self._providers().matches_name(sni):
                rule = "provider_host"
            elif sni is not None and ip_of(request.host) is None and sni != request.host:
                rule = "sni_mismatch"
            if rule is not None:
                data = {"sni": sni or ""}
                await self._audit(runner, source, request, "deny", rule, False, data)
                return False
        up_writer.write(first)
        return bool(first)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy both ways until the upstream side ends (or the client goes away)."""
        upload = asyncio.create_task(self._copy(reader, up_writer))
        try:
            await self._copy(up_reader, writer)
        finally:
            upload.cancel()
            await asyncio.gather(upload, return_exceptions=True)

    async def _copy(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            while chunk := await asyncio.wait_for(src.read(65536), self._idle_timeout_s):
                dst.write(chunk)
                await dst.drain()
        if dst.can_write_eof():
            with contextlib.suppress(OSError):
                dst.write_eof()

    async def _audit(
        self,
        runner: RunnerRecord | None,
        source: str,
        request: _Request,
        verdict: str,
        rule: str,
        strict: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        data = {
            "via": "proxy",
            "method": request.method,
            "host": request.host,
            "port": request.port,
            "verdict": verdict,
            "rule": rule,
            **(extra or {}),
        }
        try:
            await self._log.record(runner, source, data)
        except PaddockError:
            if strict:
                raise
            logger.exception("egress: cannot audit a %s of %s", verdict, request.host)


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *lines = head[:-4].split("\r\n")
    method, target, version = line.split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("HTTP/1.x only")
    headers = []
    for raw in lines:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise ValueError("malformed header")
        headers.append((name.strip(), value.strip()))
    if method == "CONNECT":
        host, port = _authority(target)
        return _Request(method, host, port, "", headers)
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise ValueError("absolute http:// URL required (use CONNECT for https)")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return _Request(method, url.hostname.lower().rstrip("."), url.port or 80, path, headers)


async def _first_record(reader: asyncio.StreamReader) -> bytes:
    """The tunnel's first bytes; for TLS, the whole first record (however it was split)."""
    data = await reader.read(HEAD_LIMIT)
    while data and is_tls_handshake(data) and len(data) < HEAD_LIMIT:
        want = tls_record_length(data)
        if want is not None and len(data) >= want:
            break
        more = await reader.read(HEAD_LIMIT - len(data))
        if not more:
            break
        data += more
    return data


def _authority(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("CONNECT needs host:port")
    return host.strip("[]").lower().rstrip("."), int(port)


def _origin_request(request: _Request) -> bytes:
    """The request as the origin server sees it: origin-form, its own Host, one request only."""
    host = request.host if ":" not in request.host else f"[{request.host}]"
    authority = host if request.port == 80 else f"{host}:{request.port}"
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {authority}"]
    lines += [
        f"{k}: {v}"
        for k, v in request.headers
        if k.lower() not in _HOP_HEADERS and k.lower() != "host"
    ]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _answer(writer: asyncio.StreamWriter, status: int, rule: str, message: str) -> None:
    reason = {
        400: "Bad Request",
        403: "Forbidden",
        407: "Proxy Authentication Required",
        429: "Too Many Requests",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }[status]
    body = f"paddock egress: {message} ({rule})\n".encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        f"X-Paddock-Egress-Rule: {rule}",
        "Connection: close",
    ]
    if status == 407:
        head.append('Proxy-Authenticate: Basic realm="paddock-egress"')
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
