"""A runner's egress rules: read them, and change them live (within what its org allows).

The egress proxy reads the runner record on every request, so a change applies to the next
connection the runner opens. Every change is audited with the rules before and after.
"""

from __future__ import annotations

from typing import Any

from egress import EgressOverride, EgressPolicy
from paddock_core import AppendAudit, AuditEvent, RunnerRecord, Store, UpdateRunner

from .runners import Principal, RunnerService

__all__ = ["EgressService"]


class EgressService:
    def __init__(self, *, store: Store, runners: RunnerService, policy: EgressPolicy) -> None:
        self._store = store
        self._runners = runners
        self._policy = policy

    def view(self, runner: RunnerRecord) -> dict[str, Any]:
        rules = self._policy.rules_for(runner.profile, runner.egress)
        return {
            "runner_id": runner.id,
            "profile": runner.profile,
            "override": EgressOverride.model_validate(runner.egress).model_dump(mode="json"),
            "effective": self._policy.describe(rules),
        }

    async def get(self, who: Principal, runner_id: str) -> dict[str, Any]:
        return self.view(await self._runners.get(who, runner_id))

    async def put(self, who: Principal, runner_id: str, override: EgressOverride) -> dict[str, Any]:
        """Replace the runner's own rules. 403 outside the org's limits, 409 on a race."""
        runner = await self._runners.get(who, runner_id)
        checked = self._policy.validate_override(runner.org_id, runner.profile, override)
        after = checked.model_dump(mode="json")
        event = AuditEvent(
            org_id=runner.org_id,
            actor=who.actor,
            type="runner.egress_changed",
            runner_id=runner.id,
            session_id=runner.session_id,
            data={"before": runner.egress, "after": after},
        )
        result = await self._store.apply(
            [UpdateRunner(runner.id, runner.version, {"egress": after}), AppendAudit(event)]
        )
        return self.view(result.runners[runner.id])
