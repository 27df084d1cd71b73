"""Where the text, tools, output cap and reasoning settings sit in each protocol's request.

One walker (`_slots`) finds every text slot of a body, with the role of whoever wrote it:
`system`, `user`, `assistant` or `tool` (tool results, which agents feed back, and are scanned
like user input). Reading (`extract_texts`) and rewriting (`rewrite_texts`, for redaction) both
go through it, so they cannot disagree about what a request contains.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "AgentTurns",
    "Text",
    "agent_turns",
    "extract_texts",
    "max_output_tokens",
    "reasoning_request",
    "rewrite_texts",
    "texts_by_role",
    "tool_names",
    "with_max_output_tokens",
]

Slot = tuple[str, Any, Any]
"""(role, container, key): `container[key]` is a string."""


class Text(NamedTuple):
    role: str
    text: str


# The walker appends to one list instead of chaining generators: a 35 KB agent request has
# about 80 texts, and every check that reads content starts here (see bench/chain).


def _blocks(out: list[Slot], role: str, content: Any) -> None:
    """A `content` list of parts/blocks (tool results nest another content)."""
    if type(content) is not list:
        return
    for part in content:
        if type(part) is not dict:
            continue
        if part.get("type") == "tool_result":
            inner = part.get("content")
            if type(inner) is str:
                out.append(("tool", part, "content"))
            else:
                _blocks(out, "tool", inner)
            continue
        if type(part.get("text")) is str:
            out.append((role, part, "text"))
        if type(part.get("thinking")) is str:
            out.append((role, part, "thinking"))


def _content(out: list[Slot], role: str, holder: Any, key: str) -> None:
    value = holder.get(key) if type(holder) is dict else None
    if type(value) is str:
        out.append((role, holder, key))
    else:
        _blocks(out, role, value)


_ROLES = {"system": "system", "developer": "system", "assistant": "assistant", "tool": "tool"}
_ROLES["function"] = "tool"


def _role(value: Any) -> str:
    return _ROLES.get(value, "user") if type(value) is str else "user"


def _slots(endpoint: str, body: Mapping[str, Any]) -> list[Slot]:
    out: list[Slot] = []
    if endpoint == "embeddings":
        given = body.get("input")
        if type(given) is str:
            out.append(("user", body, "input"))
        elif type(given) is list:
            out.extend(("user", given, i) for i, item in enumerate(given) if type(item) is str)
        return out
    if endpoint == "responses":
        _content(out, "system", body, "instructions")
        given = body.get("input")
        if type(given) is str:
            out.append(("user", body, "input"))
            return out
        for item in given if type(given) is list else ():
            if type(item) is not dict:
                continue
            kind = item.get("type")
            if kind == "function_call_output":
                _content(out, "tool", item, "output")
            elif kind == "function_call":
                _content(out, "assistant", item, "arguments")
            else:
                _content(out, _role(item.get("role")), item, "content")
        return out
    if endpoint in ("messages", "count_tokens"):
        _content(out, "system", body, "system")
    roles = _ROLES
    for message in body.get("messages") or ():
        # `_content` and `_role` inlined: this loop runs once per message of every call.
        if type(message) is not dict:
            continue
        role = message.get("role")
        role = roles.get(role, "user") if type(role) is str else "user"
        content = message.get("content")
        if type(content) is str:
            out.append((role, message, "content"))
        elif content is not None:
            _blocks(out, role, content)
        for call in message.get("tool_calls") or ():
            function = call.get("function") if type(call) is dict else None
            if type(function) is dict and type(function.get("arguments")) is str:
                out.append(("assistant", function, "arguments"))
    return out


def extract_texts(endpoint: str, body: Mapping[str, Any]) -> tuple[Text, ...]:
    return tuple([Text(role, holder[key]) for role, holder, key in _slots(endpoint, body)])


def texts_by_role(endpoint: str, body: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every text of the request, grouped by role, in order."""
    out: dict[str, list[str]] = {}
    for role, holder, key in _slots(endpoint, body):
        kept = out.get(role)
        if kept is None:
            out[role] = [holder[key]]
        else:
            kept.append(holder[key])
    return out


