"""Step 15, human approval (202, or a held connection): a call matching a rule (a worst-case
estimate above a threshold, a model, a tool) waits for a human. The step only decides that a
call must wait; `gateway._approvals` keeps it (queue or hold) and runs it once approved, with
`approved=True` so every earlier step still applies to it.

Rules, first match wins: `models` (globs on the requested name, the routed model and
`provider/model`), then `tools` (globs on the names of the tools the request offers), then
`estimate_usd_over` (USD; the input estimate plus the output cap at the model's price).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._base import ALLOW, CallContext, Decision, Hold
from .._config import Plan, StepSettings, StepSpec, matches_any
from .._deps import ChainDeps

NAME = "approval"


class ApprovalRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    estimate_usd_over: float | None = Field(
        default=0.50, ge=0, description="USD: hold calls whose worst case is above; None: off"
    )
    models: tuple[str, ...] = ()
    """Globs: hold every call to these models."""
    tools: tuple[str, ...] = ()
    """Globs: hold every call that offers one of these tools."""


class ApprovalSettings(StepSettings):
    rules: ApprovalRules = ApprovalRules()
    mode: Literal["queue", "hold"] = "hold"
    """queue: answer 202 with the approval's id at once; hold: keep the connection open."""
    timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=7 * 86400,
        description="seconds a human has to decide; then the call is rejected (expired)",
    )
    result_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86400,
        description="seconds an approved call waits to be run (fetched, in queue mode)",
    )


class ApprovalCheck:
    name = NAME

    def __init__(self, settings: ApprovalSettings, default_max_tokens: int) -> None:
        self.rules = settings.rules
        self.facts = {
            "mode": settings.mode,
            "timeout_s": settings.timeout_s,
            "result_ttl_s": settings.result_ttl_s,
        }
        self.default_max_tokens = default_max_tokens

    def _match(self, ctx: CallContext, estimate: float) -> tuple[str, dict[str, Any]] | None:
        names = (ctx.requested_model, ctx.model, f"{ctx.provider}/{ctx.model}")
        if self.rules.models and matches_any(names, self.rules.models):
            return "model", {"matched": ctx.requested_model}
        if self.rules.tools and ctx.tools:
            tools = sorted({t for t in ctx.tools if matches_any((t,), self.rules.tools)})
            if tools:
                return "tool", {"matched": tools}
        limit = self.rules.estimate_usd_over
        if limit is not None and estimate > limit:
            return "estimate_usd_over", {"estimate_usd_over": limit}
        return None

    async def check(self, ctx: CallContext) -> Decision:
        if ctx.approved:
            return ALLOW
        estimate = ctx.worst_case_usd(ctx.max_output_tokens or self.default_max_tokens)
        found = self._match(ctx, estimate)
        if found is None:
            return ALLOW
        rule, facts = found
        if rule == "model":
            why = f"model {ctx.requested_model!r} needs a human's approval"
        elif rule == "tool":
            why = f"the tools {', '.join(facts['matched'])} need a human's approval"
        else:
            why = (
                f"this call could cost up to ${estimate:.6f}, above the"
                f" ${facts['estimate_usd_over']:.2f} that needs a human's approval"
            )
        return Hold(
            NAME,
            "approval_required",
            why,
            data={"rule": rule, "estimate_usd": round(estimate, 6), **facts, **self.facts},
        )


def _build(settings: ApprovalSettings, _plan: Plan, deps: ChainDeps) -> ApprovalCheck:
    return ApprovalCheck(settings, deps.default_max_tokens)


SPEC = StepSpec(NAME, ApprovalSettings, _build)
