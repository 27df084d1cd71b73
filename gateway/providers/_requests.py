"""Request translation between OpenAI chat completions and Anthropic messages.

Each direction maps what has a meaning on the other side, drops only fields that change nothing
about the answer (`store`, `user` hints, ...), and refuses the rest with a 400 that names the
field: a silently ignored `n: 3` or `top_k` would hand the client an answer it did not ask for.
"""

from __future__ import annotations

import json
from typing import Any

from paddock_core import InvalidRequestError

__all__ = ["chat_to_messages", "messages_to_chat"]

_REASONING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}


def _unsupported(field: str, target: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"`{field}` is not supported when the model is served over the {target} protocol",
        field=field,
        reason="unsupported_field",
    )


def _bad(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, field=field, reason="invalid_field")


# --- OpenAI chat -> Anthropic messages --------------------------------------------------------

_CHAT_DROPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "store",
        "service_tier",
        "seed",
        "prompt_cache_key",
        "safety_identifier",
        "verbosity",
        "parallel_tool_calls",
    }
)
_CHAT_MAPPED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "user",
        "metadata",
        "reasoning_effort",
        "n",
    }
)


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        return {"type": "base64", "media_type": media, "data": data}
    return {"type": "url", "url": url}


def _chat_content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(where, f"`{where}.content` must be a string or a list of parts")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _bad(where, "an `image_url` part needs a URL")
            blocks.append({"type": "image", "source": _image_source(url)})
        else:
            raise _unsupported(f"{where}.content[].type={kind}", "Anthropic")
    return blocks


def _tool_input(arguments: Any, where: str) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        raise _bad(where, f"`{where}` tool call arguments are not JSON") from None
    return value if isinstance(value, dict) else {"value": value}


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user and assistant turns to alternate: merge neighbours of one role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _chat_messages(raw: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(where, f"`{where}` must be an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_chat_content_blocks(content, where))
        elif role == "user":
            _append(out, "user", _chat_content_blocks(content, where))
        elif role == "assistant":
            blocks = _chat_content_blocks(content, where)
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise _bad(where, f"`{where}.tool_calls` entries need a function name")
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or f"toolu_{i}"),
                        "name": function["name"],
                        "input": _tool_input(function.get("arguments"), where),
                    }
                )
            _append(out, "assistant", blocks)
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or ""),
                "content": _chat_content_blocks(content, where) or "",
            }
            _append(out, "user", [result])
        else:
            raise _bad(f"{where}.role", f"unknown role {role!r} in `{where}`")
    return system, out


def _chat_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "`tools` must be a list")
    out = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not function:
            raise _unsupported("tools[].type", "Anthropic")
        out.append(
            {
                "name": function.get("name"),
                "description": function.get("description", ""),
                "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
            }
        )
    return out


def _chat_tool_choice(choice: Any, parallel: Any) -> dict[str, Any]:
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise _bad("tool_choice", f"unknown `tool_choice` {choice!r}")
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def chat_to_messages(body: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat completions body as an Anthropic messages body."""
    for field in body:
        if field not in _CHAT_DROPPED and field not in _CHAT_MAPPED:
            raise _unsupported(field, "Anthropic")
    if body.get("n", 1) != 1:
        raise _unsupported("n", "Anthropic")
    system, messages = _chat_messages(body["messages"])
    if not messages:
        raise _bad("messages", "`messages` needs at least one user message")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if system:
        out["system"] = system
    if body.get("stream"):
        out["stream"] = True
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(src) is not None:
            out[dst] = body[src]
    stop = body.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = _chat_tools(body["tools"])
        out["tool_choice"] = _chat_tool_choice(
            body.get("tool_choice"), body.get("parallel_tool_calls")
        )
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    effort = body.get("reasoning_effort")
    budget = _REASONING_BUDGET.get(effort) if isinstance(effort, str) else None
    if budget is not None and max_tokens > 1024:
        out["thinking"] = {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}
        out.pop("temperature", None)  # Anthropic refuses a temperature with thinking on
    return out


# --- Anthropic messages -> OpenAI chat --------------------------------------------------------

_MESSAGES_DROPPED = frozenset({"model", "messages", "stream", "service_tier"})
_MESSAGES_MAPPED = frozenset(
    {
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
    }
)


def _text_of(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    parts = []
    for block in blocks if isinstance(blocks, list) else ():
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _message_parts(blocks: list[Any], where: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """(OpenAI content parts, Anthropic tool_result blocks) of a user message."""
    parts: list[dict[str, Any]] = []
    results: list[Any] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            else:
                url = str(source.get("url"))
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_result":
            results.append(block)
        else:
            raise _unsupported(f"{where}.content[].type={kind}", "OpenAI")
    return parts, results


def _anthropic_messages(raw: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(where, f"`{where}` must be an object")
        role, content = message.get("role"), message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise _bad(where, f"`{where}.content` must be a string or a list of blocks")
        if role == "user":
            parts, results = _message_parts(blocks, where)
            for result in results:
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": str(result.get("tool_use_id", "")),
                        "content": _text_of(result.get("content", "")),
                    }
                )
            if parts:
                only_text = all(p["type"] == "text" for p in parts)
                joined = "".join(p["text"] for p in parts) if only_text else parts
                out.append({"role": "user", "content": joined})
        elif role == "assistant":
            text, calls = [], []
            for block in blocks:
                kind = block.get("type") if isinstance(block, dict) else None
                if kind == "text":
                    text.append(str(block.get("text", "")))
                elif kind == "tool_use":
                    arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
                    function = {"name": block.get("name"), "arguments": arguments}
                    calls.append({"id": block.get("id"), "type": "function", "function": function})
                elif kind in ("thinking", "redacted_thinking"):
                    continue  # an OpenAI-protocol model cannot take another model's thinking
                else:
                    raise _unsupported(f"{where}.content[].type={kind}", "OpenAI")
            turn: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
        else:
            raise _bad(f"{where}.role", f"unknown role {role!r} in `{where}`")
    return out


def _anthropic_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "`tools` must be a list")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or "input_schema" not in tool:
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(f"tools[].type={kind}", "OpenAI")
        function = {
            "name": tool.get("name"),
            "description": tool.get("description", ""),
            "parameters": tool["input_schema"],
        }
        out.append({"type": "function", "function": function})
    return out


def _anthropic_tool_choice(choice: Any) -> tuple[Any, bool | None]:
    if not isinstance(choice, dict):
        raise _bad("tool_choice", "`tool_choice` must be an object")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}, parallel
    raise _bad("tool_choice", f"unknown `tool_choice.type` {kind!r}")


def messages_to_chat(body: dict[str, Any], model: str, max_tokens_field: str) -> dict[str, Any]:
    """An Anthropic messages body as an OpenAI chat completions body."""
    for field in body:
        if field not in _MESSAGES_DROPPED and field not in _MESSAGES_MAPPED:
            raise _unsupported(field, "OpenAI")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        raise _unsupported("thinking", "OpenAI")
    messages = _anthropic_messages(body["messages"])
    system = body.get("system")
    if system:
        messages.insert(0, {"role": "system", "content": _text_of(system)})
    out: dict[str, Any] = {"model": model, "messages": messages}
    if isinstance(body.get("max_tokens"), int):
        out[max_tokens_field] = body["max_tokens"]
    if body.get("stream"):
        out["stream"] = True
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            out[field] = body[field]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        out["tools"] = _anthropic_tools(body["tools"])
        if body.get("tool_choice") is not None:
            out["tool_choice"], parallel = _anthropic_tool_choice(body["tool_choice"])
            if parallel is not None:
                out["parallel_tool_calls"] = parallel
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out
