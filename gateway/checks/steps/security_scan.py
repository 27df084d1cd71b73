"""Step 11, security scan (403): prompt injection, jailbreak and exfiltration patterns (the
`security` rules of policies/content_rules.yaml) in user turns and in tool results, scored
against the org's thresholds (see `_scored`). The error code is the highest-scoring category:
`prompt_injection`, `jailbreak` or `exfiltration`; `details.roles` says whether it came in a
user turn or a tool result (an agent that fetched a hostile page is not itself hostile)."""

from __future__ import annotations

from .._scan import RuleHits
from ._scored import Refusal, scored_spec

NAME = "security_scan"


def _message(hits: RuleHits) -> str:
    where = " and ".join("tool results" if r == "tool" else f"{r} text" for r in hits.roles)
    return (
        f"the request was refused by the security scan: {hits.top_category.replace('_', ' ')}"
        f" suspected in {where} (score {hits.score})"
    )


SPEC = scored_spec(
    NAME, lambda content: content.security, Refusal(403, lambda h: h.top_category, _message)
)
