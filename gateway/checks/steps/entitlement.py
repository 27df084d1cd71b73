"""Step 4, plan entitlement (403): streaming, tools and reasoning only where the plan has them."""

from __future__ import annotations

from .._base import ALLOW, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps

NAME = "entitlement"


class EntitlementCheck:
    name = NAME

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def _deny(self, feature: str) -> Deny:
        return Deny(
            NAME,
            f"not_entitled_{feature}",
            f"plan {self.plan.name!r} does not include {feature}",
            data={"plan": self.plan.name, "feature": feature},
        )

    async def check(self, ctx: CallContext) -> Decision:
        granted = self.plan.entitlements
        if ctx.stream and not granted.streaming:
            return self._deny("streaming")
        if ctx.tools and not granted.tools:
            return self._deny("tools")
        if not granted.reasoning and ctx.reasoning != (None, None):
            return self._deny("reasoning")
        return ALLOW


def _build(_settings: StepSettings, plan: Plan, _deps: ChainDeps) -> EntitlementCheck:
    return EntitlementCheck(plan)


SPEC = StepSpec(NAME, StepSettings, _build)
