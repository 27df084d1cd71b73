"""Step 14, skill allowlist (403, or strip): the tools a request offers the model must be
allowed by the plan, the org and the calling key. `mode: deny` refuses the call naming the
forbidden tools; `mode: strip` removes them (and a `tool_choice` that names one) and lets the
call through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .._base import ALLOW, Allow, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec, matches_any
from .._content import tool_names
from .._deps import ChainDeps

NAME = "skill_allowlist"


class SkillAllowlistSettings(StepSettings):
    allow: tuple[str, ...] | None = None
    """The org's own list (globs); None: whatever the plan allows."""
    mode: Literal["deny", "strip"] = "deny"


def _stripped(endpoint: str, body: Mapping[str, Any], forbidden: set[str]) -> dict[str, Any]:
    out = dict(body)
    kept = [
        tool
        for tool in body.get("tools") or ()
        if not set(tool_names(endpoint, {"tools": [tool]})) & forbidden
    ]
    if kept:
        out["tools"] = kept
    else:
        out.pop("tools", None)
        out.pop("tool_choice", None)
        out.pop("parallel_tool_calls", None)
    choice = out.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        named = function.get("name") if isinstance(function, dict) else choice.get("name")
        if named in forbidden:
            out.pop("tool_choice", None)
    return out


class SkillAllowlistCheck:
    name = NAME

    def __init__(self, settings: SkillAllowlistSettings, plan: Plan) -> None:
        self.lists = [plan.skills]
        if settings.allow is not None:
            self.lists.append(settings.allow)
        self.mode = settings.mode
        self._verdicts: dict[tuple[str, tuple[str, ...] | None], bool] = {}

    def _allowed(self, tool: str, key_skills: tuple[str, ...] | None) -> bool:
        """Whether every list allows `tool`; kept, as an agent offers the same tools on every
        call (bounded: forgotten past 10,000 tool/key pairs)."""
        verdict = self._verdicts.get((tool, key_skills))
        if verdict is None:
            lists = self.lists if key_skills is None else [*self.lists, key_skills]
            verdict = all(matches_any((tool,), p) for p in lists)
            if len(self._verdicts) >= 10_000:
                self._verdicts.clear()
            self._verdicts[(tool, key_skills)] = verdict
        return verdict

    async def check(self, ctx: CallContext) -> Decision:
        if not ctx.tools:
            return ALLOW
        forbidden = sorted({t for t in ctx.tools if not self._allowed(t, ctx.key_skills)})
        if not forbidden:
            return ALLOW
        if self.mode == "strip":
            body = _stripped(ctx.endpoint, ctx.body, set(forbidden))
            return Allow(body=body, note=f"stripped tools: {', '.join(forbidden)}")
        return Deny(
            NAME,
            "skill_not_allowed",
            f"the request offers tools this org may not use: {', '.join(forbidden)}",
            data={"tools": forbidden},
        )


def _build(settings: SkillAllowlistSettings, plan: Plan, _deps: ChainDeps) -> SkillAllowlistCheck:
    return SkillAllowlistCheck(settings, plan)


SPEC = StepSpec(NAME, SkillAllowlistSettings, _build)
