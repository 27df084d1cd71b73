"""Token usage by kind, read from what each protocol reports, or estimated from text length.

Every count is normalized to OpenAI's meaning: `prompt_tokens` is ALL input (cached reads and
cache writes included), `completion_tokens` is all output (reasoning included). Anthropic reports
cache reads and writes beside `input_tokens`, so they are added in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Usage",
    "anthropic_usage",
    "estimate_tokens",
    "openai_usage",
    "request_text_chars",
    "responses_usage",
    "text_chars",
]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    """True when the provider reported nothing and the counts come from text length."""


def estimate_tokens(chars: int) -> int:
    """A deliberately simple estimate (4 characters per token, rounded up) for missing usage."""
    return math.ceil(chars / 4)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: dict[str, Any], key: str, field: str) -> int:
    details = usage.get(key)
    return _int(details.get(field)) if isinstance(details, dict) else 0


def openai_usage(value: Any) -> Usage | None:
    """From a chat completions or embeddings `usage` object, if it holds token counts."""
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens")
    if not isinstance(prompt, int):
        return None
    completion = value.get("completion_tokens")
    return Usage(
        prompt_tokens=_int(prompt),
        completion_tokens=_int(completion),
        cached_tokens=_details(value, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_details(value, "completion_tokens_details", "reasoning_tokens"),
    )


def responses_usage(value: Any) -> Usage | None:
    """From a Responses API `usage` object (`input_tokens`, `output_tokens`, details)."""
    if not isinstance(value, dict) or not isinstance(value.get("input_tokens"), int):
        return None
    return Usage(
        prompt_tokens=_int(value.get("input_tokens")),
        completion_tokens=_int(value.get("output_tokens")),
        cached_tokens=_details(value, "input_tokens_details", "cached_tokens"),
        reasoning_tokens=_details(value, "output_tokens_details", "reasoning_tokens"),
    )


def anthropic_usage(value: Any, *, base: Usage | None = None) -> Usage | None:
    """From an Anthropic `usage` object. In a stream, `message_delta` repeats only some counts:
    pass the `message_start` usage as `base` and the fields it lacks are kept."""
    if not isinstance(value, dict):
        return None
    keys = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    if base is None and not isinstance(value.get("input_tokens"), int):
        return None
    if base is not None:
        fresh = base.prompt_tokens - base.cached_tokens - base.cache_write_tokens
        uncached = _int(value["input_tokens"]) if keys[0] in value else fresh
        read = _int(value[keys[1]]) if keys[1] in value else base.cached_tokens
        write = _int(value[keys[2]]) if keys[2] in value else base.cache_write_tokens
        output = base.completion_tokens
        if "output_tokens" in value:
            output = _int(value["output_tokens"])
    else:
        uncached, read, write = (_int(value.get(k)) for k in keys)
        output = _int(value.get("output_tokens"))
    return Usage(
        prompt_tokens=uncached + read + write,
        completion_tokens=output,
        cached_tokens=read,
        cache_write_tokens=write,
    )


def text_chars(content: Any) -> int:
    """Characters of text in a `content`: a string, or a list of parts/blocks holding `text`
    (Anthropic tool results nest another content list)."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                for key in ("text", "thinking", "arguments"):
                    if isinstance(part.get(key), str):
                        total += len(part[key])
                if "content" in part:
                    total += text_chars(part["content"])
                if isinstance(part.get("input"), dict):
                    total += len(str(part["input"]))
        return total
    return 0


def request_text_chars(messages: Iterable[Any], *extra: Any) -> int:
    """Characters of text in a request's messages (and `system`/`instructions`/`input`)."""
    total = sum(text_chars(x) for x in extra)
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += text_chars(message.get("content"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                total += len(function["arguments"])
    return total
