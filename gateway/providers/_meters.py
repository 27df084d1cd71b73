"""Watching SSE streams go by: only what costing needs, never the text itself.

A meter keeps the usage the provider reported and the number of characters of generated text
(for the estimate when a stream ends before its usage arrives). Each protocol puts usage in one
place: OpenAI chat in its last chunk, the Responses API in `response.completed`, Anthropic in
`message_start` (input) and `message_delta` (output).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .._usage import Usage, anthropic_usage, openai_usage, responses_usage, text_chars

__all__ = [
    "AnthropicMeter",
    "ChatMeter",
    "Meter",
    "PassThrough",
    "ResponsesMeter",
    "SseSplitter",
    "StreamHandler",
]

# One SSE line longer than this is not a chunk anybody meters; it is skipped, not buffered.
_MAX_LINE = 1024 * 1024


class SseSplitter:
    """Cuts a byte stream into the payloads of its `data:` lines, across any chunking."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if b"\n" not in data and not self._pending and not self._skipping:
            self._pending += data
        else:
            self._pending += data
            while (end := self._pending.find(b"\n")) >= 0:
                line = bytes(self._pending[:end])
                del self._pending[: end + 1]
                if self._skipping:
                    self._skipping = False
                elif line.startswith(b"data:"):
                    out.append(line[5:].strip())
        if len(self._pending) > _MAX_LINE:
            self._pending.clear()
            self._skipping = True
        return out


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class Meter(Protocol):
    usage: Usage | None
    completion_chars: int
    done: bool
    """The provider has said everything it will say (`[DONE]`, `message_stop`, ...)."""
    started: Usage | None
    """Input counts told before the answer (Anthropic `message_start`), else None."""

    def event(self, event: dict[str, Any]) -> None: ...

    def payload(self, data: bytes) -> dict[str, Any] | None:
        """Meter one `data:` payload; the parsed event, or None when it is not JSON."""
        ...


class _BaseMeter:
    """The state every meter keeps, and the parse-then-`event` step they share."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.completion_chars = 0
        self.done = False
        self.started: Usage | None = None

    def event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def payload(self, data: bytes) -> dict[str, Any] | None:
        event = _json(data)
        if event is not None:
            self.event(event)
        return event


class ChatMeter(_BaseMeter):
    """OpenAI chat completions chunks."""

    def payload(self, data: bytes) -> dict[str, Any] | None:
        if data == b"[DONE]":
            self.done = True
            return None
        return super().payload(data)

    def event(self, event: dict[str, Any]) -> None:
        if (usage := openai_usage(event.get("usage"))) is not None:
            self.usage = usage
        for choice in event.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            self.completion_chars += text_chars(delta.get("content"))
            for key in ("reasoning_content", "reasoning", "refusal"):
                if isinstance(delta.get(key), str):
                    self.completion_chars += len(delta[key])
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    for key in ("name", "arguments"):
                        if isinstance(function.get(key), str):
                            self.completion_chars += len(function[key])


class ResponsesMeter(_BaseMeter):
    """OpenAI Responses API events."""

    _FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if isinstance(kind, str) and kind.endswith(".delta"):
            delta = event.get("delta")
            self.completion_chars += len(delta) if isinstance(delta, str) else 0
        elif kind in self._FINAL:
            response = event.get("response")
            if isinstance(response, dict):
                self.usage = responses_usage(response.get("usage")) or self.usage
            self.done = True


class AnthropicMeter(_BaseMeter):
    """Anthropic Messages events; `started` is the usage of `message_start` (input counts)."""

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "partial_json", "thinking"):
                    if isinstance(delta.get(key), str):
                        self.completion_chars += len(delta[key])
        elif kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self.started = anthropic_usage(message.get("usage"))
        elif kind == "message_delta":
            usage = anthropic_usage(event.get("usage"), base=self.started or Usage(0, 0))
            if usage is not None:
                self.usage = usage
        elif kind == "message_stop":
            self.done = True


class StreamHandler(Protocol):
    """What the relay runs every upstream chunk through: meter it, and say what the client
    gets for it (the same bytes, or the same events translated to the client's protocol)."""

    @property
    def meter(self) -> Meter: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes:
        """Bytes to send when upstream ended cleanly (a translation closes its events)."""
        ...


class PassThrough:
    """Same protocol both sides: the client gets upstream's bytes as they arrive."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._split = SseSplitter()

    def feed(self, chunk: bytes) -> bytes:
        for data in self._split.feed(chunk):
            self.meter.payload(data)
        return chunk

    def finish(self) -> bytes:
        return b""
