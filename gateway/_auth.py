"""Who is calling: a runner (by its `prt_` token) or the bootstrap admin key.

The runner is looked up on every request, without a cache, so stopping or deleting a runner
takes effect on its very next call.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from paddock_core import (
    API_KEY_PREFIX,
    ApiKeyRecord,
    AppendAudit,
    AuditEvent,
    AuthenticationError,
    PaddockError,
    PermissionDeniedError,
    RunnerRecord,
    SessionRecord,
    authenticate_api_key,
    hash_token,
    key_fingerprint,
    utcnow,
)

from ._state import GatewayState, StateDep

__all__ = [
    "RUNNER_TOKEN_PREFIX",
    "Caller",
    "CallerDep",
    "ServingCallerDep",
    "authenticate",
    "refresh_caller",
]

logger = logging.getLogger(__name__)

RUNNER_TOKEN_PREFIX = "prt_"
# Provisioning counts as live so the runner can prove its gateway round trip (`GET /v1/models`)
# before it is ready; only `require_serving` callers may spend.
_LIVE_STATES = frozenset({"provisioning", "ready", "running"})
_SERVING_STATES = frozenset({"ready", "running"})


@dataclass(frozen=True)
class Caller:
    org_id: str
    actor: str
    """`runner:<id>` or `key:admin`, as written to the audit trail."""
    runner: RunnerRecord | None = None
    session: SessionRecord | None = None
    """The runner's current session, read fresh with this request (its spend is current)."""
    key_id: str | None = None
    """The API key that made the call, or that created the calling runner."""
    team_id: str | None = None
    user_id: str | None = None
    key_models: tuple[str, ...] | None = None
    """The key's own model allowlist (for a runner: the key that created it)."""
    key_skills: tuple[str, ...] | None = None


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _presented_key(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for header in ("x-api-key", "x-paddock-key"):
        if value := request.headers.get(header, "").strip():
            return value
    return None


async def authenticate(request: Request, state: StateDep) -> Caller:
    token = _presented_key(request)
    if token is None:
        raise AuthenticationError(
            "missing API key: send `Authorization: Bearer <runner token>`", reason="missing_key"
        )
    admin = state.settings.admin_key
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return Caller(org_id=state.settings.org_id, actor="key:admin")
    if token.startswith(API_KEY_PREFIX):
        key = await authenticate_api_key(state.store, token)
        if not key.role.can_call_models:
            raise PermissionDeniedError(
                f"a {key.role.value} key cannot call models", reason="role_cannot_call_models"
            )
        return Caller(
            org_id=key.org_id,
            actor=f"key:{key.id}",
            key_id=key.id,
            team_id=key.team_id,
            user_id=key.user_id,
            key_models=_tuple(key.models),
            key_skills=_tuple(key.skills),
        )
    if not token.startswith(RUNNER_TOKEN_PREFIX):
        logger.info("rejected unknown key %s", key_fingerprint(token))
        raise AuthenticationError("invalid API key", reason="invalid_api_key")

    runner = await state.store.find_runner_by_token(hash_token(token))
    if runner is None:
        logger.info("rejected unknown runner token %s", key_fingerprint(token))
        raise AuthenticationError("invalid API key", reason="invalid_api_key")
    if runner.deleted or runner.state not in _LIVE_STATES:
        shown = "deleted" if runner.deleted else runner.state
        await _audit_refusal(state, request, runner, "runner_not_live")
        raise AuthenticationError(
            f"runner token is no longer valid (runner is {shown})", reason="runner_not_live"
        )
    # The token works only from the address its backend gave the runner (when it gave one).
    bound = runner.backend_ref.get("address")
    if bound and (request.client.host if request.client else None) != bound:
        await _audit_refusal(state, request, runner, "wrong_source")
        raise AuthenticationError("runner token used from another address", reason="wrong_source")

    session = None
    if runner.session_id is not None:
        session = await state.store.get_session(runner.session_id)
        if session is None:
            # Without the session its budget cannot be enforced: refuse rather than guess.
            raise PermissionDeniedError(
                f"runner {runner.id} points at session {runner.session_id}, which does not exist",
                reason="session_not_found",
            )
    creator = (runner.created_by or "").removeprefix("key:")
    key_id = creator if creator.startswith(API_KEY_PREFIX) else None
    models = skills = None
    if key_id is not None and (doc := await state.store.get_object("api_key", key_id)):
        creator_key = ApiKeyRecord.model_validate(doc)
        models, skills = _tuple(creator_key.models), _tuple(creator_key.skills)
    return Caller(
        org_id=runner.org_id,
        actor=f"runner:{runner.id}",
        runner=runner,
        session=session,
        key_id=key_id,
        team_id=runner.team_id,
        user_id=runner.user_id,
        key_models=models,
        key_skills=skills,
    )


async def _audit_refusal(
    state: GatewayState, request: Request, runner: RunnerRecord, reason: str
) -> None:
    source = request.client.host if request.client else "?"
    event = AuditEvent(
        org_id=runner.org_id,
        actor=f"source:{source}",
        type="gateway.token_refused",
        runner_id=runner.id,
        data={"reason": reason, "source": source},
    )
    try:
        await state.store.apply([AppendAudit(event)])
    except PaddockError:
        logger.exception("could not audit a refused token of runner %s", runner.id)


async def require_serving(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """A caller that may make LLM calls: a runner still provisioning may only list models."""
    if caller.runner is not None and caller.runner.state not in _SERVING_STATES:
        raise PermissionDeniedError(
            f"runner {caller.runner.id} is {caller.runner.state}; it may call models once ready",
            reason="runner_not_ready",
        )
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]
ServingCallerDep = Annotated[Caller, Depends(require_serving)]


async def refresh_caller(state: GatewayState, caller: Caller) -> Caller:
    """The caller as it stands now, for a call that waited (held for approval): its key must
    still be usable, its runner still serving, and its session's spend is read again."""
    if caller.key_id is not None and caller.runner is None:
        doc = await state.store.get_object("api_key", caller.key_id)
        if doc is None or not ApiKeyRecord.model_validate(doc).usable(utcnow()):
            raise AuthenticationError("the API key was revoked or expired", reason="key_not_usable")
    if caller.runner is None:
        return caller
    runner = await state.store.get_runner(caller.runner.id)
    if runner is None or runner.deleted or runner.state not in _SERVING_STATES:
        raise AuthenticationError(
            f"runner {caller.runner.id} is no longer serving", reason="runner_not_live"
        )
    session = await state.store.get_session(runner.session_id) if runner.session_id else None
    return dataclasses.replace(caller, runner=runner, session=session)
