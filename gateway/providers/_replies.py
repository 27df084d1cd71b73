"""Whole (non-stream) answers translated between Anthropic messages and OpenAI chat."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from .._usage import Usage

__all__ = [
    "FINISH_TO_STOP",
    "STOP_TO_FINISH",
    "anthropic_usage_body",
    "chat_usage_body",
    "chat_to_message",
    "message_to_chat",
]

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def chat_usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def anthropic_usage_body(usage: Usage) -> dict[str, Any]:
    fresh = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    return {
        "input_tokens": max(fresh, 0),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def message_to_chat(message: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat completion."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if calls:
        reply["tool_calls"] = calls
    stop = message.get("stop_reason")
    choice = {
        "index": 0,
        "message": reply,
        "finish_reason": STOP_TO_FINISH.get(stop, "stop") if isinstance(stop, str) else "stop",
        "logprobs": None,
    }
    out: dict[str, Any] = {
        "id": f"chatcmpl-{message.get('id') or secrets.token_hex(8)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if usage is not None:
        out["usage"] = chat_usage_body(usage)
    return out


def chat_to_message(completion: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic message."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    found = choice.get("message")
    reply: dict[str, Any] = found if isinstance(found, dict) else {}
    content: list[dict[str, Any]] = []
    if isinstance(reply.get("content"), str) and reply["content"]:
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {"arguments": function.get("arguments")}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{secrets.token_hex(8)}",
                "name": function.get("name"),
                "input": arguments if isinstance(arguments, dict) else {"value": arguments},
            }
        )
    finish = choice.get("finish_reason")
    return {
        "id": f"msg_{completion.get('id') or secrets.token_hex(8)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(finish, "end_turn") if isinstance(finish, str) else None,
        "stop_sequence": None,
        "usage": anthropic_usage_body(usage or Usage(0, 0)),
    }
