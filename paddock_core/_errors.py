"""The one error tree shared by the control plane and the gateway.

    PaddockError
     ├── InvalidRequestError   bad input; names the field (4xx)
     ├── AuthenticationError   missing, unknown or dead credential (401)
     ├── PermissionDeniedError credential valid, action not allowed (403)
     ├── NotFoundError         no such object, or not visible to the caller (404)
     ├── ConflictError         the object is in a state that forbids the action (409)
     │    └── VersionConflictError  compare-and-set lost a race
     ├── BudgetExceededError   a spending limit is reached (403)
     ├── BackendError          a runner backend (Docker, E2B) failed
     ├── UpstreamError         an LLM provider failed or could not be reached (502)
     └── StoreError            the store failed

Adapters translate foreign errors at the boundary (`raise BackendError(...) from exc`).
Only `controlplane.api.errors` and `gateway.errors` turn these into HTTP responses.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BudgetExceededError",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "PaddockError",
    "PermissionDeniedError",
    "StoreError",
    "UpstreamError",
    "VersionConflictError",
]


class PaddockError(Exception):
    """Root of every error Paddock raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequestError(PaddockError):
    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.field = field


class AuthenticationError(PaddockError):
    code = "unauthenticated"


class PermissionDeniedError(PaddockError):
    code = "permission_denied"


class NotFoundError(PaddockError):
    code = "not_found"


class ConflictError(PaddockError):
    code = "conflict"


class VersionConflictError(ConflictError):
    code = "version_conflict"


class BudgetExceededError(PaddockError):
    code = "budget_exceeded"


class BackendError(PaddockError):
    code = "backend_error"


class UpstreamError(PaddockError):
    code = "upstream_error"


class StoreError(PaddockError):
    code = "store_error"
