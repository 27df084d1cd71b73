"""The gateway's settings: the shared core settings plus where and how to reach providers."""

from __future__ import annotations

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
    upstream_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="seconds to wait for each upstream read, write or pool slot",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="seconds to connect upstream")
