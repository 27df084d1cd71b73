"""Runner lifecycle service: the only place runner state changes. No FastAPI imports.

Each state change is one atomic store batch: the compare-and-set update of the runner and the
audit event that explains it. Intent is persisted before the backend is asked (`stopping`,
`deleting`, `suspended`), and what was observed after; the reconciler finishes what a crash
interrupted. In-process, a lock per runner serialises operations on it; across processes, the
version check makes the loser fail with a 409 instead of overwriting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from gateway.checks import Plan, matches_any
from paddock_core import (
    AppendAudit,
    AuditEvent,
    BackendError,
    InsertRunner,
    InvalidRequestError,
    NotFoundError,
    Operation,
    PaddockError,
    PermissionDeniedError,
    Policies,
    Role,
    RunnerRecord,
    Store,
    UpdateRunner,
    UpdateSession,
    derive_secret,
    hash_token,
    mint_token,
    new_id,
    utcnow,
)

from ..backends import RunnerBackend, RunnerSpec, SupportsPause
from ..domain import Lifecycle, RunnerState
from ..settings import ControlPlaneSettings
from .plan import RunnerPlan, RunnerRequest, plan
from .provisioning import Provisioner

__all__ = ["Principal", "RunnerRequest", "RunnerService"]

logger = logging.getLogger(__name__)

S = RunnerState
# Entering these states closes the runner's open session, with this reason.
_CLOSES_SESSION = {
    S.STOPPING: "runner_stopped",
    S.FAILED: "runner_failed",
    S.DELETING: "runner_deleted",
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the org every query is scoped to, and the actor the audit names.

    `platform` marks the bootstrap admin key, which may also create orgs."""

    org_id: str
    actor: str
    role: Role = Role.ADMIN
    key_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    platform: bool = False


class Claimer(Protocol):
    """What `create` asks first: a ready-made runner bound to `who`, or None."""

    async def claim(
        self, who: Principal, p: RunnerPlan, key: str | None
    ) -> RunnerRecord | None: ...