def rewrite_texts(
    endpoint: str, body: Mapping[str, Any], fn: Callable[[str, str], str]
) -> dict[str, Any]:
    """A copy of `body` with every text replaced by `fn(role, text)`; the original is kept."""
    copied: dict[str, Any] = copy.deepcopy(dict(body))
    for role, holder, key in _slots(endpoint, copied):
        target: MutableMapping[Any, Any] | MutableSequence[Any] = holder
        target[key] = fn(role, holder[key])
    return copied


def tool_names(endpoint: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if endpoint == "chat" and isinstance(function, dict):
            name = function.get("name")
        else:
            name = tool.get("name") or tool.get("type")
        if isinstance(name, str) and name:
            names.append(name)
    return tuple(names)


_OUTPUT_CAPS = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "messages": ("max_tokens",),
    "responses": ("max_output_tokens",),
}


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def max_output_tokens(endpoint: str, body: Mapping[str, Any]) -> int | None:
    for key in _OUTPUT_CAPS.get(endpoint, ()):
        if (value := _positive_int(body.get(key))) is not None:
            return value
    return None


def with_max_output_tokens(endpoint: str, body: Mapping[str, Any], tokens: int) -> dict[str, Any]:
    """A copy of `body` whose output cap is `tokens` (in the field its protocol uses)."""
    keys = _OUTPUT_CAPS.get(endpoint)
    out = dict(body)
    if not keys:
        return out
    present = [k for k in keys if k in out]
    for key in present or keys[:1]:
        out[key] = tokens
    return out


def reasoning_request(endpoint: str, body: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(effort, budget tokens): OpenAI `reasoning_effort` (chat) or `reasoning.effort`
    (responses); Anthropic `thinking: {type: enabled, budget_tokens}`."""
    if endpoint == "chat":
        effort = body.get("reasoning_effort")
        return (effort if isinstance(effort, str) else None), None
    if endpoint == "responses":
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        return (effort if isinstance(effort, str) else None), None
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return "enabled", _positive_int(thinking.get("budget_tokens"))
    return None, None


@dataclass(frozen=True)
class AgentTurns:
    """What the agent did since the last message a person wrote (tool results do not count as
    one): how many model turns asked for tools, and the calls, in order, as (name, arguments
    as sent). `last(n)` gives the last calls with canonical arguments (so the same call
    compares equal however it is spaced); only those are parsed."""

    iterations: int
    raw_calls: tuple[tuple[str, Any], ...]

    def last(self, n: int) -> tuple[tuple[str, str], ...]:
        return tuple((name, _canonical(args)) for name, args in self.raw_calls[-n:])

    @property
    def calls(self) -> tuple[tuple[str, str], ...]:
        return self.last(len(self.raw_calls)) if self.raw_calls else ()


def _canonical(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return str(arguments).strip()
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"))


def _is_person(endpoint: str, message: Mapping[str, Any]) -> bool:
    if message.get("role") != "user":
        return False
    if endpoint != "messages":
        return True
    content = message.get("content")
    if isinstance(content, list):  # a user turn made only of tool results is the agent's loop
        return any(isinstance(b, dict) and b.get("type") != "tool_result" for b in content)
    return True


def _turn_calls(endpoint: str, item: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The tool calls of one assistant turn (Responses: one `function_call` item)."""
    if endpoint == "responses":
        if item.get("type") == "function_call":
            return [(str(item.get("name")), item.get("arguments"))]
        return []
    if item.get("role") != "assistant":
        return []
    if endpoint == "messages":
        blocks = item.get("content")
        return [
            (str(b.get("name")), b.get("input"))
            for b in (blocks if isinstance(blocks, list) else ())
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]
    out = []
    for call in item.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            out.append((str(function.get("name")), function.get("arguments")))
    return out


def agent_turns(endpoint: str, body: Mapping[str, Any]) -> AgentTurns:
    if endpoint == "responses":
        items = body.get("input")
    elif endpoint in ("chat", "messages"):
        items = body.get("messages")
    else:
        return AgentTurns(0, ())
    if not isinstance(items, list):
        return AgentTurns(0, ())
    start = 0
    for i in range(len(items) - 1, -1, -1):  # from the end: the last person's message
        item = items[i]
        if isinstance(item, dict) and _is_person(endpoint, item):
            start = i + 1
            break
    iterations = 0
    calls: list[tuple[str, Any]] = []
    for item in items[start:]:
        if isinstance(item, dict) and (turn := _turn_calls(endpoint, item)):
            iterations += 1
            calls.extend(turn)
    return AgentTurns(iterations, tuple(calls))
