"""Building call contexts for chain tests (every field given, most defaulted)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.checks import CallContext, Decision, TokenPrice


def make_ctx(**given: Any) -> CallContext:
    body = given.pop("body", {"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]})
    values: dict[str, Any] = {
        "org_id": "org_t",
        "plan": "team",
        "actor": "key:test",
        "runner": None,
        "session": None,
        "key_id": None,
        "team_id": None,
        "user_id": None,
        "endpoint": "chat",
        "requested_model": body.get("model", "fake-gpt"),
        "provider": "fake",
        "model": body.get("model", "fake-gpt"),
        "stream": bool(body.get("stream")),
        "body": body,
        "body_bytes": 100,
        "estimated_prompt_tokens": 10,
        "price": TokenPrice(5e-6, 15e-6),
        "now": 1_800_000_000.0,
    }
    values.update(given)
    return CallContext(**values)


def decide(check: Any, ctx: CallContext) -> Decision:
    """One check's decision about `ctx`."""
    decision: Decision = asyncio.run(check.check(ctx))
    return decision


def chat(*messages: tuple[str, str], **extra: Any) -> dict[str, Any]:
    """A chat completions body of (role, content) messages."""
    return {
        "model": "fake-gpt",
        "messages": [{"role": r, "content": c} for r, c in messages],
        **extra,
    }