class RunnerService:
    def __init__(
        self,
        *,
        settings: ControlPlaneSettings,
        store: Store,
        backend: RunnerBackend,
        policies: Policies,
    ) -> None:
        self._settings = settings
        self._store = store
        self._backend = backend
        self._policies = policies
        self._lifecycle = Lifecycle()
        self._locks: dict[str, asyncio.Lock] = {}
        self.provisioner = Provisioner(self, store=store, backend=backend, settings=settings)
        self.claimer: Claimer | None = None
        """The warm pool (`services.pool.WarmPool`), when one is configured."""
        self.org_plan: Callable[[str], Awaitable[Plan]] | None = None
        """An org's plan (tenancy), whose profiles, sandboxes and models bound its runners."""

    @property
    def backend(self) -> RunnerBackend:
        return self._backend

    @property
    def store(self) -> Store:
        return self._store

    # --- queries ------------------------------------------------------------------------

    async def get(self, who: Principal, runner_id: str) -> RunnerRecord:
        runner = await self._store.get_runner(runner_id)
        if runner is None or runner.deleted or runner.org_id != who.org_id or _unclaimed(runner):
            raise NotFoundError(f"runner {runner_id} not found", field="runner_id")
        return runner

    async def list_for(self, who: Principal) -> list[RunnerRecord]:
        return [
            r
            for r in await self._store.list_runners(who.org_id)
            if not r.deleted and not _unclaimed(r)
        ]

    async def events(
        self, who: Principal, runner_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEvent]:
        runner = await self._store.get_runner(runner_id)
        if runner is None or runner.org_id != who.org_id:
            raise NotFoundError(f"runner {runner_id} not found", field="runner_id")
        return await self._store.list_audit(
            who.org_id, runner_id=runner_id, after_seq=after_seq, limit=limit
        )

    def claim_secret(self, runner_id: str) -> str:
        """What a pooled runner's agent asks of a claim (`x-paddock-claim`): known to this
        control plane alone, handed to the pooled runner at its start, worth nothing once
        claimed. A claim then needs no fixed source address (E2B has none)."""
        return derive_secret(self._settings.secret_key.get_secret_value(), f"claim:{runner_id}")

    def agent_token(self, runner_id: str) -> str:
        """The bearer token the control plane presents to the agent inside a runner."""
        return derive_secret(self._settings.secret_key.get_secret_value(), f"agent:{runner_id}")

    def agent_url(self, runner: RunnerRecord) -> str:
        return self._backend.agent_url(runner.backend_ref)

    def plan(self, req: RunnerRequest) -> RunnerPlan:
        return plan(req, settings=self._settings, policies=self._policies, backend=self._backend)

    # --- commands -----------------------------------------------------------------------

    async def create(
        self, who: Principal, req: RunnerRequest, *, idempotency_key: str | None = None
    ) -> tuple[RunnerRecord, bool]:
        """A new runner (claimed from a warm pool when one fits), and whether this is the
        replay of an earlier request with the same `Idempotency-Key`."""
        checked = self.plan(req)
        if self.org_plan is not None:
            _check_within_plan(await self.org_plan(who.org_id), checked)
        if idempotency_key is None:
            return await self._create(who, checked, None), False
        async with self._lock(f"idempotency:{who.org_id}:{idempotency_key}"):
            for earlier in await self._store.list_runners(who.org_id):
                if earlier.idempotency_key == idempotency_key:
                    _check_same_request(earlier, checked)
                    return earlier, True
            return await self._create(who, checked, idempotency_key), False

    async def _create(self, who: Principal, p: RunnerPlan, key: str | None) -> RunnerRecord:
        if self.claimer is not None:
            claimed = await self.claimer.claim(who, p, key)
            if claimed is not None:
                return claimed
        return await self.launch(who, p, key=key)

    async def launch(
        self, who: Principal, p: RunnerPlan, *, key: str | None = None, pool: str | None = None
    ) -> RunnerRecord:
        """Store a new runner (with its audit record), then provision it in the background.
        With `pool`, a warm-pool runner: its token is never given to anyone (a claim mints
        one), its container gets no secret, and it ends `pooled` instead of `ready`."""
        runner_id = new_id("rn")
        token = mint_token("prt")
        now = utcnow()
        runner = RunnerRecord(
            id=runner_id,
            org_id=who.org_id,
            state=S.PROVISIONING,
            profile=p.profile.name,
            sandbox=p.sandbox.name,
            image=p.image,
            model=p.model,
            budget_usd=p.budget_usd,
            token_hash=hash_token(token),
            backend=self._backend.name,
            created_by=who.actor,
            team_id=who.team_id,
            user_id=who.user_id,
            expires_at=now + timedelta(seconds=p.ttl_s) if p.ttl_s else None,
            last_active_at=now,
            idempotency_key=key,
            pool=pool,
            api=p.api,
        )
        created = created_event(runner, who, **({"pool": pool} if pool else {}))
        # Reserved before the record exists, so no reconcile pass takes it for interrupted.
        with self.provisioner.reserve(runner_id):
            await self._store.apply([InsertRunner(runner), AppendAudit(created)])
        if pool is None:
            env = p.env(runner_id, token=token, agent_token=self.agent_token(runner_id))
        else:
            env = p.pooled_env(runner_id, claim_secret=self.claim_secret(runner_id))
        expires = runner.expires_at.timestamp() if runner.expires_at else None
        spec = RunnerSpec(
            runner_id, who.org_id, p.image, p.profile, p.sandbox, env, expires, pool=pool
        )
        self.provisioner.start(runner_id, spec, "became_warm" if pool else "became_ready")
        return runner

    async def stop(
        self, who: Principal, runner_id: str, *, reason: str = "requested"
    ) -> RunnerRecord:
        await self.get(who, runner_id)
        async with self._lock(runner_id):
            runner = await self.get(who, runner_id)
            if runner.state == S.STOPPED:
                return runner  # stopping twice is not an error
            if runner.state != S.STOPPING:  # else: finish what another call or a crash began
                runner = await self.transition_locked(runner, "stop", who.actor, reason)
            return await self.finish_stop(runner, who.actor)

    async def delete(self, who: Principal, runner_id: str) -> None:
        await self.get(who, runner_id)
        async with self._lock(runner_id):
            runner = await self._store.get_runner(runner_id)
            if runner is None or runner.deleted:
                return  # a concurrent delete won: same outcome
            if runner.state != S.DELETING:
                runner = await self.transition_locked(runner, "delete", who.actor, "requested")
            await self.finish_delete(runner, who.actor)

    async def suspend(self, runner: RunnerRecord, actor: str, reason: str) -> RunnerRecord:
        """Pause an idle runner (`suspended`), under its lock; the caller checked `runner`."""
        runner = await self.transition_locked(runner, "suspend", actor, reason)
        if isinstance(self._backend, SupportsPause) and runner.backend_ref:
            try:
                await self._backend.pause(runner.backend_ref)
            except PaddockError:  # the reconciler pauses it, or fails it if it is gone
                logger.warning("could not pause runner %s", runner.id)
        return runner

    async def wake(self, runner_id: str, actor: str) -> RunnerRecord:
        """Note activity on a runner: resume it if it is suspended. Returns it as it is now."""
        async with self._lock(runner_id):
            runner = await self._store.get_runner(runner_id)
            if runner is None:
                raise NotFoundError(f"runner {runner_id} not found", field="runner_id")
            changes = {"last_active_at": utcnow()}
            if runner.state != S.SUSPENDED:
                if not self._lifecycle.is_live(runner.state):
                    return runner
                update = UpdateRunner(runner.id, runner.version, changes)
                return (await self._store.apply([update])).runners[runner.id]
            trigger = "resume_session" if runner.session_id else "resume"
            runner = await self.transition_locked(runner, trigger, actor, "activity", changes)
            if isinstance(self._backend, SupportsPause) and runner.backend_ref:
                try:
                    await self._backend.resume(runner.backend_ref)
                except BackendError as exc:
                    await self._fail_locked(runner, _reason(exc), exc.message)
                    raise
            return runner

    async def finish_stop(self, runner: RunnerRecord, actor: str) -> RunnerRecord:
        """`stopping` → stop the container → `stopped`. Call under the runner's lock."""
        if runner.backend_ref:
            await self._backend.stop(runner.backend_ref)
        return await self.transition_locked(runner, "stopped", actor, "container_stopped")

    async def finish_delete(self, runner: RunnerRecord, actor: str) -> None:
        """`deleting` → remove everything labelled with it → `deleted`. Under its lock."""
        await self._backend.destroy(runner.id)
        gone = _event(runner, actor, "runner.deleted", {"state": runner.state})
        await self.transition_locked(
            runner, "deleted", actor, "resources_removed", {"deleted": True}, then=[gone]
        )

    async def transition(
        self,
        runner_id: str,
        trigger: str,
        actor: str,
        reason: str,
        *,
        changes: dict[str, Any] | None = None,
        extra: Sequence[Operation] = (),
    ) -> RunnerRecord:
        """Move a runner along the lifecycle (under its lock), with its audit record."""
        async with self._lock(runner_id):
            runner = await self._store.get_runner(runner_id)
            if runner is None:
                raise NotFoundError(f"runner {runner_id} not found", field="runner_id")
            return await self.transition_locked(runner, trigger, actor, reason, changes, extra)

    async def fail(
        self, runner_id: str, code: str, message: str, *, version: int | None = None
    ) -> RunnerRecord | None:
        """Fail a live runner with a reason (and stop its container). With `version`, only
        if the runner is still at that version (the caller decided on what it saw)."""
        async with self.guard(runner_id, version) as runner:
            if runner is None or not self._lifecycle.is_live(runner.state):
                return None
            return await self._fail_locked(runner, code, message)

    @contextlib.asynccontextmanager
    async def guard(
        self, runner_id: str, version: int | None = None
    ) -> AsyncIterator[RunnerRecord | None]:
        """Hold the runner's lock; yield it, or None when it is gone or no longer at
        `version` (then whoever decided on the old version decides again next time)."""
        async with self._lock(runner_id):
            runner = await self._store.get_runner(runner_id)
            if runner is None or (version is not None and runner.version != version):
                yield None
            else:
                yield runner

    async def shutdown(self, *, stop_runners: bool = False) -> None:
        """Cancel provisioning (its runners stay `provisioning`, adopted at the next start);
        with `stop_runners`, stop every live runner of this backend, each fully recorded."""
        await self.provisioner.shutdown()
        if not stop_runners:
            return
        for runner in await self._store.list_runners():
            if runner.deleted or runner.backend != self._backend.name:
                continue
            async with self.guard(runner.id, runner.version) as current:
                if current is None or not self._lifecycle.is_live(current.state):
                    continue
                try:
                    stopping = await self.transition_locked(
                        current, "stop", "system", "controlplane_shutdown"
                    )
                    await self.finish_stop(stopping, "system")
                except PaddockError:  # left `stopping`: the next start finishes it
                    logger.exception("could not stop runner %s at shutdown", runner.id)

    # --- internals ----------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _fail_locked(self, runner: RunnerRecord, code: str, message: str) -> RunnerRecord:
        changes = {"failure_code": code, "failure_message": message[:2000]}
        failed = await self.transition_locked(runner, "fail", "system", code, changes)
        if runner.backend_ref:
            try:
                await self._backend.stop(runner.backend_ref)
            except PaddockError:
                logger.warning("could not stop failed runner %s", runner.id)
        return failed

    async def transition_locked(
        self,
        runner: RunnerRecord,
        trigger: str,
        actor: str,
        reason: str,
        changes: dict[str, Any] | None = None,
        extra: Sequence[Operation] = (),
        *,
        then: Sequence[AuditEvent] = (),
    ) -> RunnerRecord:
        """One lifecycle step of `runner` as read under its lock, persisted with its audit
        record (and the session it closes) in one batch: `extra` before the step's audit
        event, `then` after it."""
        dest = self._lifecycle.next_state(runner.state, trigger)  # 409 before any side effect
        update: dict[str, Any] = {"state": dest.value, **(changes or {})}
        closing: list[Operation] = []
        if runner.session_id and dest in _CLOSES_SESSION:
            closing = await self._close_session_ops(runner, actor, _CLOSES_SESSION[dest])
            update["session_id"] = None
        ops: list[Operation] = [UpdateRunner(runner.id, runner.version, update), *closing, *extra]
        data = {"from": runner.state, "to": dest.value, "trigger": trigger, "reason": reason}
        for key in ("failure_code", "failure_message"):
            if key in update:
                data[key] = update[key]
        event = _event(runner, actor, "runner.state_changed", data)
        # A claim moves the runner to the claimant's org: its events go to that org's chain.
        event = event.model_copy(update={"org_id": update.get("org_id", runner.org_id)})
        ops += [AppendAudit(event), *(AppendAudit(e) for e in then)]
        result = await self._store.apply(ops)
        logger.info("runner %s: %s -> %s (%s)", runner.id, runner.state, dest.value, reason)
        return result.runners[runner.id]

    async def _close_session_ops(
        self, runner: RunnerRecord, actor: str, reason: str
    ) -> list[Operation]:
        session = await self._store.get_session(runner.session_id or "")
        if session is None or session.state != "open":
            return []
        return [
            UpdateSession(
                session.id,
                session.version,
                {"state": "closed", "closed_at": utcnow(), "close_reason": reason},
            ),
            AppendAudit(
                AuditEvent(
                    org_id=runner.org_id,
                    actor=actor,
                    type="session.closed",
                    runner_id=runner.id,
                    session_id=session.id,
                    data={"reason": reason},
                )
            ),
        ]


