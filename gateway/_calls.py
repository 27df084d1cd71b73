"""A client's request as the gateway needs it: read within the size limit, parsed, and
validated only as far as routing and billing need (`model`, the input, `stream`). Everything
else is forwarded unchanged, so provider features the gateway does not know still work."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from paddock_core import InvalidRequestError

from ._errors import RequestTooLargeError
from ._usage import request_text_chars, text_chars
from .providers import Endpoint

__all__ = ["STARTED_KEY", "ClientCall", "parse_call", "read_body"]

STARTED_KEY = "paddock.started"
"""ASGI scope key: perf_counter() when the request reached the gateway (set by a middleware)."""

_FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


@dataclass(frozen=True)
class ClientCall:
    endpoint: Endpoint
    model: str
    stream: bool
    body: dict[str, Any]
    """The client's body as sent."""
    headers: Mapping[str, str]
    """The client's headers that mean something upstream (`anthropic-version`, `-beta`)."""
    size: int
    """Bytes of the body."""
    prompt_chars: int
    """Characters of input text, for estimates when the provider reports no usage."""


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request body is larger than the gateway's limit of {limit} bytes",
        reason="request_too_large",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, field=field, reason="invalid_field")


def _require_list(body: dict[str, Any], field: str) -> list[Any]:
    value = body.get(field)
    if not isinstance(value, list) or not value:
        raise _invalid(field, f"`{field}` is required and must be a non-empty list")
    return value


def parse_call(endpoint: Endpoint, raw: bytes, headers: Mapping[str, str]) -> ClientCall:
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
        raise _invalid("model", "`model` is required and must be a non-empty string")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "`stream` must be a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "`stream_options` must be an object")

    if endpoint == "chat":
        chars = request_text_chars(_require_list(body, "messages"))
    elif endpoint in ("messages", "count_tokens"):
        chars = request_text_chars(_require_list(body, "messages"), body.get("system"))
        max_tokens = body.get("max_tokens")
        if endpoint == "messages" and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise _invalid("max_tokens", "`max_tokens` is required and must be a positive integer")
    elif endpoint == "responses":
        given = body.get("input")
        if not isinstance(given, str | list) or not given:
            raise _invalid("input", "`input` is required: a string or a non-empty list")
        items = given if isinstance(given, list) else []
        chars = text_chars(given) + request_text_chars(items, body.get("instructions"))
    else:  # embeddings
        given = body.get("input")
        if not isinstance(given, str | list) or not given:
            raise _invalid("input", "`input` is required: a string or a non-empty list")
        if stream:
            raise InvalidRequestError(
                "`stream` is not supported by the embeddings API",
                field="stream",
                reason="unsupported_field",
            )
        chars = (
            len(given)
            if isinstance(given, str)
            else sum(
                len(x) if isinstance(x, str) else 4 * len(x) if isinstance(x, list) else 4
                for x in given
            )
        )
    kept = {h: headers[h] for h in _FORWARDED_HEADERS if h in headers}
    return ClientCall(endpoint, model, bool(stream), body, kept, len(raw), chars)
