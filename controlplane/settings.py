"""Control-plane settings (env prefix `PADDOCK_`), built in the entry point and passed in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from paddock_core import CoreSettings

__all__ = ["ControlPlaneSettings"]


class ControlPlaneSettings(CoreSettings):
    host: str = Field("127.0.0.1", description="the API binds here; runners must not reach it")
    port: int = 8001
    controlplane_id: str = Field("default", description="labels everything this plane creates")
    backend: Literal["docker", "fake"] = "docker"
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
    follow_poll_s: float = Field(
        1.0, gt=0, description="followers re-read the store at least this often, seconds"
    )
    follow_heartbeat_s: float = Field(15.0, gt=0, description="SSE keepalive interval, seconds")
    checkpoint_interval_s: float = Field(
        300.0, gt=0, description="how often each org's audit head is signed, seconds"
    )
