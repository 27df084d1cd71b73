"""`EgressServer`: the proxy, the DNS stub and the firewall-refusal listener, run together.

    runner ──HTTP(S)_PROXY──▶ proxy :8004 ── rules, resolve, audit ──▶ allowed host
    runner ──DNS (Docker's resolver → bridge:53, redirected)──▶ stub :8053 ── NXDOMAIN, audit
    runner ──anything else──▶ host firewall ── reject + NFLOG ──▶ listener ── audit

Nothing happens at import or in the constructor; `start()` opens everything, `close()` undoes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from paddock_core import PaddockError, Store, load_policies, open_store

from ._directory import DecisionLog, RunnerDirectory
from ._dns import DnsQuery, DnsStub, Resolver, SystemResolver, UpstreamResolver
from ._nflog import BlockedPacket, NflogListener
from ._policy import EgressPolicy, load_egress_policy
from ._proxy import HEAD_LIMIT, EgressProxy
from ._rules import IPAddress, ProviderHosts, ip_of
from ._settings import EgressSettings

__all__ = ["EgressServer", "make_resolver"]

logger = logging.getLogger(__name__)

_PROVIDER_REFRESH_S = 3600.0
_MAX_PENDING_AUDITS = 1000
FIREWALL_PREFIXES = {"paddock:in": "firewall:host", "paddock:fwd": "firewall:forward"}
"""NFLOG prefixes the control plane's host firewall uses, and the rule each one stands for."""


def make_resolver(spec: str) -> Resolver:
    """`system`, or HOST[:PORT] of a DNS server."""
    if spec == "system":
        return SystemResolver()
    host, _, port = spec.rpartition(":") if spec.count(":") == 1 else (spec, "", "53")
    return UpstreamResolver(host.strip("[]"), int(port or 53))


class EgressServer:
    def __init__(
        self,
        settings: EgressSettings,
        *,
        store: Store | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._settings = settings
        self._given_store = store
        self._store: Store | None = None
        self._resolver = resolver or make_resolver(settings.egress_resolver)
        self._servers: list[asyncio.Server] = []
        self._stub: DnsStub | None = None
        self._nflog: NflogListener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._provider_addresses: frozenset[IPAddress] = frozenset()
        self._policy: EgressPolicy | None = None
        self.proxy_port = 0
        self.dns_port = 0

    async def __aenter__(self) -> EgressServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        s = self._settings
        policies = load_policies(s.policies_dir)
        url_hosts = [urlsplit(u).hostname or "" for u in s.provider_base_urls.values()]
        self._policy = load_egress_policy(
            s.policies_dir,
            policies,
            extra_provider_hosts=[*s.egress_provider_hosts, *filter(None, url_hosts)],
        )
        if self._given_store is None:
            self._store = open_store(s.resolved_database_url())
            await self._store.open()
        store = self._given_store or self._store
        assert store is not None
        self._directory = RunnerDirectory(store)
        self._log = DecisionLog(store, fallback_org=s.org_id, window_s=s.egress_audit_window_s)
        await self._refresh_providers()
        proxy = EgressProxy(
            directory=self._directory,
            log=self._log,
            policy=self._policy,
            providers=self._providers,
            resolver=self._resolver,
            connect_timeout_s=s.egress_connect_timeout_s,
            idle_timeout_s=s.egress_idle_timeout_s,
            max_connections=s.egress_max_connections,
        )
        server = await asyncio.start_server(
            proxy.handle, s.egress_host, s.egress_port, limit=HEAD_LIMIT
        )
        self._servers.append(server)
        self.proxy_port = int(server.sockets[0].getsockname()[1])
        self._stub, self.dns_port = await DnsStub.serve(
            s.egress_host, s.egress_dns_port, self._on_dns
        )
        if s.egress_nflog_group is not None:
            listener = NflogListener(s.egress_nflog_group, self._on_packet)
            try:
                listener.open()
                self._nflog = listener
            except PaddockError as exc:
                logger.warning("firewall refusals will not be audited: %s", exc.message)
        self._spawn(self._periodically(self._log.flush, s.egress_audit_window_s))
        self._spawn(self._periodically(self._refresh_providers, _PROVIDER_REFRESH_S))
        logger.info(
            "egress proxy on %s:%d, DNS stub on udp/%d, firewall audit %s",
            s.egress_host,
            self.proxy_port,
            self.dns_port,
            f"on NFLOG group {s.egress_nflog_group}" if self._nflog else "off",
        )

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._stub is not None:
            self._stub.close()
        if self._nflog is not None:
            self._nflog.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._store is not None:
            await self._log.flush()
            await self._store.close()
            self._store = None

    def _providers(self) -> ProviderHosts:
        assert self._policy is not None
        return self._policy.providers(self._provider_addresses)

    async def _refresh_providers(self) -> None:
        """Provider names → addresses, so a runner cannot reach a provider by its address."""
        assert self._policy is not None
        if not self._settings.egress_resolve_provider_hosts:
            return
        found: set[IPAddress] = set()
        for name in self._policy.provider_names():
            try:
                addrs = await asyncio.wait_for(self._resolver.resolve(name), 5.0)
            except TimeoutError:
                addrs = []
            found.update(a for a in map(ip_of, addrs) if a is not None)
        if found or not self._provider_addresses:
            self._provider_addresses = frozenset(found)

    def _on_dns(self, source: str, query: DnsQuery) -> None:
        data = {
            "via": "dns",
            "host": query.name,
            "port": 53,
            "qtype": query.qtype,
            "verdict": "deny",
            "rule": "runner_dns",
        }
        self._spawn(self._attribute_and_record(source, data), bounded=True)

    def _on_packet(self, packet: BlockedPacket) -> None:
        rule = FIREWALL_PREFIXES.get(packet.prefix)
        if rule is None:
            return  # another control plane's group configuration: not ours to report
        data = {
            "via": "network",
            "host": packet.destination,
            "port": packet.port,
            "protocol": packet.protocol,
            "verdict": "deny",
            "rule": rule,
        }
        self._spawn(self._attribute_and_record(packet.source, data), bounded=True)

    async def _attribute_and_record(self, source: str, data: dict[str, Any]) -> None:
        try:
            runner = await self._directory.by_address(source)
            await self._log.record(runner, source, data)
        except PaddockError:
            logger.exception("egress: cannot audit %s from %s", data.get("via"), source)

    async def _periodically(self, job: Any, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except PaddockError:
                logger.exception("egress: periodic %s failed", getattr(job, "__name__", job))

    def _spawn(self, coro: Coroutine[Any, Any, None], *, bounded: bool = False) -> None:
        if bounded and len(self._tasks) >= _MAX_PENDING_AUDITS:
            coro.close()
            logger.warning("egress: audit backlog full; a refusal went unrecorded")
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
