"""The fake E2B's state: templates, sandboxes, their lifetimes, and the knobs tests turn.

Sandbox lifetimes follow E2B's: `timeout` seconds from creation (or from the last
`set_timeout` / `connect`), then killed (or paused with `autoPause`) by a reaper. Tests can
make creates answer 429 (`refuse_creates`), cap concurrent sandboxes (`max_concurrent`) and
make a sandbox vanish behind its owner's back (`vanish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import docker.errors

from ._egress import EgressDecision, EgressListener
from ._vm import DockerVMs, VMProcess

__all__ = ["FakeE2B", "FakeE2BConfig", "FakeError", "FakeSandbox", "FakeTemplate"]

logger = logging.getLogger(__name__)

ENVD_VERSION = "0.5.8"


@dataclass(frozen=True)
class FakeTemplate:
    """What a template name stands for here: a runner image, its VM size, its default user."""

    image: str
    cpu_count: int = 1
    memory_mb: int = 2048
    default_user: str = "agent"


def _default_templates() -> dict[str, FakeTemplate]:
    return {
        "paddock-probe": FakeTemplate("paddock/runner-probe:latest"),
        "paddock-openclaw": FakeTemplate("paddock/runner-openclaw:latest"),
    }


@dataclass
class FakeE2BConfig:
    api_key: str = "e2b_fake_key"
    domain: str = "fake-e2b.test"
    templates: dict[str, FakeTemplate] = field(default_factory=_default_templates)
    upstreams: dict[str, str] = field(default_factory=dict)
    """The fake's "internet": host name -> loopback base URL (e.g. the Paddock gateway)."""
    egress_port: int = 0
    max_concurrent: int = 100
    max_timeout_s: int = 86_400
    reap_interval_s: float = 0.2
    instance: str = field(default_factory=lambda: secrets.token_hex(4))


