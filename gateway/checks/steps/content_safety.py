"""Step 10, content safety (400 `unsafe_content`): requests for weapons of mass harm, explosives,
malware, self-harm methods or sexual content involving minors, by the `safety` rules of
policies/content_rules.yaml, scored against the org's thresholds (see `_scored`).

400, not 403: it is the content the client sent that is refused, and the same client may send
other content; the security scan (step 11), which meets attacks, answers 403."""

from __future__ import annotations

from .._scan import RuleHits
from ._scored import Refusal, scored_spec

NAME = "content_safety"


def _message(hits: RuleHits) -> str:
    return (
        "the request was refused by the content safety policy"
        f" ({', '.join(sorted(hits.categories))}; score {hits.score})"
    )


SPEC = scored_spec(
    NAME, lambda content: content.safety, Refusal(400, lambda _: "unsafe_content", _message)
)
