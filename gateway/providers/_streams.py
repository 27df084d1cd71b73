"""Streams translated event by event between Anthropic messages and OpenAI chat chunks.

Nothing is held back: each upstream event becomes its client events as soon as it is complete.
The meter runs on the upstream side, so usage is read where the provider put it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from .._usage import Usage
from ._meters import AnthropicMeter, ChatMeter, SseSplitter
from ._replies import FINISH_TO_STOP, STOP_TO_FINISH, anthropic_usage_body, chat_usage_body

__all__ = ["AnthropicToChat", "ChatToAnthropic", "sse_data", "sse_event"]


def sse_data(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def sse_event(name: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class AnthropicToChat:
    """Anthropic events upstream, OpenAI chat chunks to the client."""

    def __init__(self, model: str) -> None:
        self.meter = AnthropicMeter()
        self._split = SseSplitter()
        self._base = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._tools: dict[int, int] = {}
        """Anthropic content block index -> OpenAI tool_calls index."""
        self._finished = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse_data({**self._base, "choices": [choice]})

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for data in self._split.feed(chunk):
            event = self.meter.payload(data)
            if event is not None:
                out += self._event(event)
        return bytes(out)

    def _event(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if kind == "message_start":
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools.setdefault(int(event.get("index", 0)), len(self._tools))
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(int(event.get("index", 0)), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return self._chunk({"tool_calls": [call]})
            if delta.get("type") == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            return b""
        if kind == "message_delta":
            stop = (event.get("delta") or {}).get("stop_reason")
            return self._chunk({}, STOP_TO_FINISH.get(stop, "stop") if stop else "stop")
        if kind == "message_stop":
            return self._close()
        if kind == "error":
            error = event.get("error") or {}
            body = {
                "message": error.get("message", "provider error"),
                "type": error.get("type", "upstream_error"),
                "code": "upstream_error",
                "param": None,
            }
            return sse_data({"error": body})
        return b""

    def _close(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = b""
        if self.meter.usage is not None:
            usage = chat_usage_body(self.meter.usage)
            out += sse_data({**self._base, "choices": [], "usage": usage})
        return out + b"data: [DONE]\n\n"

    def finish(self) -> bytes:
        return b""


class ChatToAnthropic:
    """OpenAI chat chunks upstream, Anthropic events to the client."""

    def __init__(self, model: str) -> None:
        self.meter = ChatMeter()
        self._split = SseSplitter()
        self._model = model
        self._started = False
        self._stopped = False
        self._block = -1
        """Index of the open content block, -1 when none is open."""
        self._block_kind = ""
        self._next = 0
        self._tool_blocks: dict[int, int] = {}
        self._stop_reason = "end_turn"

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for data in self._split.feed(chunk):
            event = self.meter.payload(data)
            if data == b"[DONE]":
                out += self._stop()
            elif event is not None:
                out += self._event(event)
        return bytes(out)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": f"msg_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self._block < 0:
            return b""
        index, self._block = self._block, -1
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block, self._block_kind = self._next, kind
        self._next += 1
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return out + sse_event("content_block_start", start)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": self._block, "delta": delta}
        return sse_event("content_block_delta", body)

    def _event(self, event: dict[str, Any]) -> bytes:
        if isinstance(event.get("error"), dict):
            return self._error(event["error"])
        out = bytearray(self._start())
        for choice in event.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                text = delta.get("content")
                if isinstance(text, str) and text:
                    if self._block_kind != "text" or self._block < 0:
                        out += self._open("text", {"type": "text", "text": ""})
                    out += self._delta({"type": "text_delta", "text": text})
                for call in delta.get("tool_calls") or ():
                    out += self._tool_call(call)
            finish = choice.get("finish_reason") if isinstance(choice, dict) else None
            if isinstance(finish, str):
                self._stop_reason = FINISH_TO_STOP.get(finish, "end_turn")
        return bytes(out)

    def _tool_call(self, call: Any) -> bytes:
        if not isinstance(call, dict):
            return b""
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        out = b""
        if index not in self._tool_blocks:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{secrets.token_hex(8)}",
                "name": function.get("name") or "",
                "input": {},
            }
            out += self._open("tool", block)
            self._tool_blocks[index] = self._block
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            if self._block != self._tool_blocks[index]:
                return out  # interleaved parallel calls: Anthropic has no way to resume a block
            out += self._delta({"type": "input_json_delta", "partial_json": arguments})
        return out

    def _error(self, error: dict[str, Any]) -> bytes:
        body = {"type": "api_error", "message": str(error.get("message", "provider error"))}
        return sse_event("error", {"type": "error", "error": body})

    def _stop(self) -> bytes:
        if self._stopped:
            return b""
        self._stopped = True
        out = self._start() + self._close_block()
        usage = anthropic_usage_body(self.meter.usage or Usage(0, 0))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
            "usage": usage,
        }
        return (
            out
            + sse_event("message_delta", delta)
            + sse_event("message_stop", {"type": "message_stop"})
        )

    def finish(self) -> bytes:
        # Some OpenAI-compatible servers end without `[DONE]`: close the message all the same.
        return self._stop() if self._started else b""