class FakeError(Exception):
    """An answer in E2B's error shape: {"code": status, "message": ...}."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class FakeSandbox:
    sandbox_id: str
    template_id: str
    template: FakeTemplate
    metadata: dict[str, str]
    env_vars: dict[str, str]
    network: dict[str, Any]
    allow_internet_access: bool | None
    auto_pause: bool
    started_at: float
    end_at: float
    envd_access_token: str
    traffic_access_token: str | None
    container_id: str = ""
    address: str = ""
    state: str = "running"
    processes: dict[int, VMProcess] = field(default_factory=dict)
    next_pid: int = 1000
    timeouts_set: int = 0

    def created_body(self, domain: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "templateID": self.template_id,
            "sandboxID": self.sandbox_id,
            "clientID": "fake-client",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": self.envd_access_token,
            "domain": domain,
        }
        if self.traffic_access_token is not None:
            body["trafficAccessToken"] = self.traffic_access_token
        return body

    def listed_body(self) -> dict[str, Any]:
        return {
            "templateID": self.template_id,
            "sandboxID": self.sandbox_id,
            "clientID": "fake-client",
            "startedAt": _iso(self.started_at),
            "endAt": _iso(self.end_at),
            "cpuCount": self.template.cpu_count,
            "memoryMB": self.template.memory_mb,
            "diskSizeMB": 4096,
            "state": self.state,
            "envdVersion": ENVD_VERSION,
            "metadata": self.metadata,
        }

    def detail_body(self, domain: str) -> dict[str, Any]:
        return {
            **self.listed_body(),
            "envdAccessToken": self.envd_access_token,
            "domain": domain,
            "allowInternetAccess": self.allow_internet_access,
            "network": self.network,
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class FakeE2B:
    """One fake E2B: state and operations behind the REST API, envd and the egress."""

    def __init__(self, config: FakeE2BConfig, vms: DockerVMs | None = None) -> None:
        self.config = config
        self.vms = vms or DockerVMs(config.instance)
        self.sandboxes: dict[str, FakeSandbox] = {}
        self._idempotency: dict[str, str] = {}
        self._refusals: list[tuple[str, float | None]] = []
        self._reaper: asyncio.Task[None] | None = None
        self.egress = EgressListener(self.decide)
        self.stats: dict[str, int] = {"creates": 0, "refused_creates": 0, "set_timeouts": 0}

    # --- lifetime of the fake ---------------------------------------------------------------

    async def open(self) -> None:
        gateway_ip = await self.vms.open()
        await self.egress.open(gateway_ip, self.config.egress_port)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        logger.info(
            "fake e2b %s: VMs on %s, egress at %s:%s",
            self.config.instance,
            self.vms.network_name,
            gateway_ip,
            self.egress.port,
        )

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.egress.close()
        await self.vms.close()
        self.sandboxes.clear()

    def egress_url(self, host: str) -> str:
        """How a VM reaches `host` of the fake's internet (a base URL without a path)."""
        return f"http://{host}:{self.egress.port}"

    # --- knobs for tests ----------------------------------------------------------------------

    def refuse_creates(
        self, count: int, message: str = "rate limit exceeded", retry_after: float | None = None
    ) -> None:
        self._refusals.extend([(message, retry_after)] * count)

    def clear_refusals(self) -> None:
        self._refusals.clear()

    async def vanish(self, sandbox_id: str) -> None:
        """The sandbox disappears without a trace, as if E2B lost it."""
        sandbox = self.sandboxes.pop(sandbox_id, None)
        if sandbox is not None:
            await self.vms.remove(sandbox.container_id)

    # --- the API's operations -----------------------------------------------------------------

    async def create(self, body: dict[str, Any], idempotency_key: str | None) -> FakeSandbox:
        if idempotency_key and self._idempotency.get(idempotency_key) in self.sandboxes:
            return self.sandboxes[self._idempotency[idempotency_key]]
        if self._refusals:
            message, retry_after = self._refusals.pop(0)
            self.stats["refused_creates"] += 1
            raise FakeError(429, message, retry_after)
        template_id = str(body.get("templateID") or "")
        template = self.config.templates.get(template_id)
        if template is None:
            raise FakeError(404, f"template '{template_id}' not found")
        running = sum(1 for s in self.sandboxes.values() if s.state == "running")
        if running >= self.config.max_concurrent:
            raise FakeError(
                429,
                "You have reached the maximum number of concurrent E2B sandboxes "
                f"({self.config.max_concurrent}). If you need more, please contact us.",
            )
        timeout = self._timeout(body.get("timeout", 15))
        network = body.get("network") or {}
        if not isinstance(network, dict):
            raise FakeError(400, "network must be an object")
        now = time.time()
        sandbox = FakeSandbox(
            sandbox_id="i" + secrets.token_hex(10),
            template_id=template_id,
            template=template,
            metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
            env_vars={str(k): str(v) for k, v in (body.get("envVars") or {}).items()},
            network=network,
            allow_internet_access=body.get("allow_internet_access"),
            auto_pause=bool(body.get("autoPause", False)),
            started_at=now,
            end_at=now + timeout,
            envd_access_token=secrets.token_urlsafe(24),
            traffic_access_token=(
                secrets.token_urlsafe(24) if network.get("allowPublicTraffic") is False else None
            ),
        )
        hosts = dict.fromkeys(self.config.upstreams, self.vms.gateway_ip)
        try:
            sandbox.container_id, sandbox.address = await self.vms.start(
                sandbox.sandbox_id,
                template.image,
                memory_mb=template.memory_mb,
                cpu_count=template.cpu_count,
                hosts=hosts,
            )
        except docker.errors.DockerException as exc:
            await self.vms.remove_sandbox(sandbox.sandbox_id)
            raise FakeError(500, f"failed to start the sandbox: {exc}") from exc
        self.sandboxes[sandbox.sandbox_id] = sandbox
        if idempotency_key:
            self._idempotency[idempotency_key] = sandbox.sandbox_id
        self.stats["creates"] += 1
        return sandbox

    def get(self, sandbox_id: str) -> FakeSandbox:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise FakeError(404, f"sandbox \"{sandbox_id}\" doesn't exist or you don't have access")
        return sandbox

    async def kill(self, sandbox_id: str) -> None:
        sandbox = self.get(sandbox_id)
        del self.sandboxes[sandbox_id]
        await self.vms.remove(sandbox.container_id)

    def set_timeout(self, sandbox_id: str, timeout: Any) -> None:
        sandbox = self.get(sandbox_id)
        sandbox.end_at = time.time() + self._timeout(timeout)
        sandbox.timeouts_set += 1
        self.stats["set_timeouts"] += 1

    async def pause(self, sandbox_id: str) -> None:
        sandbox = self.get(sandbox_id)
        if sandbox.state == "paused":
            raise FakeError(409, f"sandbox {sandbox_id} is already paused")
        await self.vms.pause(sandbox.container_id, True)
        sandbox.state = "paused"

    async def connect(self, sandbox_id: str, timeout: Any) -> FakeSandbox:
        """Resume a paused sandbox; a running one only gets a longer timeout, never a shorter."""
        sandbox = self.get(sandbox_id)
        seconds = self._timeout(timeout if timeout is not None else 300)
        if sandbox.state == "paused":
            await self.vms.pause(sandbox.container_id, False)
            sandbox.state = "running"
            sandbox.end_at = time.time() + seconds
        elif timeout is not None:
            sandbox.end_at = max(sandbox.end_at, time.time() + seconds)
        return sandbox

    def list(self, metadata: dict[str, str], states: list[str]) -> list[FakeSandbox]:
        wanted = states or ["running", "paused"]
        found = [
            s
            for s in self.sandboxes.values()
            if s.state in wanted and all(s.metadata.get(k) == v for k, v in metadata.items())
        ]
        return sorted(found, key=lambda s: s.started_at)

    def _timeout(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise FakeError(400, "timeout must be a positive integer (seconds)")
        if value > self.config.max_timeout_s:
            raise FakeError(400, f"timeout cannot exceed {self.config.max_timeout_s} seconds")
        return value

    # --- the egress (per request, as E2B's network layer does per connection) -------------------

    def sandbox_at(self, address: str) -> FakeSandbox | None:
        return next((s for s in self.sandboxes.values() if s.address == address), None)

    def decide(self, source: str, host: str) -> EgressDecision:
        sandbox = self.sandbox_at(source)
        if sandbox is None or sandbox.state != "running":
            return EgressDecision(None, {}, f"no running sandbox at {source}")
        network = sandbox.network
        allowed = [str(x) for x in network.get("allowOut") or []]
        denied = [str(x) for x in network.get("denyOut") or []]
        if sandbox.allow_internet_access is False:
            denied.append("0.0.0.0/0")
        if host not in allowed and _matches(host, denied):
            return EgressDecision(None, {}, f"{host} is denied by the sandbox's network policy")
        base = self.config.upstreams.get(host)
        if base is None:
            return EgressDecision(None, {}, f"{host} is not part of the fake's internet")
        headers: dict[str, str] = {}
        for rule in (network.get("rules") or {}).get(host, []):
            headers.update((rule.get("transform") or {}).get("headers") or {})
        parts = urlsplit(base)
        return EgressDecision((parts.hostname or "127.0.0.1", parts.port or 80), headers)

    # --- lifetimes ---------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            try:
                await self.reap()
            except Exception:  # the reaper must outlive one bad pass
                logger.exception("fake e2b reaper pass failed")

    async def reap(self) -> None:
        now = time.time()
        for sandbox in [s for s in self.sandboxes.values() if s.state == "running"]:
            if sandbox.end_at > now:
                continue
            if sandbox.auto_pause:
                await self.pause(sandbox.sandbox_id)
            else:
                logger.info("fake e2b: sandbox %s reached its timeout", sandbox.sandbox_id)
                with contextlib.suppress(FakeError):
                    await self.kill(sandbox.sandbox_id)


def _matches(host: str, entries: list[str]) -> bool:
    """Whether `host` falls under `entries` (names, IPs, CIDRs; a name matches 0.0.0.0/0)."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in entries:
        if entry == host:
            return True
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0 or (address is not None and address in net):
            return True
    return False
