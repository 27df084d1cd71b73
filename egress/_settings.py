"""Settings of the egress proxy (env prefix `PADDOCK_`, inherited from the core settings)."""

from __future__ import annotations

from pydantic import Field

from paddock_core import CoreSettings

__all__ = ["EgressSettings"]


class EgressSettings(CoreSettings):
    egress_host: str = Field("0.0.0.0", description="the proxy and the DNS stub bind here")
    egress_port: int = Field(8004, ge=0, lt=65536, description="HTTP proxy port (0: any)")
    egress_dns_port: int = Field(8053, ge=0, lt=65536, description="DNS stub port (UDP)")
    egress_nflog_group: int | None = Field(
        8231,
        ge=1,
        lt=65536,
        description="NFLOG group of the host firewall's refusals (None: do not audit them)",
    )
    egress_resolver: str = Field(
        "system", description="`system` (the host's resolver) or HOST[:PORT] of a DNS server"
    )
    egress_provider_hosts: list[str] = Field(
        default_factory=list, description="more LLM provider hosts, denied like providers.yaml's"
    )
    egress_resolve_provider_hosts: bool = Field(
        True, description="also deny the addresses provider names resolve to (looked up hourly)"
    )
    provider_base_urls: dict[str, str] = Field(
        default_factory=dict, description="the gateway's provider URL overrides: hosts denied too"
    )
    egress_audit_window_s: float = Field(
        2.0, gt=0, description="identical decisions within this many seconds are counted"
    )
    egress_connect_timeout_s: float = Field(10.0, gt=0, description="upstream connect, seconds")
    egress_idle_timeout_s: float = Field(300.0, gt=0, description="idle tunnel, seconds")
    egress_max_connections: int = Field(64, gt=0, description="open connections per runner")
