"""Egress rules and the decision procedure. Pure: no I/O, no clock.

A rule is one string: `host`, `host:port`, `*.suffix[:port]`, `*[:port]`, an IP address or a
CIDR network (`10.1.2.3`, `10.0.0.0/8:443`, `[2001:db8::1]:443`). `*.example.com` matches the
names under example.com, never example.com itself. Names match names and networks match
addresses: `*` is the only rule that matches both.

The decision for one destination, in order (the first that applies wins):

    1. the profile allows no egress (gateway_only)            → deny  profile:gateway_only
    2. the host is an LLM provider host (name or address)     → deny  provider_host
    3. a deny rule matches                                     → deny  deny <rule>
    4. an allow rule matches (open profiles: the implicit `*`) → go on, else deny  no_allow_rule
    5. every address the name resolves to is checked: provider address → deny; an address of
       this host → deny (host_address); a non-global address (private, loopback, link-local,
       shared, documentation, multicast, ...) outside the runner's explicitly opened ranges
       → deny (private_address); then deny rules again (they may name networks)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from paddock_core import InvalidRequestError

__all__ = [
    "IPAddress",
    "IPNetwork",
    "NETWORK_MODES",
    "Decision",
    "HostRule",
    "NetworkMode",
    "ProviderHosts",
    "RunnerRules",
    "check_address",
    "check_target",
    "parse_network",
    "valid_hostname",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NetworkMode = Literal["gateway_only", "allowlist", "open_except_providers"]
NETWORK_MODES: tuple[NetworkMode, ...] = ("gateway_only", "allowlist", "open_except_providers")

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_MAX_RULE = 300


def valid_hostname(host: str) -> bool:
    """A DNS name in lower-case ASCII (IDNs come as punycode), without a trailing dot."""
    return len(host) <= 253 and bool(_HOSTNAME.match(host))


def ip_of(host: str) -> IPAddress | None:
    """The address `host` spells, with IPv4-mapped IPv6 addresses unwrapped; else None."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_network(text: str, *, field_name: str = "private_ranges") -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidRequestError(
            f"{text!r} is not an IP network (e.g. 10.0.0.0/8)", field=field_name
        ) from None


@dataclass(frozen=True)
class HostRule:
    """One parsed rule. `port` None means any port."""

    text: str
    kind: Literal["any", "exact", "suffix", "network"]
    name: str = ""
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str, *, field_name: str = "rules") -> HostRule:
        raw = text.strip().lower()
        if not raw or len(raw) > _MAX_RULE:
            raise InvalidRequestError(f"empty or overlong egress rule {text!r}", field=field_name)
        host, port = _split_port(raw, text, field_name)
        if host == "*":
            return cls(raw, "any", port=port)
        if host.startswith("*."):
            if not valid_hostname(host[2:]):
                raise InvalidRequestError(f"bad wildcard in rule {text!r}", field=field_name)
            return cls(raw, "suffix", name=host[2:], port=port)
        if "*" in host:
            raise InvalidRequestError(
                f"rule {text!r}: `*` may only be the whole host or a leading `*.`",
                field=field_name,
            )
        if (addr := ip_of(host)) is not None:
            return cls(raw, "network", network=ipaddress.ip_network(addr), port=port)
        if "/" in host:
            network = parse_network(host, field_name=field_name)
            return cls(raw, "network", network=network, port=port)
        if not valid_hostname(host.rstrip(".")):
            raise InvalidRequestError(f"rule {text!r} names no valid host", field=field_name)
        return cls(raw, "exact", name=host.rstrip("."), port=port)

    def _port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_name(self, host: str, port: int) -> bool:
        if not self._port_ok(port):
            return False
        if self.kind == "any":
            return True
        if self.kind == "exact":
            return host == self.name
        if self.kind == "suffix":
            return host.endswith("." + self.name)
        return False

    def matches_address(self, addr: IPAddress, port: int) -> bool:
        if not self._port_ok(port):
            return False
        if self.kind == "any":
            return True
        return self.kind == "network" and self.network is not None and addr in self.network

    def covers(self, other: HostRule) -> bool:
        """Whether everything `other` allows is allowed by this rule too (org limits)."""
        if self.port is not None and other.port != self.port:
            return False
        if self.kind == "any":
            return True
        if self.kind == "exact":
            return other.kind == "exact" and other.name == self.name
        if self.kind == "suffix":
            inside = other.name.endswith("." + self.name)
            return other.kind in ("exact", "suffix") and (
                inside or (other.kind == "suffix" and other.name == self.name)
            )
        return (
            other.kind == "network"
            and self.network is not None
            and other.network is not None
            and other.network.version == self.network.version
            and other.network.subnet_of(self.network)  # type: ignore[arg-type]
        )


