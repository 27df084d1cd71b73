"""The server name (SNI) in a TLS ClientHello: enough of RFC 8446 §4.1.2 and RFC 6066 §3."""

from __future__ import annotations

import struct

__all__ = ["client_hello_sni", "is_tls_handshake", "tls_record_length"]

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000


def is_tls_handshake(data: bytes) -> bool:
    return len(data) >= 1 and data[0] == _HANDSHAKE


def tls_record_length(data: bytes) -> int | None:
    """Length of the whole first record (header included), once its header has arrived."""
    if len(data) < 5:
        return None
    return 5 + int(struct.unpack_from("!H", data, 3)[0])


def client_hello_sni(data: bytes) -> str | None:
    """The host name a ClientHello asks for; None when it names none.

    `data` must hold the whole first record. ValueError when it is not a ClientHello.
    """
    try:
        if data[0] != _HANDSHAKE or data[5] != _CLIENT_HELLO:
            raise ValueError("not a TLS ClientHello")
        end = tls_record_length(data) or 0
        pos = 5 + 4 + 2 + 32  # record header, handshake header, legacy_version, random
        pos += 1 + data[pos]  # legacy_session_id
        pos += 2 + struct.unpack_from("!H", data, pos)[0]  # cipher_suites
        pos += 1 + data[pos]  # legacy_compression_methods
        if pos >= end:
            return None  # no extensions
        ext_end = min(end, pos + 2 + struct.unpack_from("!H", data, pos)[0])
        pos += 2
        while pos + 4 <= ext_end:
            kind, length = struct.unpack_from("!HH", data, pos)
            pos += 4
            if kind == _SERVER_NAME:
                list_end = pos + 2 + struct.unpack_from("!H", data, pos)[0]
                pos += 2
                while pos + 3 <= list_end:
                    name_type, name_len = data[pos], struct.unpack_from("!H", data, pos + 1)[0]
                    pos += 3
                    if name_type == 0:
                        name = data[pos : pos + name_len].decode("ascii")
                        return name.lower().rstrip(".")
                    pos += name_len
                return None
            pos += length
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed ClientHello: {exc}") from exc
    return None
