"""Step 6, cost estimate (403): a call whose worst case (input estimate + output cap at the
output price) is above the per-call ceiling is refused; the estimate is in the error body."""

from __future__ import annotations

from pydantic import Field

from .._base import ALLOW, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps

NAME = "cost_estimate"


class CostEstimateSettings(StepSettings):
    max_call_usd: float | None = Field(default=None, gt=0, description="USD per call; None: none")


class CostEstimateCheck:
    name = NAME

    def __init__(self, settings: CostEstimateSettings, default_max_tokens: int) -> None:
        self.max_call_usd = settings.max_call_usd
        self.default_max_tokens = default_max_tokens

    async def check(self, ctx: CallContext) -> Decision:
        if self.max_call_usd is None:
            return ALLOW
        cap = ctx.max_output_tokens or self.default_max_tokens
        estimate = ctx.worst_case_usd(cap)
        if estimate > self.max_call_usd:
            return Deny(
                NAME,
                "cost_estimate_exceeded",
                f"this call could cost up to ${estimate:.6f} ({ctx.estimated_prompt_tokens} input"
                f" tokens, up to {cap} output tokens); the per-call limit is"
                f" ${self.max_call_usd:.6f}. Lower max_tokens or shorten the input",
                data={
                    "estimate_usd": round(estimate, 6),
                    "max_call_usd": self.max_call_usd,
                    "max_output_tokens": cap,
                },
            )
        return ALLOW


def _build(settings: CostEstimateSettings, _plan: Plan, deps: ChainDeps) -> CostEstimateCheck:
    return CostEstimateCheck(settings, deps.default_max_tokens)


SPEC = StepSpec(NAME, CostEstimateSettings, _build)