def created_event(runner: RunnerRecord, who: Principal, **more: Any) -> AuditEvent:
    return AuditEvent(
        org_id=who.org_id,
        actor=who.actor,
        type="runner.created",
        runner_id=runner.id,
        data={
            "state": runner.state,
            "profile": runner.profile,
            "sandbox": runner.sandbox,
            "image": runner.image,
            "model": runner.model,
            "budget_usd": runner.budget_usd,
            "expires_at": runner.expires_at.isoformat() if runner.expires_at else None,
            **more,
        },
    )


def _event(runner: RunnerRecord, actor: str, kind: str, data: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        org_id=runner.org_id,
        actor=actor,
        type=kind,
        runner_id=runner.id,
        session_id=runner.session_id,
        data=data,
    )


def _check_within_plan(org_plan: Plan, p: RunnerPlan) -> None:
    """403 naming the field when the org's plan does not include what the runner asks for."""
    for field, value, allowed in (
        ("profile", p.profile.name, org_plan.profiles),
        ("sandbox", p.sandbox.name, org_plan.sandboxes),
        ("model", p.model, org_plan.models),
    ):
        if not matches_any((value,), allowed):
            raise PermissionDeniedError(
                f"plan {org_plan.name!r} does not include {field} {value!r};"
                f" it allows {', '.join(allowed)}",
                field=field,
                reason="not_in_plan",
            )


def _unclaimed(runner: RunnerRecord) -> bool:
    """A warm-pool runner nobody has claimed yet: it belongs to no caller."""
    return runner.pool is not None and runner.claimed_at is None


def _reason(exc: BackendError) -> str:
    return str(exc.details.get("reason", "backend_error"))


def _check_same_request(earlier: RunnerRecord, p: RunnerPlan) -> None:
    same = (earlier.profile, earlier.sandbox, earlier.image, earlier.model, earlier.budget_usd)
    if same != (p.profile.name, p.sandbox.name, p.image, p.model, p.budget_usd):
        raise InvalidRequestError(
            f"Idempotency-Key was used for a different request (runner {earlier.id})",
            field="Idempotency-Key",
        )
