"""What loop_guard and spend_velocity do once they catch a runaway agent: the same three
actions and the same alerts.

- `deny`: 403 with the numbers, the call refused, the agent reads why;
- `pause`: the call is held for a person (the approval step's machinery, `hold` or `queue`);
  approving lets it through once, rejecting refuses it;
- `end`: 403, and the gateway asks the control plane to end the session
  (`session.end_requested`): its runner goes back to `ready` with the reason.

Every detection is a `<kind>.alert` audit event with the numbers (and a signed webhook when
the step names one), once per session (or runner) and kind per day.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ._alerts import AlertTarget
from ._base import CallContext, Decision, Deny, Hold
from ._config import StepSettings
from ._deps import ChainDeps

__all__ = ["RunawaySettings", "runaway"]


class RunawaySettings(StepSettings):
    action: Literal["deny", "pause", "end"] = "deny"
    pause_mode: Literal["hold", "queue"] = "hold"
    """How a paused call waits for its approval (see the approval step)."""
    pause_timeout_s: float = Field(default=300.0, gt=0, description="seconds to decide")
    alert_webhook_url: str | None = None
    """POSTed for every alert (signed with the gateway's alert_webhook_secret)."""


async def runaway(
    step: str,
    reason: str,
    message: str,
    data: dict[str, Any],
    ctx: CallContext,
    settings: RunawaySettings,
    deps: ChainDeps,
) -> Decision:
    """Alert, then the decision `settings.action` asks for."""
    numbers = {**data, "action": settings.action}
    who = ctx.session.id if ctx.session else ctx.runner.id if ctx.runner else ctx.key_id
    if deps.alerts is not None:
        target = AlertTarget(
            org_id=ctx.org_id,
            actor=ctx.actor,
            runner_id=ctx.runner.id if ctx.runner else None,
            session_id=ctx.session.id if ctx.session else None,
            webhook_url=settings.alert_webhook_url,
        )
        kind = step.removesuffix("_guard").removeprefix("spend_")
        await deps.alerts.alert(
            target, f"{kind}.alert", {"step": step, **numbers}, once_key=f"{step}:{who}"
        )
        if settings.action == "end" and ctx.session is not None:
            await deps.alerts.alert(
                target,
                "session.end_requested",
                {"reason": reason, "step": step, **data},
                once_key=f"end:{ctx.session.id}",
            )
    if settings.action == "pause":
        hold_data = {
            **numbers,
            "rule": reason,
            "mode": settings.pause_mode,
            "timeout_s": settings.pause_timeout_s,
            "result_ttl_s": 3600.0,
        }
        return Hold(step, reason, message, data=hold_data)
    return Deny(step, reason, message, data=numbers)
