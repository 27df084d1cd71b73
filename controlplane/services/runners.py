"""Runner lifecycle service: the only place runner state changes. No FastAPI imports.

Each state change is one atomic store batch: the compare-and-set update of the runner and the
audit event that explains it. In-process, a lock per runner serialises operations on it; across
processes, the version check makes the loser fail with a 409 instead of overwriting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from paddock_core import (
    AppendAudit,
    AuditEvent,
    BackendError,
    InsertRunner,
    InvalidRequestError,
    NotFoundError,
    Operation,
    PaddockError,
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

from ..backends import RunnerBackend, RunnerSpec
from ..domain import Lifecycle, RunnerState
from ..settings import ControlPlaneSettings
from .agent_config import encode_config, render_openclaw_config

__all__ = ["Principal", "RunnerRequest", "RunnerService"]

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RunnerRequest:
    profile: str
    sandbox: str
    budget_usd: float | None
    image: str | None = None
    model: str | None = None


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
        self._tasks: set[asyncio.Task[None]] = set()

    # --- queries ------------------------------------------------------------------------

    async def get(self, who: Principal, runner_id: str) -> RunnerRecord:
        runner = await self._store.get_runner(runner_id)
        if runner is None or runner.deleted or runner.org_id != who.org_id:
            raise NotFoundError(f"runner {runner_id} not found", field="runner_id")
        return runner

    async def list_for(self, who: Principal) -> list[RunnerRecord]:
        return [r for r in await self._store.list_runners(who.org_id) if not r.deleted]

    async def events(
        self, who: Principal, runner_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEvent]:
        runner = await self._store.get_runner(runner_id)
        if runner is None or runner.org_id != who.org_id:
            raise NotFoundError(f"runner {runner_id} not found", field="runner_id")
        return await self._store.list_audit(
            who.org_id, runner_id=runner_id, after_seq=after_seq, limit=limit
        )

    def agent_token(self, runner_id: str) -> str:
        """The bearer token the control plane presents to the agent inside a runner."""
        return derive_secret(self._settings.secret_key.get_secret_value(), f"agent:{runner_id}")

    def agent_url(self, runner: RunnerRecord) -> str:
        return self._backend.agent_url(runner.backend_ref)

    # --- commands -----------------------------------------------------------------------

    async def create(self, who: Principal, req: RunnerRequest) -> RunnerRecord:
        profile = self._policies.profile(req.profile)
        sandbox = self._policies.sandbox_level(req.sandbox)
        if req.sandbox not in self._backend.capabilities.sandboxes:
            raise InvalidRequestError(
                f"sandbox {req.sandbox!r} is not available on the {self._backend.name} backend",
                field="sandbox",
            )
        if (refusal := self._backend.capabilities.refusal(profile, req.sandbox)) is not None:
            # Refused before anything exists, rather than silently weakened on this backend.
            raise InvalidRequestError(f"{refusal} ({self._backend.name} backend)", field="profile")
        image_kind = req.image or self._settings.default_image
        if image_kind not in self._settings.images:
            raise InvalidRequestError(
                f"unknown image {image_kind!r}; expected one of {sorted(self._settings.images)}",
                field="image",
            )
        model = req.model or self._settings.default_model
        if model not in self._policies.prices and not any(
            model.startswith(p)
            for spec in self._policies.providers.values()
            for p in spec.model_prefixes
        ):
            raise InvalidRequestError(f"unknown model {model!r}", field="model")

        runner_id = new_id("rn")
        token = mint_token("prt")
        runner = RunnerRecord(
            id=runner_id,
            org_id=who.org_id,
            state=RunnerState.PROVISIONING,
            profile=profile.name,
            sandbox=sandbox.name,
            image=self._settings.images[image_kind],
            model=model,
            budget_usd=req.budget_usd,
            token_hash=hash_token(token),
            backend=self._backend.name,
            created_by=who.actor,
            team_id=who.team_id,
            user_id=who.user_id,
        )
        created = AuditEvent(
            org_id=who.org_id,
            actor=who.actor,
            type="runner.created",
            runner_id=runner_id,
            data={
                "state": runner.state,
                "profile": profile.name,
                "sandbox": sandbox.name,
                "image": runner.image,
                "model": model,
                "budget_usd": req.budget_usd,
            },
        )
        await self._store.apply([InsertRunner(runner), AppendAudit(created)])
        env = {
            "PADDOCK_RUNNER_ID": runner_id,
            "PADDOCK_RUNNER_TOKEN": token,
            "PADDOCK_MODEL": model,
            "OPENCLAW_GATEWAY_TOKEN": self.agent_token(runner_id),
            "PADDOCK_AGENT_CONFIG": encode_config(render_openclaw_config(profile, model=model)),
            "PADDOCK_EXEC_MODE": profile.exec,
            "PADDOCK_EXEC_ALLOWLIST": ",".join(profile.exec_allowlist),
            "OPENCLAW_NO_AUTO_UPDATE": "1",
        }
        spec = RunnerSpec(runner_id, who.org_id, runner.image, profile, sandbox, env)
        self._spawn(self._provision(runner_id, spec))
        return runner

    async def stop(
        self, who: Principal, runner_id: str, *, reason: str = "requested"
    ) -> RunnerRecord:
        runner = await self.get(who, runner_id)
        async with self._lock(runner_id):
            runner = await self.get(who, runner_id)
            if runner.state == RunnerState.STOPPED:
                return runner  # stopping twice is not an error
            self._lifecycle.next_state(runner.state, "stop")  # 409 before any side effect
            if runner.backend_ref:
                await self._backend.stop(runner.backend_ref)
            return await self._transition(runner, "stop", who.actor, reason)

    async def delete(self, who: Principal, runner_id: str) -> None:
        runner = await self.get(who, runner_id)
        if self._lifecycle.is_live(runner.state):
            runner = await self.stop(who, runner_id, reason="deleted")
        async with self._lock(runner_id):
            runner = await self.get(who, runner_id)
            await self._backend.destroy(runner_id)
            await self._store.apply(
                [
                    UpdateRunner(runner.id, runner.version, {"deleted": True}),
                    AppendAudit(
                        _event(runner, who.actor, "runner.deleted", {"state": runner.state})
                    ),
                ]
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
            return await self._transition(runner, trigger, actor, reason, changes, extra)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    # --- internals ----------------------------------------------------------------------

    def _lock(self, runner_id: str) -> asyncio.Lock:
        return self._locks.setdefault(runner_id, asyncio.Lock())

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transition(
        self,
        runner: RunnerRecord,
        trigger: str,
        actor: str,
        reason: str,
        changes: dict[str, Any] | None = None,
        extra: Sequence[Operation] = (),
    ) -> RunnerRecord:
        dest = self._lifecycle.next_state(runner.state, trigger)
        update: dict[str, Any] = {"state": dest.value, **(changes or {})}
        closing: list[Operation] = []
        if runner.session_id and dest in (RunnerState.STOPPED, RunnerState.FAILED):
            closing = await self._close_session_ops(runner, actor, f"runner_{dest.value}")
            update["session_id"] = None
        ops: list[Operation] = [UpdateRunner(runner.id, runner.version, update), *closing, *extra]
        data = {"from": runner.state, "to": dest.value, "trigger": trigger, "reason": reason}
        if "failure_code" in update:
            data["failure_code"] = update["failure_code"]
        ops.append(AppendAudit(_event(runner, actor, "runner.state_changed", data)))
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

    async def _provision(self, runner_id: str, spec: RunnerSpec) -> None:
        try:
            await self._provision_steps(runner_id, spec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a crash here must leave the runner failed, never stuck
            logger.exception("provisioning of %s crashed", runner_id)
            await self._fail(runner_id, "internal_error", f"{type(exc).__name__}: {exc}")

    async def _provision_steps(self, runner_id: str, spec: RunnerSpec) -> None:
        try:
            ref = await self._backend.provision(spec)
        except BackendError as exc:
            await self._fail(
                runner_id, str(exc.details.get("reason", "backend_error")), exc.message
            )
            return
        async with self._lock(runner_id):
            runner = await self._store.get_runner(runner_id)
            if runner is None:
                return
            runner = (
                await self._store.apply(
                    [UpdateRunner(runner.id, runner.version, {"backend_ref": ref})]
                )
            ).runners[runner_id]
            if runner.state != RunnerState.PROVISIONING:
                # Stopped or deleted while the backend was creating it: undo what it made.
                await self._backend.stop(ref)
                return
        deadline = anyio.current_time() + self._settings.ready_timeout_s
        last = ""
        while anyio.current_time() < deadline:
            result = await self._backend.probe(ref)
            if result.state == "ready":
                async with self._lock(runner_id):
                    runner = await self._store.get_runner(runner_id)
                    if runner is not None and runner.state == RunnerState.PROVISIONING:
                        await self._transition(runner, "became_ready", "system", "probe_ok")
                return
            if result.state in ("exited", "missing"):
                code = _exit_reason(result.exit_code, result.oom_killed, result.state)
                code = result.reason or code
                await self._fail(runner_id, code, result.detail or result.state)
                return
            last = result.detail
            current = await self._store.get_runner(runner_id)
            if current is None or current.state != RunnerState.PROVISIONING:
                return
            await asyncio.sleep(self._settings.probe_interval_s)
        await self._fail(
            runner_id,
            "probe_timeout",
            f"not ready after {self._settings.ready_timeout_s:.0f} s (last: {last})",
        )

    async def _fail(self, runner_id: str, code: str, message: str) -> None:
        async with self._lock(runner_id):
            runner = await self._store.get_runner(runner_id)
            if runner is None or not self._lifecycle.is_live(runner.state):
                return
            if runner.backend_ref:
                try:
                    await self._backend.stop(runner.backend_ref)
                except PaddockError:
                    logger.warning("could not stop failed runner %s", runner_id)
            await self._transition(
                runner,
                "fail",
                "system",
                code,
                changes={"failure_code": code, "failure_message": message[:2000]},
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


def _exit_reason(exit_code: int | None, oom_killed: bool, state: str) -> str:
    if state == "missing":
        return "container_vanished"
    if oom_killed:
        return "oom_killed"
    if exit_code == 3:
        return "gateway_unreachable"
    return "exited"
