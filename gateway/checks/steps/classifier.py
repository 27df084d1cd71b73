"""Step 12, AI classifier (403 `content_flagged`; off by default): the texts of the chosen roles
go to a moderation model (an OpenAI `/v1/moderations`-shaped endpoint) through the gateway's own
providers (`ChainDeps.classify`), with the step's own timeout. A flagged category in
`block_categories` (any, when unset) refuses the call.

When the classifier cannot answer (timeout, provider error, none configured), `fail_mode`
decides: `open` lets the call through with a note in the audit, `closed` refuses it with 503
`classifier_unavailable` (worth a retry, unlike a refusal).

Classifier calls are the gateway's own: they are not billed to the caller's budgets; each is
logged (model, outcome, milliseconds) and its verdict is in the audit (note or denial).
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import anyio
from pydantic import Field

from .._base import ALLOW, Allow, CallContext, Decision, Deny
from .._config import Plan, StepSettings, StepSpec
from .._deps import ChainDeps, Classify, Verdict
from .._scan import Role

NAME = "classifier"

logger = logging.getLogger(__name__)


class ClassifierSettings(StepSettings):
    enabled: bool = False
    model: str = Field(default="omni-moderation-latest", min_length=1)
    """The moderation model, routed like any model (an alias, `provider/model`)."""
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="seconds per classification")
    fail_mode: Literal["open", "closed"] = "open"
    block_categories: tuple[str, ...] | None = None
    """Flagged categories that refuse the call; None: any flagged category."""
    roles: tuple[Role, ...] = ("user", "tool")
    max_chars: int = Field(default=32_000, gt=0, description="characters sent, the newest kept")


class ClassifierCheck:
    name = NAME

    def __init__(self, settings: ClassifierSettings, classify: Classify | None) -> None:
        self.settings = settings
        self.classify = classify
        self.roles = frozenset(settings.roles)
        self.blocking = (
            frozenset(settings.block_categories) if settings.block_categories is not None else None
        )

    async def check(self, ctx: CallContext) -> Decision:
        if ctx.endpoint == "count_tokens":
            return ALLOW  # nothing is generated: not worth a moderation call
        texts = [t.text for t in ctx.texts if t.role in self.roles]
        text = "\n\n".join(texts)[-self.settings.max_chars :]
        if not text.strip():
            return ALLOW
        started = time.perf_counter()
        try:
            if self.classify is None:
                raise LookupError("no classifier is configured")
            with anyio.fail_after(self.settings.timeout_s):
                verdict = await self.classify(self.settings.model, text)
        except Exception as exc:  # any failure to answer is the fail mode's to decide
            logger.warning(
                "classifier %s failed for org %s after %.0f ms (%s): failing %s",
                self.settings.model,
                ctx.org_id,
                (time.perf_counter() - started) * 1000,
                type(exc).__name__,
                self.settings.fail_mode,
            )
            return self._unavailable(type(exc).__name__)
        logger.info(
            "classifier %s for org %s: flagged=%s categories=%s in %.0f ms",
            self.settings.model,
            ctx.org_id,
            verdict.flagged,
            ",".join(verdict.categories),
            (time.perf_counter() - started) * 1000,
        )
        return self._decide(verdict)

    def _decide(self, verdict: Verdict) -> Decision:
        if not verdict.flagged:
            return ALLOW
        flagged = sorted(verdict.categories) or ["unspecified"]
        blocking = flagged if self.blocking is None else [c for c in flagged if c in self.blocking]
        if not blocking:
            return Allow(note=f"flagged, not blocked: {', '.join(flagged)}")
        return Deny(
            NAME,
            "content_flagged",
            f"the request was flagged by the content classifier: {', '.join(blocking)}",
            data={"categories": blocking, "model": self.settings.model},
        )

    def _unavailable(self, error: str) -> Decision:
        if self.settings.fail_mode == "open":
            return Allow(note=f"classifier unavailable ({error}): failed open")
        return Deny(
            NAME,
            "classifier_unavailable",
            "the content classifier could not check this request; try again later",
            status=503,
            data={"model": self.settings.model, "error": error},
        )


def _build(settings: ClassifierSettings, _plan: Plan, deps: ChainDeps) -> ClassifierCheck:
    return ClassifierCheck(settings, deps.classify)


SPEC = StepSpec(NAME, ClassifierSettings, _build)
