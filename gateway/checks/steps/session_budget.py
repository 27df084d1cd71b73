"""Step 8, runner session budget (403): the session's budget and the runner's lifetime
budget (USD, set when they were created), enforced by reservation
(gateway/checks/_reserve.py): concurrent calls can never spend past either.

When the session's budget cannot pay for another call, `budget.exhausted` is audited once for
the session; the control plane then closes it with reason `budget_exhausted` (the runner goes
back to ready, or stops, as its settings say).
"""

from __future__ import annotations

from ...counters import Bucket
from .._base import CallContext, Decision
from .._config import Plan, StepSpec
from .._deps import ChainDeps
from .._reserve import Planned, ReservingSettings, reserve, target_of

NAME = "session_budget"
_TTL_S = 7 * 86_400
"""Seconds a session's or runner's counter outlives its last call (then it is reseeded)."""


class SessionBudgetSettings(ReservingSettings):
    pass


class SessionBudgetCheck:
    name = NAME

    def __init__(self, settings: SessionBudgetSettings, deps: ChainDeps) -> None:
        self.settings = settings
        self.deps = deps

    async def check(self, ctx: CallContext) -> Decision:
        session, runner = ctx.session, ctx.runner
        planned: list[Planned] = []
        if session is not None and session.budget_usd is not None:
            spent = session.spent_usd + ctx.session_pending_usd
            planned.append(
                Planned(
                    Bucket(f"session:{session.id}", session.budget_usd, _TTL_S),
                    lambda: _value(spent),
                    "session_budget_exhausted",
                    f"session {session.id}'s budget",
                )
            )
        if runner is not None and runner.budget_usd is not None:
            spent_r = runner.spent_usd + ctx.runner_pending_usd
            planned.append(
                Planned(
                    Bucket(f"runner:{runner.id}", runner.budget_usd, _TTL_S),
                    lambda: _value(spent_r),
                    "runner_budget_exhausted",
                    f"runner {runner.id}'s lifetime budget",
                )
            )
        target = target_of(ctx, self.settings)

        async def exhausted(found: Planned, remaining_usd: float) -> None:
            if self.deps.alerts is not None:
                await self.deps.alerts.exhausted(
                    target, found.bucket.key, found.bucket.limit_usd, remaining_usd
                )

        return await reserve(NAME, ctx, planned, self.settings, self.deps, exhausted)


async def _value(usd: float) -> float:
    return usd


def _build(settings: SessionBudgetSettings, _plan: Plan, deps: ChainDeps) -> SessionBudgetCheck:
    return SessionBudgetCheck(settings, deps)


SPEC = StepSpec(NAME, SessionBudgetSettings, _build)
