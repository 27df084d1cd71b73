"""The `RunnerBackend` port: what the control plane needs from a place that runs containers.

Every call is idempotent where it can be: names are derived from the runner id and everything
created carries the labels below, so a repeated provision or a destroy of something already gone
succeeds and nothing can be orphaned without being findable again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import httpx

from paddock_core import Profile, SandboxLevel

__all__ = [
    "LABEL_CONTROLPLANE",
    "LABEL_EXPIRES",
    "LABEL_MANAGED",
    "LABEL_ORG",
    "LABEL_POOL",
    "LABEL_RUNNER",
    "BackendCapabilities",
    "ObservedRunner",
    "ProbeResult",
    "RunnerBackend",
    "RunnerSpec",
    "SupportsAgentTransport",
    "SupportsPause",
    "SupportsPool",
]

LABEL_MANAGED = "io.paddock.managed"
LABEL_RUNNER = "io.paddock.runner-id"
LABEL_CONTROLPLANE = "io.paddock.controlplane-id"
LABEL_ORG = "io.paddock.org-id"
LABEL_EXPIRES = "io.paddock.expires-at"
"""Unix time (seconds) after which the runner must not exist: anything may sweep it then."""
LABEL_POOL = "io.paddock.pool"
"""The warm pool a container was made for; its org label is then the pool owner's, not the
claimant's (labels cannot change after creation)."""


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a backend needs to start one runner. `env` holds no provider key, ever."""

    runner_id: str
    org_id: str
    image: str
    profile: Profile
    sandbox: SandboxLevel
    env: dict[str, str] = field(default_factory=dict)
    expires_at: float | None = None
    """Unix time of the runner's end of life (its TTL), put on the container as a label."""
    pool: str | None = None
    """Set for a warm-pool runner: `env` then holds no per-runner secret; they come at claim."""


@dataclass(frozen=True)
class BackendCapabilities:
    sandboxes: frozenset[str]
    pause: bool = False
    pool: bool = False
    """Pooled runners can be handed their token and config after start (`SupportsPool`)."""
    networks: frozenset[str] | None = None
    """Profile network modes the backend can enforce; None: every mode."""

    def refusal(self, profile: Profile, sandbox: str) -> str | None:
        """Why this backend cannot honour `profile` in sandbox level `sandbox` (a 4xx for the
        caller, before anything is created), or None."""
        if sandbox not in self.sandboxes:
            return f"sandbox {sandbox!r} is not available on this backend"
        if self.networks is not None and profile.network not in self.networks:
            return (
                f"profile {profile.name!r} needs network {profile.network!r}, "
                "which this backend cannot enforce"
            )
        return None


@dataclass(frozen=True)
class ProbeResult:
    """What a readiness probe saw. `state`: starting, ready, exited (with why) or missing."""

    state: Literal["starting", "ready", "exited", "missing"]
    detail: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    reason: str | None = None
    """Why it failed, when the backend knows better than the exit code (`pids_exhausted`)."""


@dataclass(frozen=True)
class ObservedRunner:
    """One runner as the backend sees it. `status`: created, running, paused, exited, dead,
    or `network` (its network exists without a container: a provision cut short)."""

    runner_id: str
    controlplane_id: str
    status: str
    reason: str | None = None
    """A reason to fail it even though it runs (`pids_exhausted`, `oom_killed`)."""
    expires_at: float | None = None


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

    async def stop(self, ref: dict[str, Any]) -> None:
        """Stop the runner's container; one already stopped or gone counts as stopped."""
        ...

    async def destroy(self, runner_id: str) -> None:
        """Remove every resource labelled with this runner id; missing ones count as removed."""
        ...

    async def list_runners(self) -> list[ObservedRunner]: ...

    async def close(self) -> None: ...


@runtime_checkable
class SupportsAgentTransport(Protocol):
    """A backend whose agents are reached through its own HTTP transport (E2B: routing and the
    sandbox's traffic token). The control plane's HTTP client to agents uses it."""

    def agent_transport(self) -> httpx.AsyncBaseTransport: ...


@runtime_checkable
class SupportsPause(Protocol):
    """A backend that can pause a runner and resume it where it was (`capabilities.pause`)."""

    async def pause(self, ref: dict[str, Any]) -> None: ...

    async def resume(self, ref: dict[str, Any]) -> None: ...


@runtime_checkable
class SupportsPool(Protocol):
    """A backend whose runners can start without secrets and be claimed later
    (`capabilities.pool`): `claim_env` is the environment the control plane pushes to the
    agent at claim (the spec's env, plus what the backend derives from it, e.g. the proxy),
    once the backend has made ready what the claim needs outside the runner (E2B: the header
    rule that carries the new token)."""

    async def claim_env(self, spec: RunnerSpec, ref: dict[str, Any]) -> dict[str, str]: ...
