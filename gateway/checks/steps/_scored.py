"""What steps 10 (content_safety) and 11 (security_scan) share: score the texts of the chosen
roles by the weights of the content rules that match (policies/content_rules.yaml), refuse at
`block_at`, let through with a note at `flag_at`. Denials name the rule ids, the categories,
the score and the roles where they matched, never the matched text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field, model_validator

from .._base import ALLOW, Allow, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps
from .._scan import ContentPolicies, Role, RuleHits, RuleScanner

__all__ = ["Refusal", "ScoredCheck", "ScoredSettings", "scored_spec"]


class ScoredSettings(StepSettings):
    block_at: float = Field(default=1.0, gt=0, description="score that refuses the call")
    flag_at: float | None = Field(
        default=0.5, gt=0, description="score that lets the call through with a note; None: never"
    )
    roles: tuple[Role, ...] = ("user", "tool")
    """Whose text is scanned: user turns and tool results (agents feed tool output back, and
    that is where injected instructions hide). The system prompt is the operator's, trusted."""

    @model_validator(mode="after")
    def _ordered(self) -> ScoredSettings:
        if self.flag_at is not None and self.flag_at > self.block_at:
            raise ValueError("flag_at must not be above block_at")
        return self


@dataclass(frozen=True)
class Refusal:
    """How one step refuses: its status, and its code and message for the rules that matched."""

    status: int
    reason: Callable[[RuleHits], str]
    message: Callable[[RuleHits], str]


class ScoredCheck:
    def __init__(
        self,
        name: str,
        settings: ScoredSettings,
        content: ContentPolicies,
        scanner: RuleScanner,
        refusal: Refusal,
    ) -> None:
        self.name = name
        self.content = content
        self.scanner = scanner
        self.block_at = settings.block_at
        self.flag_at = settings.flag_at
        self.roles = settings.roles
        self.refusal = refusal

    def deny(self, hits: RuleHits) -> Deny:
        return Deny(
            self.name,
            self.refusal.reason(hits),
            self.refusal.message(hits),
            status=self.refusal.status,
            data={
                "score": hits.score,
                "block_at": self.block_at,
                "rules": list(hits.rules),
                "categories": sorted(hits.categories),
                "roles": list(hits.roles),
            },
        )

    async def check(self, ctx: CallContext) -> Decision:
        hits = self.scanner.score(
            {role: self.content.matches(ctx, role, self.scanner) for role in self.roles}
        )
        if hits is None:
            return ALLOW
        if hits.score >= self.block_at:
            return self.deny(hits)
        if self.flag_at is not None and hits.score >= self.flag_at:
            return Allow(note=f"flagged score {hits.score} ({', '.join(hits.rules)})")
        return ALLOW


def scored_spec(
    name: str, scanner: Callable[[ContentPolicies], RuleScanner], refusal: Refusal
) -> StepSpec[ScoredSettings]:
    def build(settings: ScoredSettings, _plan: Plan, deps: ChainDeps) -> ScoredCheck:
        return ScoredCheck(name, settings, deps.content, scanner(deps.content), refusal)

    return StepSpec(name, ScoredSettings, build)
