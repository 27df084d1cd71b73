"""The Anthropic protocol of the fake provider: messages (stream and not) and count_tokens."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from ._script import FakeState, Script, read_json, read_script, text_of, tokens
from ._sse import Cut, SseResponse, event, pause

__all__ = ["add_anthropic_routes", "anthropic_error"]

Check = Callable[[Request], Response | None]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> JSONResponse:
    kind = _TYPES.get(status, "api_error")
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status)


def _usage(script: Script, *, output: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": script.prompt_tokens - script.cached_tokens,
        "cache_read_input_tokens": script.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": script.completion_tokens if output is None else output,
    }


def _content(script: Script) -> list[dict[str, Any]]:
    if script.tool:
        block = {
            "type": "tool_use",
            "id": f"toolu_{secrets.token_hex(6)}",
            "name": script.tool,
            "input": json.loads(script.tool_arguments),
        }
        return [block]
    return [{"type": "text", "text": script.reply}]


def _input_text(body: dict[str, Any]) -> tuple[list[str], int]:
    users, total = [], len(text_of(body.get("system")))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            text = text_of(message.get("content"))
            total += len(text)
            if message.get("role") == "user":
                users.append(text)
    return users, total


async def _stream(message: dict[str, Any], script: Script) -> AsyncIterator[bytes]:
    start = {**message, "content": [], "stop_reason": None, "usage": _usage(script, output=1)}
    yield event("message_start", {"message": start})
    yield event("ping", {})
    await pause(script.first_pause_s)
    if script.tool:
        block = {**_content(script)[0], "input": {}}
        yield event("content_block_start", {"index": 0, "content_block": block})
        half = len(script.tool_arguments) // 2
        for piece in (script.tool_arguments[:half], script.tool_arguments[half:]):
            await pause(script.pause_s)
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield event("content_block_delta", {"index": 0, "delta": delta})
    else:
        text_block = {"type": "text", "text": ""}
        yield event("content_block_start", {"index": 0, "content_block": text_block})
        for i, word in enumerate(script.words()):
            if script.cut_after is not None and i >= script.cut_after:
                raise Cut
            await pause(script.pause_s)
            delta = {"type": "text_delta", "text": word}
            yield event("content_block_delta", {"index": 0, "delta": delta})
    yield event("content_block_stop", {"index": 0})
    final: dict[str, Any] = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": script.completion_tokens} if script.usage else {}
    yield event("message_delta", {"delta": final, "usage": usage})
    yield event("message_stop", {})


def add_anthropic_routes(
    app: FastAPI, models: tuple[str, ...], refuse: Check, state: FakeState
) -> None:
    async def body_of(request: Request) -> dict[str, Any] | Response:
        body = await read_json(request, refuse, state, anthropic_error)
        if isinstance(body, Response):
            return body
        if body.get("model") not in models:
            return anthropic_error(404, f"model: {body.get('model')}")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return anthropic_error(400, "messages: Field required")
        return body

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("max_tokens"), int):
            return anthropic_error(400, "max_tokens: Field required")
        users, chars = _input_text(body)
        tools = [str(t.get("name")) for t in body.get("tools") or () if isinstance(t, dict)]
        script = read_script(users, chars, request.headers, state, tools, body["max_tokens"])
        if script.fail is not None:
            return anthropic_error(script.fail, f"fake provider failing on purpose ({script.fail})")
        message = {
            "id": f"msg_fake_{secrets.token_hex(6)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": _content(script),
            "stop_reason": "tool_use" if script.tool else "end_turn",
            "stop_sequence": None,
            "usage": _usage(script) if script.usage else {},
        }
        if body.get("stream"):
            return SseResponse(_stream(message, script))
        return JSONResponse(message)

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        _, chars = _input_text(body)
        return JSONResponse({"input_tokens": tokens(chars)})
