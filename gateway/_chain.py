"""The policy chain: checks that run on every call after routing and before forwarding.

Each check takes one frozen `CallContext` and returns one `Decision` (`Allow` or `Deny`). A check
never raises to deny; a check that crashes denies (fails closed) with reason `check_failed`.
The chain's order is configuration (`create_gateway(checks=...)`); the first `Deny` wins.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from paddock_core import RunnerRecord, SessionRecord

__all__ = [
    "ALLOW",
    "Allow",
    "BudgetCheck",
    "CallContext",
    "Decision",
    "Deny",
    "PolicyChain",
    "PolicyCheck",
    "default_checks",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallContext:
    """Everything a check may look at. Never the prompt text: checks that need content
    (PII, ...) will get it through a field made for them."""

    org_id: str
    actor: str
    runner: RunnerRecord | None
    session: SessionRecord | None
    endpoint: str
    """chat | responses | embeddings | messages | count_tokens"""
    requested_model: str
    provider: str
    model: str
    stream: bool
    body_bytes: int
    estimated_prompt_tokens: int
    runner_pending_usd: float = 0.0
    """Spend of the runner's answered calls not yet in `runner.spent_usd` (written behind)."""
    session_pending_usd: float = 0.0


@dataclass(frozen=True)
class Allow:
    pass


ALLOW = Allow()


@dataclass(frozen=True)
class Deny:
    check: str
    reason: str
    """A stable code, e.g. `session_budget_exhausted`; shown to the client as the error code."""
    message: str
    kind: Literal["budget", "permission", "invalid", "rate_limit"] = "permission"
    """How the denial reaches the client: 403 budget, 403, 400 or 429."""


Decision = Allow | Deny


class PolicyCheck(Protocol):
    name: str

    async def check(self, ctx: CallContext) -> Decision: ...


class PolicyChain:
    def __init__(self, checks: Sequence[PolicyCheck]) -> None:
        self.checks = tuple(checks)

    async def decide(self, ctx: CallContext) -> Decision:
        for check in self.checks:
            try:
                decision = await check.check(ctx)
            except Exception:
                logger.exception("policy check %s crashed: denying the call", check.name)
                return Deny(check.name, "check_failed", f"policy check {check.name} failed")
            if isinstance(decision, Deny):
                return decision
        return ALLOW


class BudgetCheck:
    """Deny once spent reaches the budget (USD). The call that crosses it is allowed to finish,
    so spend may exceed a budget by at most the calls in flight when it was reached."""

    name = "budget"

    async def check(self, ctx: CallContext) -> Decision:
        session, runner = ctx.session, ctx.runner
        if session is not None and session.budget_usd is not None:
            spent = session.spent_usd + ctx.session_pending_usd
            if spent >= session.budget_usd:
                return Deny(
                    self.name,
                    "session_budget_exhausted",
                    f"session {session.id} has spent ${spent:.6f} of its "
                    f"${session.budget_usd:.6f} budget",
                    kind="budget",
                )
        if runner is not None and runner.budget_usd is not None:
            spent = runner.spent_usd + ctx.runner_pending_usd
            if spent >= runner.budget_usd:
                return Deny(
                    self.name,
                    "runner_budget_exhausted",
                    f"runner {runner.id} has spent ${spent:.6f} of its "
                    f"${runner.budget_usd:.6f} lifetime budget",
                    kind="budget",
                )
        return ALLOW


def default_checks() -> list[PolicyCheck]:
    return [BudgetCheck()]
