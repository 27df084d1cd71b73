"""Dependencies: the caller's identity and the services, as `Annotated` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from paddock_core import AuthenticationError, key_fingerprint

from ..services import Principal, RunnerService, SessionService
from ..settings import ControlPlaneSettings

__all__ = ["CurrentPrincipal", "Runners", "Sessions"]


def _settings(request: Request) -> ControlPlaneSettings:
    settings: ControlPlaneSettings = request.app.state.settings
    return settings


def _principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthenticationError("missing bearer token (Authorization: Bearer <key>)")
    token = authorization[7:].strip()
    settings = _settings(request)
    admin = settings.admin_key.get_secret_value() if settings.admin_key else None
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(org_id=settings.org_id, actor=f"key:{key_fingerprint(token)}")
    raise AuthenticationError("unknown API key")


def _runners(request: Request) -> RunnerService:
    service: RunnerService = request.app.state.runners
    return service


def _sessions(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


CurrentPrincipal = Annotated[Principal, Depends(_principal)]
Runners = Annotated[RunnerService, Depends(_runners)]
Sessions = Annotated[SessionService, Depends(_sessions)]
