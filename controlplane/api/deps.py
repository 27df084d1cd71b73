"""Dependencies: the caller's identity, what its role allows, and the services.

`Reader` (admin, operator, viewer), `Operator` (admin, operator) and `Admin` are the three
permission levels of control-plane routes; a gateway-only key gets 403 on all of them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from paddock_core import AuthenticationError, PermissionDeniedError

from ..services import AuditService, Principal, RunnerService, SessionService, TenancyService

__all__ = [
    "Admin",
    "Audit",
    "CurrentPrincipal",
    "Operator",
    "Reader",
    "Runners",
    "Sessions",
    "Tenancy",
]


def _tenancy(request: Request) -> TenancyService:
    service: TenancyService = request.app.state.tenancy
    return service


async def _principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthenticationError("missing bearer token (Authorization: Bearer <key>)")
    return await _tenancy(request).authenticate(authorization[7:].strip())


def _reader(who: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not who.role.can_read:
        raise PermissionDeniedError(f"a {who.role.value} key cannot use the control plane")
    return who


def _operator(who: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not who.role.can_operate:
        raise PermissionDeniedError(f"a {who.role.value} key cannot change runners or sessions")
    return who


def _admin(who: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not who.role.can_administer:
        raise PermissionDeniedError(f"a {who.role.value} key cannot administer the org")
    return who


def _runners(request: Request) -> RunnerService:
    service: RunnerService = request.app.state.runners
    return service


def _sessions(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


def _audit(request: Request) -> AuditService:
    service: AuditService = request.app.state.audit
    return service


Reader = Annotated[Principal, Depends(_reader)]
Operator = Annotated[Principal, Depends(_operator)]
Admin = Annotated[Principal, Depends(_admin)]
CurrentPrincipal = Reader
Runners = Annotated[RunnerService, Depends(_runners)]
Sessions = Annotated[SessionService, Depends(_sessions)]
Tenancy = Annotated[TenancyService, Depends(_tenancy)]
Audit = Annotated[AuditService, Depends(_audit)]