def _split_port(raw: str, text: str, field_name: str) -> tuple[str, int | None]:
    if raw.startswith("["):  # [v6]:port or [v6/len]:port
        host, _, rest = raw[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise InvalidRequestError(f"bad rule {text!r}", field=field_name)
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
    else:  # a name, `*`, IPv4, or a bare IPv6 address/network (no port)
        host, port_text = raw, ""
    if port_text in ("", "*"):
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidRequestError(f"bad port in rule {text!r}", field=field_name)
    return host, int(port_text)


def parse_rules(texts: Iterable[str], *, field_name: str) -> tuple[HostRule, ...]:
    return tuple(HostRule.parse(t, field_name=field_name) for t in texts)


@dataclass(frozen=True)
class RunnerRules:
    """The effective egress rules of one runner: its profile's, plus its overrides."""

    mode: NetworkMode
    allow: tuple[HostRule, ...] = ()
    deny: tuple[HostRule, ...] = ()
    private_ranges: tuple[IPNetwork, ...] = ()
    """Non-global ranges this runner may reach (opened explicitly); never this host's own."""


@dataclass(frozen=True)
class ProviderHosts:
    """LLM provider hosts: denied to every runner, by name and by the addresses they resolve to."""

    names: tuple[HostRule, ...] = ()
    """Rules for names and addresses (a provider URL may name an address); ports ignored."""
    addresses: frozenset[IPAddress] = field(default_factory=frozenset)
    """What the provider names resolved to (refreshed by the proxy)."""

    def matches_name(self, host: str) -> bool:
        return any(r.kind != "network" and r.matches_name(host, r.port or 1) for r in self.names)

    def matches_address(self, addr: IPAddress) -> bool:
        return addr in self.addresses or any(
            r.kind == "network" and r.matches_address(addr, r.port or 1) for r in self.names
        )


@dataclass(frozen=True)
class Decision:
    verdict: Literal["allow", "deny"]
    rule: str

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"


def _deny(rule: str) -> Decision:
    return Decision("deny", rule)


def check_target(rules: RunnerRules, providers: ProviderHosts, host: str, port: int) -> Decision:
    """Steps 1-4 (before any name is resolved). `host` is lower-case, without brackets."""
    if rules.mode == "gateway_only":
        return _deny("profile:gateway_only")
    addr = ip_of(host)
    if addr is None and not valid_hostname(host):
        return _deny("bad_host")
    if not 0 < port < 65536:
        return _deny("bad_port")
    if addr is not None:
        if providers.matches_address(addr):
            return _deny("provider_host")
        hit = next((r for r in rules.deny if r.matches_address(addr, port)), None)
        allow = next((r for r in rules.allow if r.matches_address(addr, port)), None)
    else:
        if providers.matches_name(host):
            return _deny("provider_host")
        hit = next((r for r in rules.deny if r.matches_name(host, port)), None)
        allow = next((r for r in rules.allow if r.matches_name(host, port)), None)
    if hit is not None:
        return _deny(f"deny {hit.text}")
    if allow is not None:
        return Decision("allow", f"allow {allow.text}")
    if rules.mode == "open_except_providers":
        return Decision("allow", "profile:open_except_providers")
    return _deny("no_allow_rule")


def check_address(
    rules: RunnerRules,
    providers: ProviderHosts,
    addr: IPAddress,
    port: int,
    *,
    is_local: bool,
) -> Decision | None:
    """Step 5 for one resolved address: a denial, or None when the address may be used.

    `is_local`: the address belongs to this host (the caller checks; see `egress._net`).
    """
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if providers.matches_address(addr):
        return _deny("provider_host")
    if is_local:
        return _deny("host_address")
    if not addr.is_global or addr.is_multicast:
        if not any(addr in net for net in rules.private_ranges):
            return _deny("private_address")
    hit = next((r for r in rules.deny if r.matches_address(addr, port) and r.kind != "any"), None)
    if hit is not None:
        return _deny(f"deny {hit.text}")
    return None
