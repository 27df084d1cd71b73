"""Step 3, rate limit (429): requests and tokens per window (default a minute) per org, per
API key and per runner. Sliding logs in the counters (gateway/counters): exact in every
window, and shared by every gateway process on one Redis.

A call takes 1 request and its input token estimate when admitted; its output tokens are
counted when it settles. Every answer carries `x-ratelimit-{limit,remaining,reset}-{requests,
tokens}` for the tightest limit (streams too); a refusal adds `retry-after` (whole seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field

from ...counters import CountersUnavailableError, RateLimit, RateResult, RateState
from .._base import Allow, CallContext, Decision, Deny, Outcome
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps
from .._reserve import new_request_id, unavailable

NAME = "rate_limit"

Per = int | None


class RateLimitSettings(StepSettings):
    window_s: float = Field(default=60.0, gt=0, description="window length, seconds")
    org_requests: Per = Field(default=None, gt=0, description="requests per window, per org")
    org_tokens: Per = Field(default=None, gt=0, description="tokens per window, per org")
    key_requests: Per = Field(default=None, gt=0)
    key_tokens: Per = Field(default=None, gt=0)
    runner_requests: Per = Field(default=None, gt=0)
    runner_tokens: Per = Field(default=None, gt=0)


def _reset(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _headers(result: RateResult) -> dict[str, str]:
    tightest: dict[str, RateState] = {}
    for state in result.states:
        kind = state.key.rpartition(":")[2]
        best = tightest.get(kind)
        if best is None or (state.remaining, -state.reset_s) < (best.remaining, -best.reset_s):
            tightest[kind] = state
    out: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        if (tight := tightest.get(kind)) is not None:
            out[f"x-ratelimit-limit-{kind}"] = str(tight.limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(tight.remaining)
            out[f"x-ratelimit-reset-{kind}"] = _reset(tight.reset_s)
    return out


@dataclass
class _OutputTokens:
    """Counts the call's output tokens against the token limits once it is done."""

    deps: ChainDeps
    request_id: str
    limits: list[RateLimit]

    async def settle(self, outcome: Outcome) -> None:
        if outcome.completion_tokens <= 0:
            return
        counted = [
            RateLimit(x.key, x.limit, x.window_s, outcome.completion_tokens) for x in self.limits
        ]
        try:
            await self.deps.counters.record(self.request_id, counted)
        except CountersUnavailableError:
            pass  # the window forgets it in a minute anyway


class RateLimitCheck:
    name = NAME

    def __init__(self, settings: RateLimitSettings, deps: ChainDeps) -> None:
        self.s = settings
        self.deps = deps
        self._kept: dict[tuple[str, str | None, str | None], list[tuple[str, int, bool]]] = {}

    def _keys(self, ctx: CallContext) -> list[tuple[str, int, bool]]:
        """(counter key, limit, counts tokens) of this caller's limits; built once per caller."""
        runner = ctx.runner.id if ctx.runner else None
        found = self._kept.get((ctx.org_id, ctx.key_id, runner))
        if found is not None:
            return found
        s, found = self.s, []
        for who, entity, requests, tokens in (
            ("org", ctx.org_id, s.org_requests, s.org_tokens),
            ("key", ctx.key_id, s.key_requests, s.key_tokens),
            ("runner", runner, s.runner_requests, s.runner_tokens),
        ):
            if entity is None:
                continue
            if requests is not None:
                found.append((f"rate:{who}:{entity}:requests", requests, False))
            if tokens is not None:
                found.append((f"rate:{who}:{entity}:tokens", tokens, True))
        if len(self._kept) >= 10_000:
            self._kept.clear()
        self._kept[(ctx.org_id, ctx.key_id, runner)] = found
        return found

    def _limits(self, ctx: CallContext) -> list[RateLimit]:
        window, tokens = self.s.window_s, max(ctx.estimated_prompt_tokens, 1)
        return [
            RateLimit(key, limit, window, tokens if counts_tokens else 1)
            for key, limit, counts_tokens in self._keys(ctx)
        ]

    async def check(self, ctx: CallContext) -> Decision:
        limits = self._limits(ctx)
        if not limits:
            return Allow()
        request_id = new_request_id("rl")
        try:
            result = await self.deps.counters.acquire(request_id, limits)
        except CountersUnavailableError:
            return unavailable(NAME, self.deps)
        headers = _headers(result)
        if not result.allowed:
            assert result.denied is not None
            refused = limits[result.denied]
            retry = max(math.ceil(result.retry_after_s), 1)
            _, who, entity, kind = refused.key.split(":", 3)
            too_big = refused.cost > refused.limit
            return Deny(
                NAME,
                "rate_limited",
                f"{who} {entity} is over its limit of {refused.limit} {kind} per"
                f" {self.s.window_s:g}s"
                + (
                    f": this call alone needs {refused.cost}" if too_big else f"; retry in {retry}s"
                ),
                status=429,
                headers={**headers, "retry-after": str(retry)},
                data={"limit": f"{who}_{kind}", "retry_after_s": retry},
            )
        tokens = [x for x in limits if x.key.endswith(":tokens")]
        hold = _OutputTokens(self.deps, request_id, tokens) if tokens else None
        return Allow(headers=headers, hold=hold)


def _build(settings: RateLimitSettings, _plan: Plan, deps: ChainDeps) -> RateLimitCheck:
    return RateLimitCheck(settings, deps)


SPEC = StepSpec(NAME, RateLimitSettings, _build)
