"""Step 10, content safety (400 `unsafe_content`): requests for weapons of mass harm, explosives,
malware, self-harm methods or sexual content involving minors, by the `safety` rules of
policies/content_rules.yaml, scored against the org's thresholds (see `_scored`).

400, not 403: it is the content the client sent that is refused, and the same client may send
other content; the security scan (step 11), which meets attacks, answers 403."""

from __future__ import annotations

from .._base import Deny
from .._config import Plan, StepSpec
from .._deps import ChainDeps
from .._scan import RuleHits
from ._scored import ScoredCheck, ScoredSettings, details

NAME = "content_safety"


def _deny(hits: RuleHits, block_at: float) -> Deny:
    return Deny(
        NAME,
        "unsafe_content",
        f"the request was refused by the content safety policy"
        f" ({', '.join(sorted(hits.categories))}; score {hits.score})",
        status=400,
        data=details(hits, block_at),
    )


def _build(settings: ScoredSettings, _plan: Plan, deps: ChainDeps) -> ScoredCheck:
    return ScoredCheck(NAME, settings, deps.content.safety, _deny)


SPEC = StepSpec(NAME, ScoredSettings, _build)
