"""Token usage, prices, budgets, and the one write that records a call with its audit event."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from paddock_core import (
    AppendAudit,
    AuditEvent,
    LlmCallRecord,
    Policies,
    RecordLlmCall,
    RunnerRecord,
    SessionRecord,
    Store,
)

__all__ = [
    "BudgetDenial",
    "CallMeta",
    "Ledger",
    "Pricing",
    "Usage",
    "check_budget",
    "estimate_tokens",
    "message_text_chars",
    "reply_text_chars",
    "usage_from",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    """True when the provider reported nothing and the counts come from text length."""


def estimate_tokens(chars: int) -> int:
    """A deliberately simple estimate (4 characters per token, rounded up) for missing usage."""
    return math.ceil(chars / 4)


def _text_chars(content: Any) -> int:
    """Characters of text in an OpenAI `content`: a string or a list of `{type, text}` parts."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def message_text_chars(messages: Iterable[Any]) -> int:
    """Characters of text in a request's `messages` (images and other parts count zero)."""
    return sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))


def reply_text_chars(choice_part: Any) -> int:
    """Characters of generated text in a `message` (non-stream) or `delta` (stream) object."""
    if not isinstance(choice_part, dict):
        return 0
    total = _text_chars(choice_part.get("content"))
    for key in ("reasoning_content", "refusal"):
        value = choice_part.get(key)
        total += len(value) if isinstance(value, str) else 0
    for call in choice_part.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        total += len(arguments) if isinstance(arguments, str) else 0
    return total


def usage_from(value: Any) -> Usage | None:
    """The provider-reported usage from an OpenAI `usage` object, if it holds token counts."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=max(prompt, 0), completion_tokens=max(completion, 0))


class Pricing:
    """USD cost of calls from the policy price table (USD per million tokens)."""

    def __init__(self, policies: Policies) -> None:
        self._policies = policies
        self._warned: set[str] = set()

    def cost_usd(self, model: str, usage: Usage) -> float:
        price = self._policies.price(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                logger.warning("no price for model %r: its calls are recorded at $0", model)
            return 0.0
        return price.cost_usd(usage.prompt_tokens, usage.completion_tokens)


@dataclass(frozen=True)
class BudgetDenial:
    reason: str
    """OpenAI error `code`: `session_budget_exhausted` or `runner_budget_exhausted`."""
    message: str


def check_budget(runner: RunnerRecord | None, session: SessionRecord | None) -> BudgetDenial | None:
    """Deny once spent reaches the budget (USD). The call that crosses it is allowed to finish,
    so spend may exceed a budget by at most the calls in flight when it was reached."""
    if session is not None and session.budget_usd is not None:
        if session.spent_usd >= session.budget_usd:
            return BudgetDenial(
                "session_budget_exhausted",
                f"session {session.id} has spent ${session.spent_usd:.6f} of its "
                f"${session.budget_usd:.6f} budget",
            )
    if runner is not None and runner.budget_usd is not None:
        if runner.spent_usd >= runner.budget_usd:
            return BudgetDenial(
                "runner_budget_exhausted",
                f"runner {runner.id} has spent ${runner.spent_usd:.6f} of its "
                f"${runner.budget_usd:.6f} lifetime budget",
            )
    return None


@dataclass(frozen=True)
class CallMeta:
    """Who made a call and where it went; everything a record needs except the outcome."""

    id: str
    org_id: str
    actor: str
    runner_id: str | None
    session_id: str | None
    provider: str
    model: str
    stream: bool


class Ledger:
    """Writes each call and its `llm.call` audit event in one atomic batch. Never prompt text."""

    def __init__(self, store: Store, pricing: Pricing) -> None:
        self._store = store
        self._pricing = pricing

    async def record(
        self, meta: CallMeta, usage: Usage, *, status: int, latency_ms: float
    ) -> LlmCallRecord:
        """Record one call. `status` is the provider's HTTP status, 502 when none came back,
        499 when the client went away mid-stream; `latency_ms` is upstream time in ms."""
        cost = self._pricing.cost_usd(meta.model, usage)
        call = LlmCallRecord(
            id=meta.id,
            org_id=meta.org_id,
            runner_id=meta.runner_id,
            session_id=meta.session_id,
            provider=meta.provider,
            model=meta.model,
            stream=meta.stream,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost,
            latency_ms=round(latency_ms, 3),
            status=status,
        )
        event = AuditEvent(
            org_id=meta.org_id,
            actor=meta.actor,
            type="llm.call",
            runner_id=meta.runner_id,
            session_id=meta.session_id,
            data={
                "call_id": meta.id,
                "model": meta.model,
                "provider": meta.provider,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "usage": "estimated" if usage.estimated else "reported",
                "cost_usd": cost,
                "latency_ms": call.latency_ms,
                "status": status,
                "stream": meta.stream,
            },
        )
        await self._store.apply([RecordLlmCall(call), AppendAudit(event)])
        logger.info(
            "llm call %s by %s: %s/%s status=%d tokens=%d+%d%s cost_usd=%.6f latency_ms=%.0f",
            meta.id,
            meta.actor,
            meta.provider,
            meta.model,
            status,
            usage.prompt_tokens,
            usage.completion_tokens,
            " (estimated)" if usage.estimated else "",
            cost,
            latency_ms,
        )
        return call
