"""Step 11, security scan (403): prompt injection, jailbreak and exfiltration patterns (the
`security` rules of policies/content_rules.yaml) in user turns and in tool results, scored
against the org's thresholds (see `_scored`). The error code is the highest-scoring category:
`prompt_injection`, `jailbreak` or `exfiltration`; `details.roles` says whether it came in a
user turn or a tool result (an agent that fetched a hostile page is not itself hostile)."""

from __future__ import annotations

from .._base import Deny
from .._config import Plan, StepSpec
from .._deps import ChainDeps
from .._scan import RuleHits
from ._scored import ScoredCheck, ScoredSettings, details

NAME = "security_scan"


def _deny(hits: RuleHits, block_at: float) -> Deny:
    where = " and ".join("tool results" if r == "tool" else f"{r} text" for r in hits.roles)
    return Deny(
        NAME,
        hits.top_category,
        f"the request was refused by the security scan: {hits.top_category.replace('_', ' ')}"
        f" suspected in {where} (score {hits.score})",
        status=403,
        data=details(hits, block_at),
    )


def _build(settings: ScoredSettings, _plan: Plan, deps: ChainDeps) -> ScoredCheck:
    return ScoredCheck(NAME, settings, deps.content.security, _deny)


SPEC = StepSpec(NAME, ScoredSettings, _build)
