"""The `RunnerBackend` port: what the control plane needs from a place that runs containers.

Every call is idempotent where it can be: names are derived from the runner id and everything
created carries the labels below, so a repeated provision or a destroy of something already gone
succeeds and nothing can be orphaned without being findable again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from paddock_core import Profile, SandboxLevel

__all__ = [
    "LABEL_CONTROLPLANE",
    "LABEL_MANAGED",
    "LABEL_ORG",
    "LABEL_RUNNER",
    "BackendCapabilities",
    "ObservedRunner",
    "ProbeResult",
    "RunnerBackend",
    "RunnerSpec",
]

LABEL_MANAGED = "io.paddock.managed"
LABEL_RUNNER = "io.paddock.runner-id"
LABEL_CONTROLPLANE = "io.paddock.controlplane-id"
LABEL_ORG = "io.paddock.org-id"


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a backend needs to start one runner. `env` holds no provider key, ever."""

    runner_id: str
    org_id: str
    image: str
    profile: Profile
    sandbox: SandboxLevel
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendCapabilities:
    sandboxes: frozenset[str]
    pause: bool = False


@dataclass(frozen=True)
class ProbeResult:
    """What a readiness probe saw. `state`: starting, ready, exited (with why) or missing."""

    state: Literal["starting", "ready", "exited", "missing"]
    detail: str = ""
    exit_code: int | None = None
    oom_killed: bool = False


@dataclass(frozen=True)
class ObservedRunner:
    runner_id: str
    controlplane_id: str
    status: str


class RunnerBackend(Protocol):
    name: str

    @property
    def capabilities(self) -> BackendCapabilities: ...

    async def provision(self, spec: RunnerSpec) -> dict[str, Any]:
        """Create and start the runner; return the reference the other calls take."""
        ...

    async def probe(self, ref: dict[str, Any]) -> ProbeResult: ...

    def agent_url(self, ref: dict[str, Any]) -> str:
        """Base URL of the agent's HTTP endpoint inside the runner (e.g. http://10.0.0.2:18789)."""
        ...

    async def stop(self, ref: dict[str, Any]) -> None: ...

    async def destroy(self, runner_id: str) -> None:
        """Remove every resource labelled with this runner id; missing ones count as removed."""
        ...

    async def list_runners(self) -> list[ObservedRunner]: ...

    async def close(self) -> None: ...
