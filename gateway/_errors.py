"""The only place gateway errors become HTTP, in the error shape of the client's own protocol.

    OpenAI (every path but /v1/messages...):
        {"error": {"message": str, "type": str, "code": str | null, "param": str | null}}
    Anthropic (/v1/messages, /v1/messages/count_tokens):
        {"type": "error", "error": {"type": str, "message": str}}

OpenAI `type` comes from the error class (table below); `code` is the error's `reason` detail
when it has one (e.g. `session_budget_exhausted`), else the class's code; `param` names the
offending field of an `InvalidRequestError`. Anthropic has no code or param: its `type` is the
one its SDKs map (`invalid_request_error`, `authentication_error`, `permission_error`,
`not_found_error`, `request_too_large`, `rate_limit_error`, `api_error`, `overloaded_error`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from paddock_core import (
    AuthenticationError,
    BackendError,
    BudgetExceededError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PaddockError,
    PermissionDeniedError,
    StoreError,
    UpstreamError,
)

from .checks import Deny, Hold

__all__ = [
    "PROTOCOL_KEY",
    "answer_error",
    "ClientProtocol",
    "PolicyDeniedError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RequestTooLargeError",
    "describe_error",
    "error_body",
    "error_response",
    "install_error_handlers",
    "policy_error",
    "protocol_of_path",
    "sse_error_event",
    "stream_error_event",
]

logger = logging.getLogger(__name__)

ClientProtocol = Literal["openai", "anthropic"]


class RequestTooLargeError(InvalidRequestError):
    code = "request_too_large"


class RateLimitedError(PermissionDeniedError):
    code = "rate_limited"


class PolicyDeniedError(PaddockError):
    """A step of the policy chain refused (or held) the call; `status` is the step's."""

    code = "policy_denied"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        step: str,
        reason: str,
        data: Mapping[str, object],
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(message, reason=reason, step=step)
        self.status = status
        self.step = step
        self.data = dict(data)
        self.headers = dict(headers)


# Steps whose refusals are about money: OpenAI-shaped bodies say `budget_exceeded`.
_BUDGET_STEPS = frozenset({"cost_estimate", "budget", "session_budget"})
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    403: "permission_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def policy_error(decision: Deny | Hold, headers: Mapping[str, str]) -> PolicyDeniedError:
    """A held call that cannot wait (its approval could not be kept) is refused: fail closed."""
    return PolicyDeniedError(
        decision.message,
        status=decision.status if isinstance(decision, Deny) else 403,
        step=decision.step,
        reason=decision.reason,
        data=decision.data,
        headers=headers,
    )


class ProviderUnavailableError(UpstreamError):
    """Every provider that could serve the call is behind an open circuit breaker."""

    code = "provider_unavailable"


# (HTTP status, OpenAI error type). Looked up along the MRO, so subclasses inherit their row.
_STATUS: dict[type[PaddockError], tuple[int, str]] = {
    RequestTooLargeError: (413, "invalid_request_error"),
    InvalidRequestError: (400, "invalid_request_error"),
    AuthenticationError: (401, "authentication_error"),
    BudgetExceededError: (403, "budget_exceeded"),
    RateLimitedError: (429, "rate_limit_error"),
    PermissionDeniedError: (403, "permission_error"),
    NotFoundError: (404, "not_found_error"),
    ConflictError: (409, "conflict_error"),
    ProviderUnavailableError: (503, "upstream_error"),
    UpstreamError: (502, "upstream_error"),
    BackendError: (502, "backend_error"),
    # The store is usually briefly unavailable (locked, restarting): 503 invites a retry.
    StoreError: (503, "store_error"),
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


PROTOCOL_KEY = "paddock.protocol"
"""ASGI scope key: the client protocol errors must use when the path does not tell (an
approval's result is fetched at /v1/approvals/{id} whatever API the held call used)."""


def protocol_of_path(path: str) -> ClientProtocol:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def _protocol(request: Request) -> ClientProtocol:
    given = request.scope.get(PROTOCOL_KEY)
    return given if given in ("openai", "anthropic") else protocol_of_path(request.url.path)


def error_body(
    protocol: ClientProtocol,
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """`extra`: more fields of the error object (a policy denial's `step` and `details`)."""
    if protocol == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else type_)
        return {"type": "error", "error": {"type": kind, "message": message, **(extra or {})}}
    error = {"message": message, "type": type_, "code": code, "param": param, **(extra or {})}
    return {"error": error}


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    protocol: ClientProtocol = "openai",
    extra: Mapping[str, object] | None = None,
) -> JSONResponse:
    body = error_body(protocol, status, message, type_=type_, code=code, param=param, extra=extra)
    return JSONResponse(body, status_code=status, headers=headers)


