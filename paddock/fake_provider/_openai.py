"""The OpenAI protocol of the fake provider: models, chat completions, responses, embeddings,
moderations."""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from ._script import FakeState, Script, flagged_categories, read_json, read_script, text_of
from ._sse import Cut, SseResponse, data, event, pause

__all__ = ["add_openai_routes", "openai_error"]

Check = Callable[[Request], Response | None]


def openai_error(status: int, message: str, *, code: str | None = None) -> JSONResponse:
    type_ = {429: "rate_limit_error", 401: "invalid_request_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    body = {"error": {"message": message, "type": type_, "code": code, "param": None}}
    return JSONResponse(body, status_code=status)


def _usage(script: Script) -> dict[str, Any]:
    return {
        "prompt_tokens": script.prompt_tokens,
        "completion_tokens": script.completion_tokens,
        "total_tokens": script.prompt_tokens + script.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
    }


def _tool_call(script: Script) -> dict[str, Any]:
    function = {"name": script.tool, "arguments": script.tool_arguments}
    return {"id": f"call_{secrets.token_hex(6)}", "type": "function", "function": function}


async def _chat_stream(
    base: dict[str, Any], script: Script, wants_usage: bool
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
        return data({**base, "object": "chat.completion.chunk", "choices": choices, **extra})

    yield chunk({"role": "assistant", "content": ""})
    await pause(script.first_pause_s)
    if script.tool:
        call = _tool_call(script)
        opening = {**call, "index": 0, "function": {"name": script.tool, "arguments": ""}}
        yield chunk({"tool_calls": [opening]})
        half = len(script.tool_arguments) // 2
        for piece in (script.tool_arguments[:half], script.tool_arguments[half:]):
            await pause(script.pause_s)
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls")
    else:
        for i, word in enumerate(script.words()):
            if script.cut_after is not None and i >= script.cut_after:
                raise Cut
            await pause(script.pause_s)
            yield chunk({"content": word})
        yield chunk({}, "stop")
    if wants_usage and script.usage:
        yield chunk({}, usage=_usage(script))
    yield b"data: [DONE]\n\n"


def _embedding(text: str, dims: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((b - 128) / 128, 6) for b in digest[:dims]]


def _input_texts(body: dict[str, Any]) -> list[str] | Response:
    """The texts of an embeddings or moderations `input` (a token array counts as its text)."""
    given = body.get("input")
    items = [given] if isinstance(given, str) else given
    if not isinstance(items, list) or not items:
        return openai_error(400, "`input` must be a string or a non-empty list")
    return [x if isinstance(x, str) else " ".join(map(str, x)) for x in items]


def _responses_text(given: Any) -> tuple[list[str], int]:
    """(user texts, all input characters) of a Responses `input`."""
    if isinstance(given, str):
        return [given], len(given)
    users, total = [], 0
    for item in given if isinstance(given, list) else ():
        if isinstance(item, dict):
            text = text_of(item.get("content"))
            total += len(text)
            if item.get("role") == "user":
                users.append(text)
    return users, total


async def _responses_stream(done: dict[str, Any], script: Script) -> AsyncIterator[bytes]:
    seq = iter(range(10_000))
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    item_id = done["output"][0]["id"]
    yield event("response.created", {"response": started, "sequence_number": next(seq)})
    empty = {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "status": "in_progress",
    }
    yield event(
        "response.output_item.added",
        {"output_index": 0, "item": empty, "sequence_number": next(seq)},
    )
    await pause(script.first_pause_s)
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    for i, word in enumerate(script.words()):
        if script.cut_after is not None and i >= script.cut_after:
            raise Cut
        await pause(script.pause_s)
        yield event(
            "response.output_text.delta",
            {**where, "delta": word, "logprobs": [], "sequence_number": next(seq)},
        )
    yield event(
        "response.output_text.done",
        {**where, "text": script.reply, "logprobs": [], "sequence_number": next(seq)},
    )
    yield event("response.completed", {"response": done, "sequence_number": next(seq)})


def add_openai_routes(
    app: FastAPI, models: tuple[str, ...], refuse: Check, state: FakeState
) -> None:
    async def body_of(request: Request) -> dict[str, Any] | Response:
        body = await read_json(request, refuse, state, openai_error)
        if isinstance(body, Response):
            return body
        if body.get("model") not in models:
            return openai_error(
                404, f"The model {body.get('model')!r} does not exist", code="model_not_found"
            )
        return body

    async def inputs_of(request: Request) -> tuple[dict[str, Any], list[str], Script] | Response:
        """An embeddings or moderations request: its body, its input texts and its script."""
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        texts = _input_texts(body)
        if isinstance(texts, Response):
            return texts
        script = read_script(texts[-1:], sum(map(len, texts)), request.headers, state)
        if script.fail is not None:
            return openai_error(script.fail, f"fake provider failing on purpose ({script.fail})")
        return body, texts, script

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        data_ = [{"id": m, "object": "model", "created": 0, "owned_by": "paddock"} for m in models]
        return JSONResponse({"object": "list", "data": data_})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return openai_error(400, "`messages` must be a non-empty list")
        dicts = [m for m in messages if isinstance(m, dict)]
        texts = [text_of(m.get("content")) for m in dicts]
        # A tool result is the latest turn, as a user message would be.
        users = [text_of(m.get("content")) for m in dicts if m.get("role") in ("user", "tool")]
        tools = [str(t.get("function", {}).get("name")) for t in body.get("tools") or ()]
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        script = read_script(users, sum(map(len, texts)), request.headers, state, tools, cap)
        if script.fail is not None:
            return openai_error(script.fail, f"fake provider failing on purpose ({script.fail})")
        base = {
            "id": f"chatcmpl-fake-{secrets.token_hex(6)}",
            "created": int(time.time()),
            "model": body["model"],
        }
        if body.get("stream"):
            options = body.get("stream_options")
            wants = isinstance(options, dict) and options.get("include_usage") is True
            return SseResponse(_chat_stream(base, script, wants))
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if script.tool else script.reply,
        }
        if script.tool:
            message["tool_calls"] = [_tool_call(script)]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": "tool_calls" if script.tool else "stop",
        }
        reply = {**base, "object": "chat.completion", "choices": [choice]}
        if script.usage:
            reply["usage"] = _usage(script)
        return JSONResponse(reply)

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        users, chars = _responses_text(body.get("input"))
        instructions = body.get("instructions")
        chars += len(instructions) if isinstance(instructions, str) else 0
        script = read_script(
            users, chars, request.headers, state, max_tokens=body.get("max_output_tokens")
        )
        if script.fail is not None:
            return openai_error(script.fail, f"fake provider failing on purpose ({script.fail})")
        text = {"type": "output_text", "text": script.reply, "annotations": [], "logprobs": []}
        item = {
            "id": f"msg_{secrets.token_hex(6)}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [text],
        }
        usage = {
            "input_tokens": script.prompt_tokens,
            "output_tokens": script.completion_tokens,
            "total_tokens": script.prompt_tokens + script.completion_tokens,
            "input_tokens_details": {"cached_tokens": script.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
        }
        done = {
            "id": f"resp_{secrets.token_hex(8)}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body["model"],
            "output": [item],
            "usage": usage if script.usage else None,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if body.get("stream"):
            return SseResponse(_responses_stream(done, script))
        return JSONResponse(done)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        given = await inputs_of(request)
        if isinstance(given, Response):
            return given
        body, texts, script = given
        out = []
        for i, text in enumerate(texts):
            vector: Any = _embedding(text)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            out.append({"object": "embedding", "index": i, "embedding": vector})
        usage = {"prompt_tokens": script.prompt_tokens, "total_tokens": script.prompt_tokens}
        return JSONResponse({"object": "list", "data": out, "model": body["model"], "usage": usage})

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Response:
        given = await inputs_of(request)
        if isinstance(given, Response):
            return given
        body, items, script = given
        await pause(script.first_pause_s)
        results = []
        for text in items:
            flagged = flagged_categories(text)
            results.append(
                {
                    "flagged": bool(flagged),
                    "categories": dict.fromkeys(flagged, True),
                    "category_scores": dict.fromkeys(flagged, 0.99),
                }
            )
        return JSONResponse(
            {"id": f"modr-fake-{secrets.token_hex(6)}", "model": body["model"], "results": results}
        )
