"""The egress proxy on loopback against a real store: auth, CONNECT, forwarding, SNI, audit.

Upstreams are servers this test starts on 127.0.0.1; names resolve through a fake resolver.
The proxy's "is this address the host's own" check is replaced (everything here is loopback).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from egress._directory import DecisionLog, RunnerDirectory
from egress._policy import load_egress_policy
from egress._proxy import EgressProxy
from paddock_core import (
    DEFAULT_POLICIES_DIR,
    AuditEvent,
    InsertRunner,
    RunnerRecord,
    Store,
    hash_token,
    load_policies,
    mint_token,
    open_store,
)

ORG = "org_proxy_tests"


class _Names:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.table.get(host, [])


async def _upstream() -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.2", 0)
    return server, server.sockets[0].getsockname()[1], seen


def _auth(runner_id: str, token: str) -> str:
    raw = base64.b64encode(f"{runner_id}:{token}".encode()).decode()
    return f"Proxy-Authorization: Basic {raw}\r\n"


async def _exchange(port: int, request: bytes, then: bytes = b"") -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    rest = b""
    if then:
        writer.write(then)
    if head.startswith(b"HTTP/1.1 200 Connection") and not then:
        pass
    else:
        rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return head, rest


def _run(test: Callable[[Store, EgressProxy, int, dict[str, Any]], Awaitable[None]], tmp: Path,
         *, address: str = "127.0.0.1", state: str = "ready",
         ref: dict[str, Any] | None = None, backend: str = "docker") -> None:  # fmt: skip
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp / 'paddock.db'}")
        await store.open()
        upstream, up_port, seen = await _upstream()
        token = mint_token("prt")
        runner = RunnerRecord(
            id="rn_proxytest",
            org_id=ORG,
            state=state,
            profile="standard",
            sandbox="hardened",
            image="probe",
            model="fake-gpt",
            budget_usd=None,
            token_hash=hash_token(token),
            backend=backend,
            backend_ref={"address": address} if ref is None else ref,
            egress={"allow": ["allowed.test", "*.wild.test"], "private_ranges": ["127.0.0.0/8"]},
        )
        await store.apply([InsertRunner(runner)])
        policies = load_policies(DEFAULT_POLICIES_DIR)
        policy = load_egress_policy(
            DEFAULT_POLICIES_DIR, policies, extra_provider_hosts=["llm.test"]
        )
        names = _Names(
            {n: ["127.0.0.2"] for n in ("allowed.test", "other.test", "a.wild.test", "llm.test")}
        )
        proxy = EgressProxy(
            directory=RunnerDirectory(store),
            log=DecisionLog(store, fallback_org=ORG, window_s=0.001),
            policy=policy,
            providers=lambda: policy.providers(),
            resolver=names,
            is_local=lambda _addr: False,
        )
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ctx = {"token": token, "up": up_port, "seen": seen, "names": names, "runner": runner}
        try:
            await test(store, proxy, port, ctx)
        finally:
            server.close()
            upstream.close()
            await store.close()

    asyncio.run(main())


async def _decisions(store: Store) -> list[dict[str, Any]]:
    events: list[AuditEvent] = await store.list_audit(ORG, runner_id="rn_proxytest")
    return [e.data for e in events if e.type == "egress.decision"]


def test_connect_and_forward_to_allowed_hosts(tmp_path: Path) -> None:
    async def test(store: Store, proxy: EgressProxy, port: int, c: dict[str, Any]) -> None:
        auth = _auth("rn_proxytest", c["token"])
        get = b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
        head, body = await _exchange(
            port, f"CONNECT allowed.test:{c['up']} HTTP/1.1\r\n{auth}\r\n".encode(), get
        )
        assert head.startswith(b"HTTP/1.1 200")
        assert body.endswith(b"hello")
        plain = f"GET http://a.wild.test:{c['up']}/x?y=1 HTTP/1.1\r\nHost: evil.test\r\n{auth}\r\n"
        head, body = await _exchange(port, plain.encode())
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello"
        forwarded = c["seen"][-1].decode()
        assert forwarded.startswith("GET /x?y=1 HTTP/1.1\r\n")
        assert f"Host: a.wild.test:{c['up']}" in forwarded  # the checked host, not the sent one
        assert "Proxy-Authorization" not in forwarded
        verdicts = [(d["host"], d["verdict"], d["rule"]) for d in await _decisions(store)]
        assert ("allowed.test", "allow", "allow allowed.test") in verdicts
        assert ("a.wild.test", "allow", "allow *.wild.test") in verdicts

    _run(test, tmp_path)


def test_denials_are_answered_and_audited(tmp_path: Path) -> None:
    async def test(store: Store, proxy: EgressProxy, port: int, c: dict[str, Any]) -> None:
        auth = _auth("rn_proxytest", c["token"])
        cases = {
            f"CONNECT other.test:{c['up']}": (403, "no_allow_rule"),
            f"CONNECT 127.0.0.2:{c['up']}": (403, "no_allow_rule"),
            f"CONNECT llm.test:{c['up']}": (403, "provider_host"),
            "CONNECT api.openai.com:443": (403, "provider_host"),
            f"GET http://other.test:{c['up']}/": (403, "no_allow_rule"),
        }
        for line, (status, rule) in cases.items():
            head, _ = await _exchange(port, f"{line} HTTP/1.1\r\n{auth}\r\n".encode())
            assert head.startswith(f"HTTP/1.1 {status}".encode()), (line, head)
            assert f"X-Paddock-Egress-Rule: {rule}".encode() in head
        # Names are resolved only after the allowlist check.
        assert "other.test" not in c["names"].asked and "llm.test" not in c["names"].asked
        head, _ = await _exchange(port, f"CONNECT allowed.test:{c['up']} HTTP/1.1\r\n\r\n".encode())
        assert head.startswith(b"HTTP/1.1 407") and b"auth:missing" in head
        bad = _auth("rn_proxytest", "prt_notthetoken")
        head, _ = await _exchange(port, f"CONNECT allowed.test:1 HTTP/1.1\r\n{bad}\r\n".encode())
        assert head.startswith(b"HTTP/1.1 407") and b"auth:invalid_token" in head
        rules = [(d["host"], d["rule"]) for d in await _decisions(store) if d["verdict"] == "deny"]
        assert ("other.test", "no_allow_rule") in rules
        assert ("llm.test", "provider_host") in rules
        assert ("allowed.test", "auth:missing") in rules  # attributed by the source address
        assert not c["seen"], "nothing reached the upstream"

    _run(test, tmp_path)


def test_sni_must_name_the_connected_host(tmp_path: Path) -> None:
    async def test(store: Store, proxy: EgressProxy, port: int, c: dict[str, Any]) -> None:
        auth = _auth("rn_proxytest", c["token"])
        ctx = ssl.create_default_context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="forbidden.example")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT allowed.test:{c['up']} HTTP/1.1\r\n{auth}\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(hello[:7])  # split across writes: the proxy waits for the whole record
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(hello[7:])
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing relayed
        writer.close()
        assert not c["seen"]
        sni = [d for d in await _decisions(store) if d["rule"] == "sni_mismatch"]
        assert sni and sni[0]["sni"] == "forbidden.example"

    _run(test, tmp_path)


@pytest.mark.parametrize(("address", "state", "reason"), [
    ("10.99.0.2", "ready", "wrong_source"),
    ("127.0.0.1", "stopped", "runner_not_live"),
    ("127.0.0.1", "provisioning", "runner_not_live"),
])  # fmt: skip
def test_token_only_from_its_address_while_live(
    tmp_path: Path, address: str, state: str, reason: str
) -> None:
    async def test(store: Store, proxy: EgressProxy, port: int, c: dict[str, Any]) -> None:
        auth = _auth("rn_proxytest", c["token"])
        head, _ = await _exchange(
            port, f"CONNECT allowed.test:{c['up']} HTTP/1.1\r\n{auth}\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 407") and f"auth:{reason}".encode() in head
        assert not c["seen"]

    _run(test, tmp_path, address=address, state=state)


@pytest.mark.parametrize(("ref", "allowed"), [
    ({"sandbox_id": "sbx_1", "egress_auth": "credentials"}, True),
    ({"sandbox_id": "sbx_1"}, False),  # no address and not marked: never by credentials alone
])  # fmt: skip
def test_a_runner_without_an_address_is_known_by_its_credentials_when_marked(
    tmp_path: Path, ref: dict[str, Any], allowed: bool
) -> None:
    """An E2B runner has no fixed source address: marked `egress_auth: credentials`, its
    credentials alone identify it, and its own rules still apply; wrong ones are refused."""

    async def test(store: Store, proxy: EgressProxy, port: int, c: dict[str, Any]) -> None:
        auth = _auth("rn_proxytest", c["token"])
        head, _ = await _exchange(
            port, f"CONNECT allowed.test:{c['up']} HTTP/1.1\r\n{auth}\r\n".encode()
        )
        if not allowed:
            assert head.startswith(b"HTTP/1.1 407") and b"auth:wrong_source" in head
            return
        assert head.startswith(b"HTTP/1.1 200")
        head, _ = await _exchange(
            port, f"CONNECT other.test:{c['up']} HTTP/1.1\r\n{auth}\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 403"), head  # not on its allowlist
        wrong = _auth("rn_proxytest", mint_token("prt"))
        head, _ = await _exchange(
            port, f"CONNECT allowed.test:{c['up']} HTTP/1.1\r\n{wrong}\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 407")
        # Both decisions about this runner are in its audit trail, with their rules.
        assert [d["rule"] for d in await _decisions(store)] == [
            "allow allowed.test",
            "no_allow_rule",
        ]

    _run(test, tmp_path, ref=ref, backend="e2b")
