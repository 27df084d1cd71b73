"""Step 8, runner session budget (403): the session's and the runner's lifetime budgets (USD),
set when the runner and the session were created."""

from __future__ import annotations

from .._base import ALLOW, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps

NAME = "session_budget"


class SessionBudgetCheck:
    """Deny once spent reaches the budget. The call that crosses it is allowed to finish, so
    spend may exceed a budget by at most the calls in flight when it was reached."""

    name = NAME

    async def check(self, ctx: CallContext) -> Decision:
        session, runner = ctx.session, ctx.runner
        if session is not None and session.budget_usd is not None:
            spent = session.spent_usd + ctx.session_pending_usd
            if spent >= session.budget_usd:
                return Deny(
                    NAME,
                    "session_budget_exhausted",
                    f"session {session.id} has spent ${spent:.6f} of its "
                    f"${session.budget_usd:.6f} budget",
                    data={"spent_usd": round(spent, 6), "budget_usd": session.budget_usd},
                )
        if runner is not None and runner.budget_usd is not None:
            spent = runner.spent_usd + ctx.runner_pending_usd
            if spent >= runner.budget_usd:
                return Deny(
                    NAME,
                    "runner_budget_exhausted",
                    f"runner {runner.id} has spent ${spent:.6f} of its "
                    f"${runner.budget_usd:.6f} lifetime budget",
                    data={"spent_usd": round(spent, 6), "budget_usd": runner.budget_usd},
                )
        return ALLOW


def _build(_settings: StepSettings, _plan: Plan, _deps: ChainDeps) -> SessionBudgetCheck:
    return SessionBudgetCheck()


SPEC = StepSpec(NAME, StepSettings, _build)
