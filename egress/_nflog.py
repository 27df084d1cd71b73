"""Packets the host firewall refused, read from the kernel (NFLOG over netlink).

The control plane's firewall rules log every refused runner packet (rate-limited per source)
to one NFLOG group before rejecting it; this listener turns them into `BlockedPacket`s so each
refusal can be audited. Linux only; binding needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from paddock_core import PaddockError

__all__ = ["BlockedPacket", "NflogListener", "parse_packet"]

logger = logging.getLogger(__name__)

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_ULOG = 4
_NFULNL_MSG_PACKET = 0
_NFULNL_MSG_CONFIG = 1
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLMSG_ERROR = 2
_CFG_CMD, _CFG_MODE = 1, 2
_CMD_BIND = 1
_COPY_PACKET = 2
_ATTR_PAYLOAD, _ATTR_PREFIX = 9, 10
_PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
_COPY_RANGE = 80  # bytes of each packet: IP header and the transport ports


@dataclass(frozen=True)
class BlockedPacket:
    prefix: str
    source: str
    destination: str
    protocol: str
    port: int | None


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _config(group: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + attrs
    kind = (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK, seq, 0) + body


def _attrs(body: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 4  # after struct nfgenmsg
    while pos + 4 <= len(body):
        length, kind = struct.unpack_from("=HH", body, pos)
        if length < 4:
            break
        out[kind & 0x7FFF] = body[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return out


def parse_packet(prefix: str, payload: bytes) -> BlockedPacket | None:
    """The addresses and destination port of an IPv4 or IPv6 packet's first bytes."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        header = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src = socket.inet_ntop(socket.AF_INET, payload[12:16])
        dst = socket.inet_ntop(socket.AF_INET, payload[16:20])
    elif version == 6 and len(payload) >= 40:
        header, proto = 40, payload[6]
        src = socket.inet_ntop(socket.AF_INET6, payload[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, payload[24:40])
    else:
        return None
    port = None
    if proto in (6, 17) and len(payload) >= header + 4:
        port = struct.unpack_from("!H", payload, header + 2)[0]
    return BlockedPacket(prefix, src, dst, _PROTOS.get(proto, str(proto)), port)


class NflogListener:
    """Reads one NFLOG group on the running event loop; calls `on_packet` for each packet."""

    def __init__(self, group: int, on_packet: Callable[[BlockedPacket], None]) -> None:
        self._group = group
        self._on_packet = on_packet
        self._sock: socket.socket | None = None
        self.dropped = 0

    def open(self) -> None:
        """Bind the group. PaddockError when the kernel refuses (no permission, group taken)."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        except (OSError, AttributeError) as exc:
            raise PaddockError(f"NFLOG is not available here: {exc}") from exc
        try:
            sock.bind((0, 0))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._configure(sock, _attr(_CFG_CMD, struct.pack("B", _CMD_BIND)), seq=1)
            mode = struct.pack(">IBB", _COPY_RANGE, _COPY_PACKET, 0) + b"\0\0"
            self._configure(sock, _attr(_CFG_MODE, mode), seq=2)
        except OSError as exc:
            sock.close()
            raise PaddockError(f"cannot bind NFLOG group {self._group}: {exc}") from exc
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        self._sock = sock

    def _configure(self, sock: socket.socket, attrs: bytes, *, seq: int) -> None:
        sock.send(_config(self._group, attrs, seq))
        reply = sock.recv(4096)
        if len(reply) >= 20:
            _, kind = struct.unpack_from("=IH", reply)
            (error,) = struct.unpack_from("=i", reply, 16)
            if kind == _NLMSG_ERROR and error != 0:
                raise OSError(-error, f"netlink error {-error}")

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(256):  # bounded per wake-up; the loop calls again while data waits
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:  # ENOBUFS: the kernel dropped messages (a flood); keep going
                self.dropped += 1
                continue
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        pos = 0
        while pos + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, pos)
            if length < 16:
                return
            if kind == (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_PACKET:
                attrs = _attrs(data[pos + 16 : pos + length])
                prefix = attrs.get(_ATTR_PREFIX, b"").rstrip(b"\0").decode("ascii", "replace")
                packet = parse_packet(prefix, attrs.get(_ATTR_PAYLOAD, b""))
                if packet is not None:
                    try:
                        self._on_packet(packet)
                    except Exception:  # reporting must never stop the reader
                        logger.exception("handling a blocked packet failed")
            pos += (length + 3) & ~3

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
