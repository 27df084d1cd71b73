"""The gateway's settings: the shared core settings plus where and how to reach providers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from paddock_core import CoreSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(CoreSettings):
    """Settings of the governance gateway (env prefix `PADDOCK_`, inherited)."""

    gateway_host: str = "0.0.0.0"
    gateway_port: int = 8002
    provider_base_urls: dict[str, str] = Field(
        default_factory=dict,
        description="per provider name, overrides providers.yaml base_url",
    )
    provider_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="per provider name; else the env var named by the provider's key_env",
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict, description="alias -> model, over policies/aliases.yaml"
    )
    model_fallbacks: dict[str, list[str]] = Field(
        default_factory=dict, description="model -> models to try next, over aliases.yaml"
    )
    upstream_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="seconds to wait for each upstream read, write or pool slot",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="seconds to connect upstream")
    max_connections_per_provider: int = Field(default=1000, gt=0)
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="largest request body accepted, in bytes"
    )
    max_retries: int = Field(
        default=2, ge=0, description="retries of a transient failure (connect, 429, 5xx)"
    )
    retry_base_s: float = Field(default=0.25, ge=0, description="first backoff, in seconds")
    retry_max_s: float = Field(
        default=8.0, ge=0, description="longest backoff (and Retry-After honoured), in seconds"
    )
    breaker_failures: int = Field(
        default=5, gt=0, description="consecutive failures that open a provider's breaker"
    )
    breaker_open_s: float = Field(
        default=30.0, gt=0, description="seconds an open breaker waits before one probe call"
    )
    stream_keepalive_s: float = Field(
        default=10.0, gt=0, description="SSE comment interval while waiting for a first token"
    )
    default_max_tokens: int = Field(
        default=4096, gt=0, description="max_tokens sent to Anthropic when the client sent none"
    )
    cache_enabled: bool = Field(
        default=False, description="the response cache for orgs that did not choose"
    )
    cache_ttl_s: float = Field(default=3600.0, gt=0, description="seconds a cached answer lives")
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    cache_max_entry_bytes: int = Field(default=1024 * 1024, gt=0)
    org_settings_ttl_s: float = Field(
        default=5.0, ge=0, description="seconds an org's gateway settings are kept in memory"
    )
    durable_before_answer: bool = Field(
        default=True,
        description="True: a call's record and audit event are committed before the end of its"
        " answer reaches the client (spend read after an answer includes it). False: written"
        " behind (group commit, milliseconds later) so answers never wait on the disk; budget"
        " checks still count the unwritten spend",
    )
    access_log: bool = Field(
        default=False,
        description="uvicorn's access log line per request (`paddock gateway`). Off: every LLM"
        " call is already recorded in the store and the audit trail, and the line costs about"
        " a twentieth of a call's CPU",
    )
    approval_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="a held call re-reads its approval at least this often, in seconds (a"
        " decision wakes it at once through the notifier; this is the fallback)",
    )
    approval_retention_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="seconds a finished approval (refused, expired or run) stays in the store;"
        " its request, decision and run stay in the audit trail",
    )
    approval_sweep_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds between sweeps that expire overdue approvals (and drop their"
        " held bodies)",
    )
    metrics_public: bool = Field(
        default=False, description="serve /metrics without the admin key (trusted networks only)"
    )
    counters_failure_mode: Literal["closed", "open"] = Field(
        default="closed",
        description="when the counters' Redis is unreachable: closed answers 503, open lets"
        " calls through unmetered (rate limits and budgets then do not hold)",
    )
    counters_prefix: str = Field(
        default="paddock:", description="prefix of every Redis key of the counters"
    )
    reservation_lease_s: float = Field(
        default=300.0,
        gt=0,
        description="seconds a budget reservation lives if its call never settles (a crashed"
        " process); longer than the longest call",
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key signing budget alert webhooks"
    )
