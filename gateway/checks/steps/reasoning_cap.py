"""Step 5, reasoning-token cap (400 `reasoning_cap_exceeded`): the most reasoning ("thinking")
tokens one call may ask for, per plan or org, in each protocol's terms:

- Anthropic `thinking.budget_tokens` is compared with the cap as is;
- OpenAI `reasoning_effort` (chat) / `reasoning.effort` (responses) is a level, mapped to
  tokens by `effort_tokens` (the defaults match the budgets the gateway gives Anthropic models
  for each level).

`mode: deny` refuses a request above the cap; `mode: clamp` lowers it (the budget to the cap;
the effort to the highest level within it; Anthropic thinking off when the cap is below its
1,024-token minimum) and notes it in the audit.

Counted in the reservation: reasoning tokens are billed as output, and every protocol's
output cap (`max_tokens`, `max_completion_tokens`, `max_output_tokens`) bounds them. So a
request asking for reasoning leaves this step with an output cap: OpenAI, at most the cap plus
`answer_tokens` (the only hard limit on an OpenAI model's reasoning); Anthropic, the client's
`max_tokens` (which holds the budget), else the budget plus `answer_tokens`. The cost estimate
and budget steps after this one reserve for that cap: the reasoning is in what they hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from .._base import ALLOW, Allow, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._content import with_max_output_tokens
from .._deps import ChainDeps

NAME = "reasoning_cap"

# Anthropic refuses a thinking budget below this many tokens.
_ANTHROPIC_MIN_BUDGET = 1024

EFFORT_TOKENS = {"none": 0, "minimal": 512, "low": 1024, "medium": 4096, "high": 16384}
"""Tokens per OpenAI effort level: the budgets the gateway gives Anthropic models for them."""


class ReasoningCapSettings(StepSettings):
    max_reasoning_tokens: int | None = Field(
        default=None, ge=0, description="tokens of reasoning one call may ask for; None: no cap"
    )
    mode: Literal["deny", "clamp"] = "deny"
    effort_tokens: dict[str, int] = Field(
        default_factory=dict,
        description="tokens each OpenAI effort level counts for, over EFFORT_TOKENS (an org"
        " naming one level keeps the others)",
    )
    answer_tokens: int | None = Field(
        default=None,
        gt=0,
        description="tokens for the answer beyond the reasoning, in the output"
        " cap this step bounds; None: the gateway's default_max_tokens",
    )


class ReasoningCapCheck:
    name = NAME

    def __init__(self, settings: ReasoningCapSettings, default_max_tokens: int) -> None:
        self.cap = settings.max_reasoning_tokens
        self.mode = settings.mode
        self.efforts = {**EFFORT_TOKENS, **settings.effort_tokens}
        self.answer_tokens = settings.answer_tokens or default_max_tokens

    def _deny(self, field: str, requested: int | str, tokens: int) -> Deny:
        return Deny(
            NAME,
            "reasoning_cap_exceeded",
            f"{field}={requested!r} asks for up to {tokens} reasoning tokens; this org's limit"
            f" is {self.cap}",
            status=400,
            data={"field": field, "requested_tokens": tokens, "max_reasoning_tokens": self.cap},
        )

    def _capped(self, ctx: CallContext, body: Mapping[str, Any], reasoning: int) -> dict[str, Any]:
        """`body` with an output cap of `reasoning` + answer tokens."""
        return with_max_output_tokens(ctx.endpoint, body, reasoning + self.answer_tokens)

    async def check(self, ctx: CallContext) -> Decision:
        effort, budget = ctx.reasoning
        if self.cap is None or effort is None:
            return ALLOW
        if ctx.endpoint in ("messages", "count_tokens"):
            return self._anthropic(ctx, budget)
        return self._openai(ctx, effort)

    def _anthropic(self, ctx: CallContext, budget: int | None) -> Decision:
        assert self.cap is not None
        if budget is None:
            return ALLOW  # no budget given: the provider refuses the request itself
        if budget <= self.cap:
            # Anthropic's max_tokens holds the budget already; only a missing one is set.
            if ctx.max_output_tokens:
                return ALLOW
            return Allow(body=self._capped(ctx, ctx.body, budget))
        if self.mode == "deny":
            return self._deny("thinking.budget_tokens", budget, budget)
        out = dict(ctx.body)
        if self.cap < _ANTHROPIC_MIN_BUDGET:
            out["thinking"] = {"type": "disabled"}
            return Allow(body=out, note=f"thinking off (asked {budget} tokens, cap {self.cap})")
        out["thinking"] = {**ctx.body["thinking"], "budget_tokens": self.cap}
        if not ctx.max_output_tokens:
            out = self._capped(ctx, out, self.cap)
        return Allow(body=out, note=f"thinking budget {budget} -> {self.cap} tokens")

    def _openai(self, ctx: CallContext, effort: str) -> Decision:
        assert self.cap is not None
        field = "reasoning_effort" if ctx.endpoint == "chat" else "reasoning.effort"
        tokens = self.efforts.get(effort)
        if tokens is None:
            return Deny(
                NAME,
                "unknown_reasoning_effort",
                f"{field}={effort!r} is not a known effort; known: {sorted(self.efforts)}",
                status=400,
                data={"field": field, "known": sorted(self.efforts)},
            )
        note = None
        chosen = effort
        if tokens > self.cap:
            fitting = [(t, e) for e, t in self.efforts.items() if t <= self.cap]
            if self.mode == "deny" or not fitting:
                return self._deny(field, effort, tokens)
            tokens, chosen = max(fitting)
            note = f"reasoning effort {effort} -> {chosen}"
        body = self._with_effort(ctx, chosen)
        given = ctx.max_output_tokens
        if tokens > 0 and (given is None or given > self.cap + self.answer_tokens):
            # An effort level is a hint, not a limit (a model may reason past its estimate):
            # the output cap is what holds reasoning to the org's cap, and what is reserved.
            body = self._capped(ctx, body, self.cap)
        if body is ctx.body:
            return ALLOW
        return Allow(body=body, note=note)

    @staticmethod
    def _with_effort(ctx: CallContext, effort: str) -> Mapping[str, Any]:
        if ctx.reasoning[0] == effort:
            return ctx.body
        if ctx.endpoint == "chat":
            return {**ctx.body, "reasoning_effort": effort}
        return {**ctx.body, "reasoning": {**ctx.body["reasoning"], "effort": effort}}


def _build(settings: ReasoningCapSettings, _plan: Plan, deps: ChainDeps) -> ReasoningCapCheck:
    return ReasoningCapCheck(settings, deps.default_max_tokens)


SPEC = StepSpec(NAME, ReasoningCapSettings, _build)
