"""Step 13, model allowlist (403): the model must be allowed by the plan, by the org's own list
and by the calling key's list (each a list of globs, matched against the requested name, the
routed model and `provider/model`)."""

from __future__ import annotations

from .._base import ALLOW, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec, matches_any
from .._deps import ChainDeps

NAME = "model_allowlist"


class ModelAllowlistSettings(StepSettings):
    allow: tuple[str, ...] | None = None
    """The org's own list (globs); None: whatever the plan allows."""


class ModelAllowlistCheck:
    name = NAME

    def __init__(self, settings: ModelAllowlistSettings, plan: Plan) -> None:
        self.lists = [("plan", plan.models)]
        if settings.allow is not None:
            self.lists.append(("org", settings.allow))

    async def check(self, ctx: CallContext) -> Decision:
        names = (ctx.requested_model, ctx.model, f"{ctx.provider}/{ctx.model}")
        lists = self.lists if ctx.key_models is None else [*self.lists, ("key", ctx.key_models)]
        for level, patterns in lists:
            if not matches_any(names, patterns):
                return Deny(
                    NAME,
                    "model_not_allowed",
                    f"model {ctx.requested_model!r} is not allowed by the {level}'s model list",
                    data={"model": ctx.requested_model, "level": level},
                )
        return ALLOW


def _build(settings: ModelAllowlistSettings, plan: Plan, _deps: ChainDeps) -> ModelAllowlistCheck:
    return ModelAllowlistCheck(settings, plan)


SPEC = StepSpec(NAME, ModelAllowlistSettings, _build)
