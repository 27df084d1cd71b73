"""What the fake provider answers, read from the conversation: deterministic and on demand.

Triggers, in the LAST user message (ECHO: the most recent user message that has one, since
agents resend the whole conversation every turn):

    ECHO:<word>         the reply is `Fake reply. ECHO:<word>` (the word ends at space or <)
    TOOL:<name>         the reply is a call of tool <name> with arguments {"echo": "<word>"}
                        (the ECHO word, else "x"); the request must offer that tool
    FAIL:<status>       answer that 4xx/5xx status (also: header `X-Fake-Fail: <status>`)
    FLAKY:<tag>:<n>     the first <n> requests carrying this tag fail with 503, then succeed
    SLOW:<ms>           pause that many milliseconds before each delta of a stream
    FIRST:<ms>          pause that many milliseconds before the FIRST delta (headers go at once)
    CUT:<n>             a stream breaks off (connection dropped) after <n> text deltas
    CACHED:<n>          report <n> of the prompt tokens as read from the provider's cache
    REASON:<n>          report <n> reasoning tokens (part of the completion)
    NO_USAGE            report no usage at all
    FLAG:<category>     (moderations) flag the input in that category; FIRST delays the answer

Token counts: prompt = ceil(characters of all input text / 4), completion = ceil(reply / 4)
(for a tool call: of its name and JSON arguments) plus REASON. Like a provider, a text reply
stops at the request's output cap (`max_tokens` and kin: 4 characters a token).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import Response

__all__ = [
    "DEFAULT_REPLY",
    "FakeState",
    "Script",
    "flagged_categories",
    "read_json",
    "read_script",
    "text_of",
    "tokens",
]

DEFAULT_REPLY = "Fake reply from the Paddock fake provider."

_ECHO = re.compile(r"ECHO:([^\s<]+)")
_INT = {
    name: re.compile(rf"{name}:(\d+)")
    for name in ("FAIL", "SLOW", "FIRST", "CUT", "CACHED", "REASON")
}
_TOOL = re.compile(r"TOOL:([A-Za-z0-9_.-]+)")
_FLAKY = re.compile(r"FLAKY:([A-Za-z0-9_-]+):(\d+)")
_FLAG = re.compile(r"FLAG:([a-z][a-z/_-]*)")
_MAX_PAUSE_MS = 10_000


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def flagged_categories(text: str) -> list[str]:
    """The moderation categories a text asks to be flagged in (`FLAG:<category>`)."""
    return sorted(set(_FLAG.findall(text)))


def text_of(content: Any) -> str:
    """The text of a `content`: a string, or parts/blocks holding `text` (tool results nest)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                if "content" in part:
                    out.append(text_of(part["content"]))
        return "".join(out)
    return ""


class FakeState:
    """Per-app memory: request counts (for tests to see what reached the provider) and FLAKY
    counters. Lives on the app, never in a module global."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.flaky: dict[str, int] = {}
        self.last_bodies: list[dict[str, Any]] = []

    def seen(self, path: str, body: dict[str, Any]) -> None:
        self.requests[path] = self.requests.get(path, 0) + 1
        self.last_bodies = [*self.last_bodies[-19:], body]


@dataclass(frozen=True)
class Script:
    reply: str
    tool: str | None
    tool_arguments: str
    fail: int | None
    pause_s: float
    first_pause_s: float
    cut_after: int | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    usage: bool

    def words(self) -> list[str]:
        return re.findall(r"\S+\s*", self.reply)


def _int(name: str, text: str) -> int | None:
    match = _INT[name].search(text)
    return int(match.group(1)) if match else None


def read_script(
    user_texts: list[str],
    all_text_chars: int,
    headers: Mapping[str, str],
    state: FakeState,
    tool_names: Iterable[str] = (),
    max_tokens: Any = None,
) -> Script:
    last = user_texts[-1] if user_texts else ""
    word = None
    for text in reversed(user_texts):
        if match := _ECHO.search(text):
            word = match.group(1)
            break
    reply = f"Fake reply. ECHO:{word}" if word else DEFAULT_REPLY
    fail = _int("FAIL", last)
    header = headers.get("x-fake-fail", "")
    if header.isdigit():
        fail = int(header)
    if (flaky := _FLAKY.search(last)) is not None:
        tag, times = flaky.group(1), int(flaky.group(2))
        count = state.flaky.get(tag, 0)
        state.flaky[tag] = count + 1
        if count < times:
            fail = 503
    if fail is not None and not 400 <= fail <= 599:
        fail = None
    tool = None
    arguments = ""
    if (match := _TOOL.search(last)) is not None and match.group(1) in set(tool_names):
        tool = match.group(1)
        arguments = json.dumps({"echo": word or "x"})
    reasoning = _int("REASON", last) or 0
    if isinstance(max_tokens, int) and max_tokens > 0 and not tool:
        reply = reply[: max(max_tokens - reasoning, 0) * 4]
    generated = len(tool) + len(arguments) if tool else len(reply)
    prompt = tokens(all_text_chars)
    return Script(
        reply=reply,
        tool=tool,
        tool_arguments=arguments,
        fail=fail,
        pause_s=min(_int("SLOW", last) or 0, _MAX_PAUSE_MS) / 1000,
        first_pause_s=min(_int("FIRST", last) or 0, _MAX_PAUSE_MS) / 1000,
        cut_after=_int("CUT", last),
        prompt_tokens=prompt,
        completion_tokens=tokens(generated) + reasoning,
        cached_tokens=min(_int("CACHED", last) or 0, prompt),
        reasoning_tokens=reasoning,
        usage="NO_USAGE" not in last,
    )


async def read_json(
    request: Request,
    refuse: Callable[[Request], Response | None],
    state: FakeState,
    error: Callable[[int, str], Response],
) -> dict[str, Any] | Response:
    """The request's JSON object, seen in `state`; or the refusal (auth, bad JSON, not an
    object) as `error` shapes it for the protocol."""
    if (refused := refuse(request)) is not None:
        return refused
    try:
        body = await request.json()
    except ValueError as exc:
        return error(400, f"invalid JSON body: {exc}")
    if not isinstance(body, dict):
        return error(400, "body must be an object")
    state.seen(request.url.path, body)
    return body
