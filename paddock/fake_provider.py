"""The fake LLM provider Paddock ships: a real OpenAI-protocol server with deterministic answers.

For demos without a provider key and for tests. It speaks `GET /v1/models` and
`POST /v1/chat/completions` (stream and non-stream, with `usage`), and obeys a few triggers:

- `ECHO:<word>` in a user message: the reply is `Fake reply. ECHO:<word>`, from the most recent
  user message that has one (agents resend the whole conversation every turn);
- `FAIL:<status>` in the last user message, or the header `X-Fake-Fail: <status>`: answer that
  4xx/5xx status with an OpenAI error body;
- `SLOW:<ms>` in the last user message: pause that many milliseconds before each content delta.

Token counts: prompt = ceil(characters of all message text / 4), completion = ceil(reply / 4).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

__all__ = ["DEFAULT_REPLY", "create_fake_provider"]

DEFAULT_REPLY = "Fake reply from the Paddock fake provider."

_ECHO = re.compile(r"ECHO:(\S+)")
_FAIL = re.compile(r"FAIL:(\d{3})")
_SLOW = re.compile(r"SLOW:(\d+)")
_MAX_PAUSE_MS = 10_000


def _error(status: int, message: str, *, type_: str, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "code": code, "param": None}}
    return JSONResponse(body, status_code=status)


def _text(content: Any) -> str:
    """The text of an OpenAI message `content`: a string or a list of `{type, text}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def _reply_for(user_texts: Sequence[str]) -> str:
    for text in reversed(user_texts):
        if match := _ECHO.search(text):
            return f"Fake reply. ECHO:{match.group(1)}"
    return DEFAULT_REPLY


def _failure(status_text: str | None) -> JSONResponse | None:
    if status_text is None or not status_text.isdigit() or not 400 <= int(status_text) <= 599:
        return None
    status = int(status_text)
    type_ = "rate_limit_error" if status == 429 else "server_error"
    return _error(status, f"fake provider failing on purpose ({status})", type_=type_)


def _chunk(base: dict[str, Any], choices: list[dict[str, Any]], **extra: Any) -> bytes:
    body = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def _stream(
    base: dict[str, Any], reply: str, usage: dict[str, int] | None, pause_s: float
) -> AsyncIterator[bytes]:
    yield _chunk(base, [{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    for word in re.findall(r"\S+\s*", reply):
        if pause_s:
            await asyncio.sleep(pause_s)
        yield _chunk(base, [{"index": 0, "delta": {"content": word}, "finish_reason": None}])
    yield _chunk(base, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
    if usage is not None:
        yield _chunk(base, [], usage=usage)
    yield b"data: [DONE]\n\n"


def create_fake_provider(
    *, model_ids: Sequence[str] = ("fake-gpt", "fake-mini"), api_key: str | None = None
) -> FastAPI:
    """The fake provider app. With `api_key`, requests must carry `Authorization: Bearer <it>`."""
    models = tuple(model_ids)
    app = FastAPI(title="Paddock fake provider")

    def refuse(request: Request) -> JSONResponse | None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(
                401, "invalid API key", type_="invalid_request_error", code="invalid_api_key"
            )
        return None

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "paddock"} for m in models]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return _error(400, f"invalid JSON body: {exc}", type_="invalid_request_error")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return _error(400, "`messages` must be a non-empty list", type_="invalid_request_error")
        model = body.get("model")
        if model not in models:
            return _error(
                404,
                f"The model {model!r} does not exist",
                type_="invalid_request_error",
                code="model_not_found",
            )

        texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
        user_texts = [
            _text(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        last_user = user_texts[-1] if user_texts else ""
        fail = _FAIL.search(last_user)
        failure = _failure(request.headers.get("x-fake-fail") or (fail.group(1) if fail else None))
        if failure is not None:
            return failure

        reply = _reply_for(user_texts)
        prompt, completion = _tokens(sum(len(t) for t in texts)), _tokens(len(reply))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        base = {
            "id": f"chatcmpl-fake-{secrets.token_hex(6)}",
            "created": int(time.time()),
            "model": model,
        }
        if body.get("stream"):
            options = body.get("stream_options")
            wants_usage = isinstance(options, dict) and options.get("include_usage") is True
            slow = _SLOW.search(last_user)
            pause_s = min(int(slow.group(1)), _MAX_PAUSE_MS) / 1000 if slow else 0.0
            return StreamingResponse(
                _stream(base, reply, usage if wants_usage else None, pause_s),
                media_type="text/event-stream",
            )
        message = {"role": "assistant", "content": reply}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return JSONResponse(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        )

    return app
