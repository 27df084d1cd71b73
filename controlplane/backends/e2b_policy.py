"""What a Paddock profile means on E2B, what it cannot mean, and E2B's errors in Paddock's tree.

The microVM is the boundary; E2B's network layer is the fence. Per profile:

    network      gateway_only  allow_out = [gateway host], deny_out = [0.0.0.0/0]
                 allowlist,    + the Paddock egress proxy's host, HTTP(S)_PROXY pointing at it;
                 open_except_  refused unless `egress_proxy_url` is set (E2B cannot express
                 providers     "everything but the providers" or an allowlist Paddock audits)
    inbound      allow_public_traffic = false: every request to a sandbox port needs the
                 sandbox's traffic token (the backend's agent transport adds it)
    gateway      the runner token travels in E2B's per-host header rule, never in the VM (the
    token        runner sees a placeholder) unless `inject_token` is off
    filesystem   the agent runs as a user without sudo that owns only $HOME, /tmp and, when the
                 profile allows it, /workspace (root makes /workspace read-only otherwise); the
                 VM's root filesystem is writable for root, which the agent cannot become
    resources    the VM's size is the template's: refused when it exceeds the profile's memory
                 or CPUs; pids are not limited inside the VM (a fork bomb only kills its VM)
    DNS          with a name in allow_out E2B lets the VM reach its resolver (8.8.8.8 unless
                 `dns_servers` says otherwise): a DNS channel Docker runners do not have
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from e2b.exceptions import (
    AuthenticationException,
    InvalidArgumentException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    ServiceBusyException,
    TimeoutException,
)
from e2b.sandbox.sandbox_api import SandboxNetworkOpts, SandboxNetworkRule

from paddock_core import BackendError, Profile, SandboxLevel

__all__ = [
    "MICROVM",
    "RUNNER_COMMANDS",
    "TOKEN_PLACEHOLDER",
    "E2BConfinement",
    "E2BPlan",
    "E2BTemplate",
    "backend_error",
    "runner_templates",
]

MICROVM = "microvm"
TOKEN_PLACEHOLDER = "e2b-injects-the-runner-token"
_ALL_TRAFFIC = "0.0.0.0/0"


@dataclass(frozen=True)
class E2BTemplate:
    """The E2B template for one runner image, and how its runner starts inside the VM."""

    name: str
    command: str
    user: str = "agent"


RUNNER_COMMANDS: Mapping[str, str] = {
    "openclaw": "exec /usr/local/bin/node /opt/paddock/entrypoint.mjs",
    "probe": "exec /usr/bin/python3 /opt/paddock/agent.py",
}
"""How each runner image kind starts in its VM (its image's entrypoint, without tini: envd is
the parent there)."""


def runner_templates(
    images: Mapping[str, str], templates: Mapping[str, str]
) -> dict[str, E2BTemplate]:
    """E2B templates by image reference, from image kind -> image and image kind -> template."""
    return {
        images[kind]: E2BTemplate(name, RUNNER_COMMANDS[kind])
        for kind, name in templates.items()
        if kind in images and kind in RUNNER_COMMANDS
    }


@dataclass(frozen=True)
class E2BPlan:
    network: SandboxNetworkOpts
    env: dict[str, str]
    prepare: str
    """Run as root before the runner starts."""
    enforced: dict[str, str]
    """How each confinement layer is held on E2B (kept in the runner's reference)."""


class E2BConfinement:
    def __init__(
        self,
        *,
        gateway_url: str,
        egress_proxy_url: str | None = None,
        public_traffic: bool = False,
        inject_token: bool = True,
        dns_servers: list[str] | None = None,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.gateway_host = urlsplit(gateway_url).hostname or ""
        if not self.gateway_host:
            raise BackendError(f"the gateway's public URL {gateway_url!r} names no host")
        self._egress_url = egress_proxy_url
        self._egress_host = urlsplit(egress_proxy_url).hostname if egress_proxy_url else None
        self._public_traffic = public_traffic
        self._inject = inject_token
        self._dns_servers = dns_servers

    @property
    def networks(self) -> frozenset[str]:
        if self._egress_host is None:
            return frozenset({"gateway_only"})
        return frozenset({"gateway_only", "allowlist", "open_except_providers"})

    def refusal(self, profile: Profile, sandbox: SandboxLevel) -> str | None:
        """Why E2B cannot honour `profile` in `sandbox`, or None (checked before any call)."""
        if sandbox.name != MICROVM:
            return f"the e2b backend serves sandbox level {MICROVM!r} only, not {sandbox.name!r}"
        if profile.network not in self.networks:
            return (
                f"profile {profile.name!r} needs network {profile.network!r}: on E2B that needs "
                "the Paddock egress proxy at a public address (PADDOCK_E2B_EGRESS_PROXY_URL)"
            )
        if profile.network != "gateway_only" and self._egress_host == self.gateway_host:
            return "the egress proxy needs a host name of its own (header rules are per host)"
        return None

    def size_refusal(self, profile: Profile, cpu_count: int, memory_mb: int) -> str | None:
        """Why a VM of this size may not run `profile` (the template sets the size)."""
        res = profile.resources
        if memory_mb > res.memory_mb or cpu_count > math.ceil(res.cpus):
            return (
                f"the template's VM ({cpu_count} CPU, {memory_mb} MB) exceeds profile "
                f"{profile.name!r} ({res.cpus:g} CPU, {res.memory_mb} MB): use a smaller template"
            )
        return None

    def plan(self, profile: Profile, env: dict[str, str], runner_id: str, user: str) -> E2BPlan:
        token = env.get("PADDOCK_RUNNER_TOKEN", "")
        run_env = {**env, "PADDOCK_GATEWAY_URL": self.gateway_url}
        hosts = [self.gateway_host]
        rules: dict[str, list[SandboxNetworkRule]] = {}
        if self._inject and token:  # a pooled runner has none until it is claimed
            run_env["PADDOCK_RUNNER_TOKEN"] = TOKEN_PLACEHOLDER
            # Both key headers the gateway accepts: OpenClaw's anthropic-messages API sends the
            # (placeholder) token as x-api-key, its openai-completions API as a Bearer token.
            rules[self.gateway_host] = _inject(
                {"Authorization": f"Bearer {token}", "x-api-key": token}
            )
        if profile.network != "gateway_only" and self._egress_url and self._egress_host and token:
            hosts.append(self._egress_host)
            proxy = self._egress_url
            if self._inject:
                basic = base64.b64encode(f"{runner_id}:{token}".encode()).decode()
                rules[self._egress_host] = _inject({"Proxy-Authorization": f"Basic {basic}"})
            else:
                parts = urlsplit(self._egress_url)
                proxy = parts._replace(netloc=f"{runner_id}:{token}@{parts.netloc}").geturl()
            for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                run_env[key] = proxy
            run_env["NO_PROXY"] = run_env["no_proxy"] = self.gateway_host
            run_env["NODE_USE_ENV_PROXY"] = "1"
            run_env["PADDOCK_EGRESS_PROXY"] = proxy
        network = SandboxNetworkOpts(
            allow_out=hosts, deny_out=[_ALL_TRAFFIC], allow_public_traffic=self._public_traffic
        )
        if rules:
            network["rules"] = rules
        if self._dns_servers is not None:
            network["dns_servers"] = list(self._dns_servers)
        writable = profile.filesystem.workspace_writable
        owner = f"{user}:{user}" if writable else "root:root"
        prepare = f"mkdir -p /workspace && chown {owner} /workspace && "
        prepare += f"chmod {'0755' if writable else '0555'} /workspace"
        enforced = {
            "boundary": "firecracker microVM (E2B)",
            "network": f"allow_out {hosts}, deny_out {_ALL_TRAFFIC} (E2B network layer)",
            "inbound": "public" if self._public_traffic else "traffic token required",
            "gateway_token": "E2B header rule" if self._inject else "in the VM's environment",
            "filesystem": f"agent user {user!r} without sudo; /workspace "
            + ("writable" if writable else "read-only")
            + "; root filesystem not mounted read-only",
            "pids": "not limited inside the VM",
            "dns": "E2B resolver reachable"
            if self._dns_servers is None
            else f"resolvers {self._dns_servers}",
        }
        return E2BPlan(network, run_env, prepare, enforced)


def _inject(headers: dict[str, str]) -> list[SandboxNetworkRule]:
    return [SandboxNetworkRule(transform={"headers": headers})]


def backend_error(exc: Exception, doing: str) -> BackendError:
    """An SDK error as Paddock's: the reason becomes the runner's failure code."""
    if isinstance(exc, AuthenticationException):
        return BackendError(
            f"E2B refused the API key while trying to {doing} (check PADDOCK_E2B_API_KEY): {exc}",
            reason="e2b_auth",
        )
    if isinstance(exc, RateLimitException):
        return BackendError(
            f"E2B rate limit while trying to {doing}: {exc}", reason="e2b_rate_limited"
        )
    if isinstance(exc, NotFoundException):
        return BackendError(
            f"E2B: not found while trying to {doing}: {exc}", reason="e2b_not_found"
        )
    if isinstance(exc, TimeoutException):
        return BackendError(f"E2B timed out while trying to {doing}: {exc}", reason="e2b_timeout")
    if isinstance(exc, ServiceBusyException):
        return BackendError(f"E2B is unavailable ({doing}): {exc}", reason="e2b_unavailable")
    if isinstance(exc, InvalidArgumentException):
        return BackendError(f"E2B rejected the request to {doing}: {exc}", reason="e2b_invalid")
    if isinstance(exc, httpx.HTTPError | OSError):
        return BackendError(
            f"cannot reach E2B to {doing}: {type(exc).__name__}: {exc}", reason="e2b_unreachable"
        )
    if isinstance(exc, SandboxException):
        return BackendError(f"E2B failed to {doing}: {exc}", reason="backend_error")
    return BackendError(f"E2B failed to {doing}: {type(exc).__name__}: {exc}")