def stream_error_event(protocol: ClientProtocol, exc: UpstreamError) -> bytes:
    """An error inside an SSE stream whose 200 already went out. OpenAI SDKs raise on a `data:`
    event holding an `error` object, Anthropic SDKs on an `error` event: either way the client
    learns the stream failed instead of taking the truncated text for the whole answer."""
    reason = exc.details.get("reason")
    if protocol == "anthropic":
        error = {"type": "error", "error": {"type": "api_error", "message": exc.message}}
        return b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"
    body = {"message": exc.message, "type": "upstream_error", "code": reason, "param": None}
    return b"data: " + json.dumps({"error": body}).encode() + b"\n\n"


def _status_of(exc: PaddockError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500, "api_error"


def describe_error(
    exc: PaddockError, protocol: ClientProtocol
) -> tuple[int, dict[str, object], dict[str, str]]:
    """(status, body, headers) of a Paddock error, in `protocol`'s error shape."""
    if isinstance(exc, PolicyDeniedError):
        type_ = _TYPE_BY_STATUS.get(exc.status, "permission_error")
        if exc.step in _BUDGET_STEPS and exc.status == 403:
            type_ = "budget_exceeded"
        extra: dict[str, object] = {"step": exc.step}
        if exc.data:
            extra["details"] = exc.data
        body = error_body(
            protocol,
            exc.status,
            exc.message,
            type_=type_,
            code=str(exc.details["reason"]),
            extra=extra,
        )
        return exc.status, body, exc.headers
    status, type_ = _status_of(exc)
    if status >= 500:
        logger.warning("answering %d: %s", status, exc.message)
    reason = exc.details.get("reason")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    retry_after = exc.details.get("retry_after_s")
    if isinstance(retry_after, int | float):
        headers["retry-after"] = str(max(int(retry_after + 0.999), 1))
    body = error_body(
        protocol,
        status,
        exc.message,
        type_=type_,
        code=reason if isinstance(reason, str) else exc.code,
        param=exc.field if isinstance(exc, InvalidRequestError) else None,
    )
    return status, body, headers


def sse_error_event(protocol: ClientProtocol, body: Mapping[str, object]) -> bytes:
    """An error body (`error_body`) as the SSE event the client's SDK raises on."""
    data = json.dumps(body).encode()
    return (b"event: error\ndata: " if protocol == "anthropic" else b"data: ") + data + b"\n\n"


async def _paddock_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PaddockError)
    status, body, headers = describe_error(exc, _protocol(request))
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(
        exc.status_code,
        str(exc.detail),
        type_=type_,
        headers=exc.headers,
        protocol=_protocol(request),
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "header")]
    return error_response(
        400,
        f"invalid request: {first.get('msg', 'malformed input')}",
        type_="invalid_request_error",
        code="invalid_request",
        param=".".join(loc) or None,
        protocol=_protocol(request),
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error answering a request", exc_info=exc)
    return error_response(
        500,
        "internal gateway error",
        type_="api_error",
        code="internal_error",
        protocol=_protocol(request),
    )


async def answer_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer the registered handlers give `exc`, for requests that bypass the framework's
    exception middleware (the LLM routes, see `_GatewayApp`)."""
    if isinstance(exc, PaddockError):
        return await _paddock_error(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return await _http_error(request, exc)
    return await _unexpected_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PaddockError, _paddock_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
