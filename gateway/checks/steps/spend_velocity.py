"""Spend velocity: USD per minute per session, runner and org, over a sliding window. A fast
runaway crosses it long before a daily budget would notice.

The call that crosses the line completes (its cost is known only after it); the next one is
caught and, per `action` (see `_runaway`), paused for a person (default: approving lets that
call through), refused, or the session is ended (`velocity_exceeded`). Windows live in the
counters (Redis when configured), so every gateway process sees the same spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from ...counters import CountersUnavailableError, RateLimit, to_nano
from .._base import ALLOW, Allow, CallContext, Decision, Outcome
from .._config import Plan, StepSpec
from .._deps import ChainDeps
from .._reserve import new_request_id, unavailable
from .._runaway import RunawaySettings, runaway

NAME = "spend_velocity"

Rate = float | None


class SpendVelocitySettings(RunawaySettings):
    window_s: float = Field(default=60.0, gt=0, description="sliding window, seconds")
    session_usd_per_min: Rate = Field(default=None, gt=0, description="USD per minute")
    runner_usd_per_min: Rate = Field(default=None, gt=0, description="USD per minute")
    org_usd_per_min: Rate = Field(default=None, gt=0, description="USD per minute")
    action: Literal["deny", "pause", "end"] = "pause"


@dataclass
class _Spent:
    """Adds the call's actual cost to every window once it is known."""

    deps: ChainDeps
    request_id: str
    limits: list[RateLimit]

    async def settle(self, outcome: Outcome) -> None:
        cost = to_nano(outcome.cost_usd)
        if cost <= 0:
            return
        try:
            await self.deps.counters.record(
                self.request_id, [RateLimit(x.key, x.limit, x.window_s, cost) for x in self.limits]
            )
        except CountersUnavailableError:
            pass  # this window misses one call; budgets still hold the money


class SpendVelocityCheck:
    name = NAME

    def __init__(self, settings: SpendVelocitySettings, deps: ChainDeps) -> None:
        self.s = settings
        self.deps = deps

    def _limits(self, ctx: CallContext) -> list[tuple[str, float, RateLimit]]:
        s, out = self.s, []
        for scope, entity, per_min in (
            ("session", ctx.session.id if ctx.session else None, s.session_usd_per_min),
            ("runner", ctx.runner.id if ctx.runner else None, s.runner_usd_per_min),
            ("org", ctx.org_id, s.org_usd_per_min),
        ):
            if entity is None or per_min is None:
                continue
            limit = to_nano(per_min * s.window_s / 60.0)
            # Cost 1 nano-USD to be admitted: refused once the window's spend reached the limit.
            window = RateLimit(f"velocity:{scope}:{entity}", limit, s.window_s, 1)
            out.append((scope, per_min, window))
        return out

    async def check(self, ctx: CallContext) -> Decision:
        limits = self._limits(ctx)
        if not limits:
            return ALLOW
        request_id = new_request_id("vel")
        try:
            result = await self.deps.counters.acquire(request_id, [x for _, _, x in limits])
        except CountersUnavailableError:
            return unavailable(NAME, self.deps)
        hold = _Spent(self.deps, request_id, [x for _, _, x in limits])
        if result.allowed or ctx.approved:
            return Allow(hold=hold)
        assert result.denied is not None
        scope, per_min, limit = limits[result.denied]
        state = result.states[result.denied]
        spent = (limit.limit - state.remaining) / 1e9
        window = self.s.window_s
        message = (
            f"spend velocity: this {scope} spent ${spent:.4f} or more in the last {window:g}s;"
            f" its limit is ${per_min:.4f} per minute. A person must look before it goes on"
        )
        data = {  # `spent_usd`: at least this much (the window reached its limit)
            "scope": scope,
            "spent_usd": round(spent, 6),
            "usd_per_min": per_min,
            "window_s": window,
        }
        return await runaway(NAME, "velocity_exceeded", message, data, ctx, self.s, self.deps)


def _build(settings: SpendVelocitySettings, _plan: Plan, deps: ChainDeps) -> SpendVelocityCheck:
    return SpendVelocityCheck(settings, deps)


SPEC = StepSpec(NAME, SpendVelocitySettings, _build)
