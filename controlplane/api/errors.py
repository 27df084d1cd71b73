"""The only place errors become HTTP responses.

Shape: {"error": {"code": "...", "message": "...", "field": "..." , ...details}}.
"""

from __future__ import annotations

import logging
from typing import Any

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
    UpstreamError,
)

__all__ = ["error_body", "install_error_handlers"]

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[PaddockError], int]] = [
    (InvalidRequestError, 422),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (BudgetExceededError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (UpstreamError, 502),
    (BackendError, 502),
]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            **{k: v for k, v in extra.items() if v is not None},
        }
    }


def _status_of(exc: PaddockError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


async def _paddock_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PaddockError)
    status = _status_of(exc)
    if status >= 500:
        logger.error("%s: %s", type(exc).__name__, exc.message)
    extra = dict(exc.details)
    if isinstance(exc, InvalidRequestError) and exc.field:
        extra["field"] = exc.field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc.code, exc.message, **extra), status, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        detail = first.get("ctx", {}).get("error", "invalid JSON")
        return JSONResponse(
            error_body("invalid_json", f"request body is not valid JSON: {detail}", field="body"),
            400,
        )
    fields = [
        {"field": _location(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors
    ]
    first = fields[0]
    message = f"{first['field']}: {first['message']}"
    if len(fields) > 1:
        message += f" (and {len(fields) - 1} more)"
    return JSONResponse(
        error_body("invalid_request", message, field=first["field"], errors=fields), 422
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PaddockError, _paddock_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
