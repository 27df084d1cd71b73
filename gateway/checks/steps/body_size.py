"""Step 2, body size limit (413): the plan's largest request body, in bytes (the gateway's
own `max_body_bytes` is the hard cap before any of this is read)."""

from __future__ import annotations

from pydantic import Field

from .._base import ALLOW, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps

NAME = "body_size"


class BodySizeSettings(StepSettings):
    max_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="bytes")


class BodySizeCheck:
    name = NAME

    def __init__(self, settings: BodySizeSettings) -> None:
        self.max_bytes = settings.max_bytes

    async def check(self, ctx: CallContext) -> Decision:
        if ctx.body_bytes > self.max_bytes:
            return Deny(
                NAME,
                "body_too_large",
                f"request body is {ctx.body_bytes} bytes; this org's limit is {self.max_bytes}",
                status=413,
                data={"body_bytes": ctx.body_bytes, "max_bytes": self.max_bytes},
            )
        return ALLOW


def _build(settings: BodySizeSettings, _plan: Plan, _deps: ChainDeps) -> BodySizeCheck:
    return BodySizeCheck(settings)


SPEC = StepSpec(NAME, BodySizeSettings, _build)
