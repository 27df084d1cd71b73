"""`POST /v1/chat/completions`: validate, route, check the budget, forward, record.

The body is validated only as far as the gateway needs it (`model`, `messages`, `stream`) and is
otherwise forwarded unchanged, so provider features the gateway does not know still work.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from paddock_core import BudgetExceededError, InvalidRequestError, UpstreamError, new_id

from ._auth import Caller
from ._costs import (
    CallMeta,
    Usage,
    check_budget,
    estimate_tokens,
    message_text_chars,
    reply_text_chars,
    usage_from,
)
from ._errors import error_response
from ._proxy import UpstreamReply
from ._routing import Route
from ._state import GatewayState
from ._streaming import SseRelay, StreamEnd

__all__ = ["CALL_ID_HEADER", "ChatRequest", "handle_chat", "parse_chat_request"]

CALL_ID_HEADER = "x-paddock-call-id"

# Upstream refusals that are about the request itself (or its rate): the client should see them
# as they are. Anything else (5xx, the provider refusing *our* key) is the gateway's problem: 502.
_RELAYED_STATUSES = frozenset({400, 404, 409, 413, 422, 429})
_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[Any]
    stream: bool
    body: dict[str, Any]
    """The client's body as sent, to be forwarded."""


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(
            f"request body is not valid JSON: {exc}", reason="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError(
            f"request body must be a JSON object, not {type(body).__name__}", reason="invalid_body"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "`model` is required and must be a non-empty string",
            field="model",
            reason="invalid_field",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "`messages` is required and must be a non-empty list",
            field="messages",
            reason="invalid_field",
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError(
            "`stream` must be a boolean", field="stream", reason="invalid_field"
        )
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequestError(
            "`stream_options` must be an object", field="stream_options", reason="invalid_field"
        )
    return ChatRequest(model=model, messages=messages, stream=bool(stream), body=body)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def handle_chat(state: GatewayState, caller: Caller, raw: bytes) -> Response:
    chat = parse_chat_request(raw)
    route = state.router.resolve(chat.model)
    denial = check_budget(caller.runner, caller.session)
    if denial is not None:
        raise BudgetExceededError(denial.message, reason=denial.reason)
    meta = CallMeta(
        id=new_id("llm"),
        org_id=caller.org_id,
        actor=caller.actor,
        runner_id=caller.runner.id if caller.runner else None,
        session_id=caller.session.id if caller.session else None,
        provider=route.upstream.spec.name,
        model=route.model,
        stream=chat.stream,
    )
    body = {**chat.body, "model": route.model}
    if chat.stream:
        # Ask for the usage chunk whatever the client asked: it is what the call is billed by.
        body["stream_options"] = {**(chat.body.get("stream_options") or {}), "include_usage": True}
        return await _stream(state, meta, route, chat, body)
    return await _complete(state, meta, route, chat, body)


async def _complete(
    state: GatewayState, meta: CallMeta, route: Route, chat: ChatRequest, body: dict[str, Any]
) -> Response:
    started = time.perf_counter()
    try:
        reply = await state.proxy.complete(route, body)
    except UpstreamError:
        await state.ledger.record(meta, _NO_USAGE, status=502, latency_ms=_ms_since(started))
        raise
    latency_ms = _ms_since(started)
    if not reply.ok:
        await state.ledger.record(meta, _NO_USAGE, status=reply.status, latency_ms=latency_ms)
        return _upstream_refusal(meta, reply)

    data = reply.json()
    usage = usage_from(data.get("usage")) if isinstance(data, dict) else None
    if usage is None:
        choices = data.get("choices") if isinstance(data, dict) else None
        generated = sum(
            reply_text_chars(c.get("message"))
            for c in (choices if isinstance(choices, list) else ())
            if isinstance(c, dict)
        )
        usage = Usage(
            estimate_tokens(message_text_chars(chat.messages)),
            estimate_tokens(generated),
            estimated=True,
        )
    await state.ledger.record(meta, usage, status=reply.status, latency_ms=latency_ms)
    return Response(
        reply.body,
        status_code=reply.status,
        media_type=reply.content_type,
        headers={CALL_ID_HEADER: meta.id},
    )


async def _stream(
    state: GatewayState, meta: CallMeta, route: Route, chat: ChatRequest, body: dict[str, Any]
) -> Response:
    started = time.perf_counter()
    try:
        opened = await state.proxy.open_stream(route, body)
    except UpstreamError:
        await state.ledger.record(meta, _NO_USAGE, status=502, latency_ms=_ms_since(started))
        raise
    if isinstance(opened, UpstreamReply):
        latency_ms = _ms_since(started)
        await state.ledger.record(meta, _NO_USAGE, status=opened.status, latency_ms=latency_ms)
        return _upstream_refusal(meta, opened)

    prompt_chars = message_text_chars(chat.messages)

    async def on_end(end: StreamEnd) -> None:
        # No usage chunk (upstream died, client left): bill an estimate, never $0 -- the provider
        # bills the prompt as soon as it accepts the stream, and every token it sent.
        usage = end.usage or Usage(
            estimate_tokens(prompt_chars), estimate_tokens(end.completion_chars), estimated=True
        )
        await state.ledger.record(meta, usage, status=end.status, latency_ms=_ms_since(started))

    return SseRelay(opened, on_end=on_end, headers={CALL_ID_HEADER: meta.id})


def _upstream_refusal(meta: CallMeta, reply: UpstreamReply) -> Response:
    """The answer to a non-2xx upstream reply (already recorded)."""
    data = reply.json()
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    headers = {CALL_ID_HEADER: meta.id}
    if reply.retry_after is not None:
        headers["retry-after"] = reply.retry_after
    if reply.status in _RELAYED_STATUSES:
        if isinstance(error, dict):
            return Response(
                reply.body, status_code=reply.status, media_type="application/json", headers=headers
            )
        return error_response(
            reply.status,
            f"provider {meta.provider!r} answered {reply.status}",
            type_="upstream_error",
            code="upstream_status",
            headers=headers,
        )
    if reply.status in (401, 403, 407):
        # Not the caller's fault and not theirs to see: the provider's message may quote our key.
        raise UpstreamError(
            f"provider {meta.provider!r} refused the gateway's credentials ({reply.status})",
            reason="upstream_auth_failed",
        )
    detail = f": {message[:300]}" if isinstance(message, str) and message else ""
    raise UpstreamError(
        f"provider {meta.provider!r} answered {reply.status}{detail}", reason="upstream_status"
    )
