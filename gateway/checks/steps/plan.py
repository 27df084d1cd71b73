"""Step 1, plan enforcement (403): the org's plan is open and includes this endpoint."""

from __future__ import annotations

from .._base import ALLOW, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps

NAME = "plan"


class PlanCheck:
    name = NAME

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    async def check(self, ctx: CallContext) -> Decision:
        if not self.plan.active:
            return Deny(
                NAME,
                "plan_inactive",
                f"org {ctx.org_id}'s plan {self.plan.name!r} is not active",
                data={"plan": self.plan.name},
            )
        if ctx.endpoint not in self.plan.endpoints:
            return Deny(
                NAME,
                "plan_endpoint_not_included",
                f"plan {self.plan.name!r} does not include the {ctx.endpoint} endpoint",
                data={"plan": self.plan.name, "endpoint": ctx.endpoint},
            )
        return ALLOW


def _build(_settings: StepSettings, plan: Plan, _deps: ChainDeps) -> PlanCheck:
    return PlanCheck(plan)


SPEC = StepSpec(NAME, StepSettings, _build)
