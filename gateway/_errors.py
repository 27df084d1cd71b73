"""The only place gateway errors become HTTP: every error answer has the OpenAI shape.

    {"error": {"message": str, "type": str, "code": str | null, "param": str | null}}

`type` comes from the error class (table below); `code` is the error's `reason` detail when it
has one (e.g. `session_budget_exhausted`), else the class's code; `param` names the offending
request field for `InvalidRequestError`. Clients built on the OpenAI SDKs map the status to their
own exception classes, so the status matters more than the body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

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

__all__ = ["error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)

# (HTTP status, OpenAI error type). Looked up along the MRO, so subclasses inherit their row.
_STATUS: dict[type[PaddockError], tuple[int, str]] = {
    InvalidRequestError: (400, "invalid_request_error"),
    AuthenticationError: (401, "authentication_error"),
    BudgetExceededError: (403, "budget_exceeded"),
    PermissionDeniedError: (403, "permission_error"),
    NotFoundError: (404, "not_found_error"),
    ConflictError: (409, "conflict_error"),
    UpstreamError: (502, "upstream_error"),
    BackendError: (502, "backend_error"),
    # The store is usually briefly unavailable (locked, restarting): 503 invites a retry.
    StoreError: (503, "store_error"),
}


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def _status_of(exc: PaddockError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500, "api_error"


async def _paddock_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PaddockError)
    status, type_ = _status_of(exc)
    if status >= 500:
        logger.warning("answering %d: %s", status, exc.message)
    reason = exc.details.get("reason")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(
        status,
        exc.message,
        type_=type_,
        code=reason if isinstance(reason, str) else exc.code,
        param=exc.field if isinstance(exc, InvalidRequestError) else None,
        headers=headers,
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), type_=type_, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "header")]
    return error_response(
        400,
        f"invalid request: {first.get('msg', 'malformed input')}",
        type_="invalid_request_error",
        code="invalid_request",
        param=".".join(loc) or None,
    )


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error answering a request", exc_info=exc)
    return error_response(500, "internal gateway error", type_="api_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PaddockError, _paddock_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
