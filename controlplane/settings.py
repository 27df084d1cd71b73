"""Control-plane settings (env prefix `PADDOCK_`), built in the entry point and passed in."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from paddock_core import CoreSettings

__all__ = ["ControlPlaneSettings"]


class ControlPlaneSettings(CoreSettings):
    host: str = Field("127.0.0.1", description="the API binds here; runners must not reach it")
    port: int = 8001
    controlplane_id: str = Field("default", description="labels everything this plane creates")
    backend: Literal["docker", "fake", "e2b"] = "docker"
    gateway_port: int = Field(8002, description="runners reach the gateway on this port")
    gateway_url_for_runners: str | None = Field(
        None, description="override of the gateway base URL given to runners (ends in /v1)"
    )
    images: dict[str, str] = Field(
        default_factory=lambda: {
            "openclaw": "paddock/runner-openclaw:latest",
            "probe": "paddock/runner-probe:latest",
        },
        description="runner image kinds a caller may choose, by name",
    )
    default_image: str = "openclaw"
    default_model: str = "fake-gpt"
    ready_timeout_s: float = Field(180.0, gt=0, description="provisioning → ready, seconds")
    probe_interval_s: float = Field(0.25, gt=0)
    message_timeout_s: float = Field(600.0, gt=0, description="one agent turn, seconds")
    on_budget_exhausted: Literal["ready", "stop"] = Field(
        "ready",
        description="when the gateway finds a session out of budget, the session is closed"
        " (reason budget_exhausted) and its runner goes back to ready, or is stopped",
    )
    follow_poll_s: float = Field(
        1.0, gt=0, description="followers re-read the store at least this often, seconds"
    )
    follow_heartbeat_s: float = Field(15.0, gt=0, description="SSE keepalive interval, seconds")
    checkpoint_interval_s: float = Field(
        300.0, gt=0, description="how often each org's audit head is signed, seconds"
    )
    transcript_purge_interval_s: float = Field(
        3600.0, gt=0, description="how often transcripts past their org's retention go, seconds"
    )
    # Confinement (the Docker backend and the egress proxy read the same names).
    egress_port: int = Field(8004, description="runners reach the egress proxy on this port")
    egress_dns_port: int = Field(8053, description="runners' DNS is redirected to this UDP port")
    egress_nflog_group: int | None = Field(
        8231, description="NFLOG group the host firewall logs refusals to (None: no audit)"
    )
    egress_provider_hosts: list[str] = Field(
        default_factory=list, description="more LLM provider hosts (as the egress proxy's)"
    )
    runner_subnet_pool: str = Field(
        "172.31.0.0/16", description="runner networks are carved from this (outside Docker's)"
    )
    runner_subnet_prefix: int = Field(28, ge=16, le=29, description="size of each runner network")
    runner_firewall: bool = Field(
        True, description="install the host firewall around runners (off: runners reach the host)"
    )
    watch_interval_s: float = Field(
        2.0,
        gt=0,
        description="reconcile period: how often the store is compared with the backend, seconds",
    )
    # Runner lifetime (see services/reconciler.py).
    runner_ttl_s: float | None = Field(
        86400.0, gt=0, description="maximum lifetime of a runner, seconds (None: unlimited)"
    )
    idle_timeout_s: float | None = Field(
        1800.0, gt=0, description="no message for this long suspends or stops a runner, seconds"
    )
    idle_action: Literal["suspend", "stop"] = Field(
        "suspend", description="what the idle timeout does (suspend: docker pause)"
    )
    shutdown_runners: Literal["keep", "stop"] = Field(
        "keep", description="what a graceful shutdown of the control plane does to live runners"
    )
    expired_sweep_grace_s: float = Field(
        60.0, ge=0, description="a container this long past its expiry label is removed, seconds"
    )
    # Warm pools (see services/pool.py).
    pools: dict[str, int] = Field(
        default_factory=dict,
        description='runners kept ready per "image/profile/sandbox", e.g. "probe/minimal/hardened"',
    )
    pool_refill_parallel: int = Field(
        1, ge=1, le=16, description="pooled runners started at once while refilling"
    )
    # E2B (backend "e2b"): runners in Firecracker microVMs; see runner_images/README.md.
    gateway_public_url: str | None = Field(
        None, description="the gateway as E2B runners reach it: public https URL ending in /v1"
    )
    e2b_api_key: SecretStr | None = None
    e2b_api_url: str | None = Field(None, description="default https://api.<domain>")
    e2b_domain: str | None = Field(None, description="default e2b.app")
    e2b_sandbox_url: str | None = Field(
        None, description="one URL for all sandbox traffic (E2B_SANDBOX_URL; the fake E2B)"
    )
    e2b_templates: dict[str, str] = Field(
        default_factory=lambda: {"openclaw": "paddock-openclaw", "probe": "paddock-probe"},
        description="E2B template per runner image kind (built from runner_images/e2b)",
    )
    e2b_egress_proxy_url: str | None = Field(
        None, description="public URL of the egress proxy; unset: only gateway_only profiles"
    )
    e2b_lease_s: int = Field(
        600, ge=30, description="E2B timeout of a runner's sandbox, renewed while it is live, s"
    )
    e2b_public_traffic: bool = Field(False, description="sandbox ports open without a token")
    e2b_inject_gateway_token: bool = Field(
        True, description="runner token in E2B's header rule, never in the VM"
    )
    e2b_dns_servers: list[str] | None = Field(
        None, description="resolvers a VM may reach (None: E2B's default; []: none)"
    )

    @field_validator("runner_ttl_s", "idle_timeout_s", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        """`off` (or empty) in the environment: no limit."""
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none", "null"):
            return None
        return value

    @model_validator(mode="after")
    def _check_periods(self) -> Self:
        if self.backend == "e2b" and self.watch_interval_s > self.e2b_lease_s / 2:
            # The reconciler's listing renews E2B leases; slower than lease/2 lets them lapse.
            raise ValueError("watch_interval_s must be at most e2b_lease_s / 2 on the e2b backend")
        for key, size in self.pools.items():
            if key.count("/") != 2 or size < 0:
                raise ValueError(f"pools: {key!r} must be image/profile/sandbox with a size >= 0")
        return self
