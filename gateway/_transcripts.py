"""What a session's transcript gets from the gateway: per call, the turn the agent sent (the
person's message or the tool results since its previous call) and what the model answered
(text and tool calls). Read from the client's side of the exchange: the body as forwarded
(after the chain's redactions) and the answer as the client got it, streamed or not."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from paddock_core import Redactor, TranscriptEntry, TranscriptSettings, make_entry

from .checks import Text, extract_texts

__all__ = ["Part", "reply_entries", "reply_parts", "request_entries", "sse_reply_parts"]

Part = tuple[str, str, str | None]
"""(kind, text, tool name): `model_reply` text, or a `tool_call` with its arguments."""


def _latest_turn(endpoint: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The body cut down to what came after the model's last turn."""
    key = "input" if endpoint == "responses" else "messages"
    items = body.get(key)
    if not isinstance(items, list):
        return dict(body) if endpoint == "responses" else {}
    last = -1
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        if item.get("role") == "assistant" or item.get("type") == "function_call":
            last = i
    return {key: items[last + 1 :]}


def request_entries(
    *,
    org_id: str,
    session_id: str,
    runner_id: str | None,
    call_id: str,
    model: str,
    endpoint: str,
    body: Mapping[str, Any],
    settings: TranscriptSettings,
    redact: Redactor,
) -> list[TranscriptEntry]:
    texts: tuple[Text, ...] = extract_texts(endpoint, _latest_turn(endpoint, body))
    return [
        make_entry(
            org_id=org_id,
            session_id=session_id,
            runner_id=runner_id,
            kind="tool_result" if t.role == "tool" else "model_request",
            role=t.role,
            source="gateway",
            text=t.text,
            keep=settings.content,
            redact=redact,
            data={"call_id": call_id, "model": model},
        )
        for t in texts
        if t.role in ("user", "tool")
    ]


def reply_parts(endpoint: str, data: Any) -> list[Part]:
    """Text and tool calls of a whole (non-streamed) answer, in the client's protocol."""
    out: list[Part] = []
    if not isinstance(data, dict):
        return out
    if endpoint == "chat":
        for choice in (data.get("choices") or [])[:1]:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("content"), str) and message["content"]:
                out.append(("model_reply", message["content"], None))
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    args = function.get("arguments")
                    out.append(("tool_call", str(args or ""), str(function.get("name"))))
    elif endpoint == "messages":
        for block in data.get("content") or ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                out.append(("model_reply", block["text"], None))
            elif block.get("type") == "tool_use":
                args = json.dumps(block.get("input") or {}, separators=(",", ":"))
                out.append(("tool_call", args, str(block.get("name"))))
    elif endpoint == "responses":
        for item in data.get("output") or ():
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call":
                out.append(("tool_call", str(item.get("arguments") or ""), str(item.get("name"))))
            for part in item.get("content") or ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append(("model_reply", part["text"], None))
    return out


def _events(sse: bytes) -> Iterator[dict[str, Any]]:
    for line in sse.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def sse_reply_parts(endpoint: str, sse: bytes) -> list[Part]:
    """The same as `reply_parts`, put together from a whole stream the client got."""
    text: list[str] = []
    calls: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for event in _events(sse):
        if endpoint == "responses" and event.get("type") == "response.completed":
            return reply_parts("responses", event.get("response"))
        if endpoint == "chat":
            for choice in event.get("choices") or ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if not isinstance(delta, dict):
                    continue
                if isinstance(delta.get("content"), str):
                    text.append(delta["content"])
                for call in delta.get("tool_calls") or ():
                    index = call.get("index", 0) if isinstance(call, dict) else 0
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        if function.get("name"):
                            names[index] = str(function["name"])
                        calls.setdefault(index, []).append(str(function.get("arguments") or ""))
        elif endpoint == "messages":
            index = event.get("index", 0)
            if event.get("type") == "content_block_start":
                block = event.get("content_block") or {}
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    names[index] = str(block.get("name"))
                    calls.setdefault(index, [])
            elif event.get("type") == "content_block_delta":
                delta = event.get("delta") or {}
                if isinstance(delta, dict) and isinstance(delta.get("text"), str):
                    text.append(delta["text"])
                elif isinstance(delta, dict) and isinstance(delta.get("partial_json"), str):
                    calls.setdefault(index, []).append(delta["partial_json"])
    whole = "".join(text)
    out: list[Part] = [("model_reply", whole, None)] if whole else []
    out += [("tool_call", "".join(calls[i]), names.get(i)) for i in sorted(calls)]
    return out


def reply_entries(
    *,
    org_id: str,
    session_id: str,
    runner_id: str | None,
    call_id: str,
    model: str,
    parts: list[Part],
    settings: TranscriptSettings,
    redact: Redactor,
    unseen_chars: int = 0,
) -> list[TranscriptEntry]:
    """`unseen_chars`: a streamed reply that was not kept (no consent, or too long): its size,
    recorded as a reply without text."""
    seen: list[tuple[str, str | None, str | None]] = list(parts)
    if not seen and unseen_chars:
        seen = [("model_reply", None, None)]
    return [
        make_entry(
            org_id=org_id,
            session_id=session_id,
            runner_id=runner_id,
            kind=kind,
            role="assistant",
            source="gateway",
            text=text,
            chars=unseen_chars if text is None else None,
            keep=settings.content,
            redact=redact,
            data={"call_id": call_id, "model": model, **({"tool": tool} if tool else {})},
        )
        for kind, text, tool in seen
    ]
