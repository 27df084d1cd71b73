"""An in-memory backend for fast tests of the control plane's own logic.

It runs nothing. Scripted outcomes (an image that is missing, a runner that never becomes ready,
one that exits) let tests drive the failure paths of the service through the real API.
`agent_base_url` may point at any real HTTP server that speaks the runner contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paddock_core import BackendError

from .base import BackendCapabilities, ObservedRunner, ProbeResult, RunnerSpec

__all__ = ["FakeBackend", "FakeRunner"]


@dataclass
class FakeRunner:
    spec: RunnerSpec
    status: str = "running"
    probes: int = 0


@dataclass
class FakeBackend:
    """`ready_after`: probes answered `starting` before `ready`; None = never ready."""

    name: str = "fake"
    ready_after: int | None = 0
    fail_provision: str | None = None
    exit_on_probe: tuple[int, str] | None = None
    agent_base_url: str = "http://127.0.0.1:9"
    sandboxes: frozenset[str] = frozenset({"hardened", "gvisor"})
    runners: dict[str, FakeRunner] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    @property
    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(sandboxes=self.sandboxes, pause=False)

    async def provision(self, spec: RunnerSpec) -> dict[str, Any]:
        self.calls.append(("provision", spec.runner_id))
        if self.fail_provision:
            raise BackendError(self.fail_provision, reason="backend_error")
        self.runners.setdefault(spec.runner_id, FakeRunner(spec))
        return {"runner_id": spec.runner_id}

    async def probe(self, ref: dict[str, Any]) -> ProbeResult:
        runner = self.runners.get(ref["runner_id"])
        if runner is None:
            return ProbeResult("missing", "fake runner is gone")
        if runner.status == "exited":
            return ProbeResult("exited", "fake runner was stopped", exit_code=0)
        runner.probes += 1
        if self.exit_on_probe is not None:
            code, detail = self.exit_on_probe
            runner.status = "exited"
            return ProbeResult("exited", detail, exit_code=code)
        if self.ready_after is not None and runner.probes > self.ready_after:
            return ProbeResult("ready")
        return ProbeResult("starting", "fake runner is starting")

    def agent_url(self, ref: dict[str, Any]) -> str:  # noqa: ARG002 (one agent for all)
        return self.agent_base_url

    async def stop(self, ref: dict[str, Any]) -> None:
        self.calls.append(("stop", ref["runner_id"]))
        if ref["runner_id"] in self.runners:
            self.runners[ref["runner_id"]].status = "exited"

    async def destroy(self, runner_id: str) -> None:
        self.calls.append(("destroy", runner_id))
        self.runners.pop(runner_id, None)

    async def list_runners(self) -> list[ObservedRunner]:
        return [ObservedRunner(rid, "fake", r.status) for rid, r in self.runners.items()]

    async def close(self) -> None:
        return None
