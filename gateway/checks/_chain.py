"""Runs the checks of one org's chain in order; the first `Deny` or `Hold` wins.

What each `Allow` carries is folded in as the chain goes: a rewritten body is what the next
check sees, headers accumulate, settlements are collected. When a later check denies, holds or
crashes, the settlements collected so far are released ($0) before the chain answers, so a
refused call never keeps a reservation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._base import Allow, CallContext, Decision, Deny, Hold, Outcome, PolicyCheck, Settlement

__all__ = ["ChainResult", "PolicyChain", "settle_all"]

logger = logging.getLogger(__name__)

_NOTHING = Outcome(0.0)


async def settle_all(holds: Sequence[Settlement], outcome: Outcome) -> None:
    for hold in holds:
        try:
            await hold.settle(outcome)
        except Exception:  # a settlement must not raise; one that does must not stop the rest
            logger.exception("settling %r failed", hold)


@dataclass
class ChainResult:
    decision: Allow | Deny | Hold
    """`Allow` when every check allowed (then `body`, `headers` and `holds` apply)."""
    body: Mapping[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    holds: list[Settlement] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    """The checks that allowed, in order."""
    notes: list[str] = field(default_factory=list)
    version: str = ""

    async def settle(self, outcome: Outcome) -> None:
        """Settle every collected hold exactly once (later calls do nothing)."""
        holds, self.holds = self.holds, []
        await settle_all(holds, outcome)


class PolicyChain:
    """One org's checks, in order. `version` names the policy they were built from."""

    def __init__(self, checks: Sequence[PolicyCheck], version: str = "code") -> None:
        self.checks = tuple(checks)
        self.version = version

    async def decide(self, ctx: CallContext) -> ChainResult:
        result = ChainResult(decision=Allow(), body=ctx.body, version=self.version)
        for check in self.checks:
            try:
                decision: Decision = await check.check(ctx)
            except Exception:
                logger.exception("policy check %s crashed: denying the call", check.name)
                decision = Deny(check.name, "check_failed", f"policy check {check.name} failed")
            if isinstance(decision, Deny | Hold):
                if isinstance(decision, Deny) and decision.headers:
                    result.headers.update(decision.headers)
                result.decision = decision
                await result.settle(_NOTHING)
                return result
            result.passed.append(check.name)
            if decision.hold is not None:
                result.holds.append(decision.hold)
            if decision.headers:
                result.headers.update(decision.headers)
            if decision.note:
                result.notes.append(f"{check.name}: {decision.note}")
            if decision.body is not None:
                ctx = ctx.with_body(decision.body)
                result.body = decision.body
        return result
