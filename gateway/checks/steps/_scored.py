"""What steps 10 (content_safety) and 11 (security_scan) share: score the texts of the chosen
roles by the weights of the content rules that match (policies/content_rules.yaml), refuse at
`block_at`, let through with a note at `flag_at`. Denials name the rule ids, the categories,
the score and the roles where they matched, never the matched text."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field, model_validator

from .._base import ALLOW, Allow, CallContext, Decision, Deny
from .._config import StepSettings
from .._scan import Role, RuleHits, RuleScanner, joined

__all__ = ["ScoredCheck", "ScoredSettings"]


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


class ScoredCheck:
    """One step's scan. `deny(hits)` builds its refusal (status and code are the step's)."""

    def __init__(
        self,
        name: str,
        settings: ScoredSettings,
        scanner: RuleScanner,
        deny: Callable[[RuleHits, float], Deny],
    ) -> None:
        self.name = name
        self.scanner = scanner
        self.block_at = settings.block_at
        self.flag_at = settings.flag_at
        self.roles = settings.roles
        self.deny = deny

    async def check(self, ctx: CallContext) -> Decision:
        by_role: dict[str, str] = {
            role: joined(t.text for t in ctx.texts if t.role == role) for role in self.roles
        }
        hits = self.scanner.scan(by_role)
        if hits is None:
            return ALLOW
        if hits.score >= self.block_at:
            return self.deny(hits, self.block_at)
        if self.flag_at is not None and hits.score >= self.flag_at:
            return Allow(note=f"flagged score {hits.score} ({', '.join(hits.rules)})")
        return ALLOW


def details(hits: RuleHits, block_at: float) -> dict[str, object]:
    return {
        "score": hits.score,
        "block_at": block_at,
        "rules": list(hits.rules),
        "categories": sorted(hits.categories),
        "roles": list(hits.roles),
    }
