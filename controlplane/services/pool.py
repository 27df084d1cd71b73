"""Warm pools: runners started ahead of demand, per `image/profile/sandbox`, claimed on create.

A pooled runner is a runner record owned by the platform org (`settings.org_id`), state
`pooled`, with `pool` set and no `claimed_at`; nobody can see it through the API. Its
container runs with no per-runner secret: no runner token, no agent token, no config. The
agent waits (`PADDOCK_AWAIT_CLAIM=1`) and serves only `/healthz`, `/readyz` and
`POST /paddock/claim`, accepted only with the claim secret it was started with
(`x-paddock-claim`, derived per runner from the plane's secret key, worthless once claimed).

A claim is one compare-and-set: `pooled` → `provisioning`, moved to the claimant's org with a
new token (its hash only), model, budget and lifetime, audited in the claimant's chain
(`runner.created` with `claimed_from`) and in the platform's (`pool.claimed`). Then the agent
is handed its environment (tokens, config, proxy) over HTTP; it checks the gateway with the
new token, which the gateway accepts only from the runner's address. That address is the
runner's own from its creation (its /28 network came with it), so the address binding needs
nothing new. On E2B (no address), the backend first replaces the sandbox's network rules with
the claimed runner's, so E2B carries the new token (`SupportsPool.claim_env`). Then the
runner is probed ready as any other. The pool refills in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import anyio
import httpx

from paddock_core import (
    AppendAudit,
    AuditEvent,
    BackendError,
    ConflictError,
    PaddockError,
    RunnerRecord,
    hash_token,
    mint_token,
    utcnow,
)

from ..backends import RunnerSpec, SupportsPool
from ..domain import RunnerState
from ..settings import ControlPlaneSettings
from .agent_config import DEFAULT_API
from .plan import CLAIM_HEADER, RunnerPlan, RunnerRequest
from .runners import Principal, RunnerService, created_event

__all__ = ["WarmPool"]

logger = logging.getLogger(__name__)

S = RunnerState
_CLAIM_WAIT_S = 2.0  # a create answers once the claimed runner is ready, or after this
_HANDOVER_TIMEOUT_S = 15.0  # the agent checks the gateway before it answers the handover
_FILLING = frozenset({S.PROVISIONING.value, S.POOLED.value})


class WarmPool:
    def __init__(
        self, *, runners: RunnerService, http: httpx.AsyncClient, settings: ControlPlaneSettings
    ) -> None:
        self._runners = runners
        self._store = runners.store
        self._http = http
        self._settings = settings
        self._owner = settings.org_id
        self._sizes = {k: n for k, n in settings.pools.items() if n > 0}
        self._claim_lock = asyncio.Lock()
        self._fill_lock = asyncio.Lock()
        self._refills: set[asyncio.Task[None]] = set()
        for key in self._sizes:  # a wrong pool is a configuration error, found at start
            image, profile, sandbox = key.split("/")
            p = self._runners.plan(RunnerRequest(profile, sandbox, None, image))
            if image == "openclaw" and p.profile.network != "gateway_only":
                logger.warning(
                    "pool %s: pooled OpenClaw runners get no egress proxy (it is set at start, "
                    "with the token); their egress stays closed",
                    key,
                )
        backend = runners.backend
        if self._sizes and not (backend.capabilities.pool and isinstance(backend, SupportsPool)):
            raise PaddockError(f"the {backend.name} backend cannot keep warm pools")
        runners.claimer = self

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    async def status(self) -> list[dict[str, Any]]:
        """Per pool: its size, and how many of its runners are warm or starting."""
        records = await self._unclaimed()
        return [
            {
                "pool": key,
                "size": size,
                "warm": sum(r.pool == key and r.state == S.POOLED for r in records),
                "starting": sum(r.pool == key and r.state == S.PROVISIONING for r in records),
            }
            for key, size in self._sizes.items()
        ]

    async def claim(self, who: Principal, p: RunnerPlan, key: str | None) -> RunnerRecord | None:
        """A pooled runner bound to `who`, or None when its pool is empty (or there is none)."""
        if p.pool_key not in self._sizes or p.api != DEFAULT_API:
            return None  # pooled runners are configured with the default API
        token = mint_token("prt")
        async with self._claim_lock:
            runner = await self._bind(who, p, key, token)
        self.refill_soon()
        if runner is None:
            return None
        task = self._runners.provisioner.spawn(runner.id, self._hand_over(runner, p, token))
        await asyncio.wait({task}, timeout=_CLAIM_WAIT_S)
        return await self._store.get_runner(runner.id) or runner

    async def _bind(
        self, who: Principal, p: RunnerPlan, key: str | None, token: str
    ) -> RunnerRecord | None:
        inflight = self._runners.provisioner.inflight
        for cand in await self._pooled(p.pool_key):
            if cand.id in inflight:
                continue
            now = utcnow()
            expires = cand.expires_at
            if p.ttl_s is not None:
                mine = now + timedelta(seconds=p.ttl_s)
                expires = mine if expires is None else min(expires, mine)
            changes: dict[str, Any] = {
                "org_id": who.org_id,
                "token_hash": hash_token(token),
                "model": p.model,
                "budget_usd": p.budget_usd,
                "created_by": who.actor,
                "team_id": who.team_id,
                "user_id": who.user_id,
                "claimed_at": now,
                "last_active_at": now,
                "expires_at": expires,
                "idempotency_key": key,
            }
            bound = cand.model_copy(update={**changes, "state": S.PROVISIONING.value})
            audit = [
                AppendAudit(created_event(bound, who, claimed_from=p.pool_key)),
                AppendAudit(
                    AuditEvent(
                        org_id=self._owner,
                        actor=who.actor,
                        type="pool.claimed",
                        runner_id=cand.id,
                        data={"pool": p.pool_key, "org_id": who.org_id},
                    )
                ),
            ]
            async with self._runners.guard(cand.id, cand.version) as current:
                if current is None:
                    continue  # claimed or changed by someone else meanwhile
                try:
                    with self._runners.provisioner.reserve(cand.id):
                        return await self._runners.transition_locked(
                            current, "claim", who.actor, "claimed", changes, audit
                        )
                except ConflictError:
                    continue
        return None

    async def _hand_over(self, runner: RunnerRecord, p: RunnerPlan, token: str) -> None:
        """Give the claimed agent its secrets and config, then probe it ready."""
        backend = self._runners.backend
        env = p.env(runner.id, token=token, agent_token=self._runners.agent_token(runner.id))
        try:
            if isinstance(backend, SupportsPool):
                spec = RunnerSpec(runner.id, runner.org_id, p.image, p.profile, p.sandbox, env)
                env = await backend.claim_env(spec, runner.backend_ref)
        except BackendError as exc:
            await self._runners.fail(runner.id, "claim_failed", exc.message)
            return
        url = f"{backend.agent_url(runner.backend_ref)}/paddock/claim"
        headers = {CLAIM_HEADER: self._runners.claim_secret(runner.id)}
        try:
            answer = await self._http.post(
                url, json={"env": env}, headers=headers, timeout=_HANDOVER_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            await self._runners.fail(runner.id, "claim_failed", f"agent unreachable: {exc!r}")
            return
        if answer.status_code != 200:
            detail = f"agent answered {answer.status_code}: {answer.text[:500]}"
            await self._runners.fail(runner.id, "claim_failed", detail)
            return
        deadline = anyio.current_time() + self._settings.ready_timeout_s
        await self._runners.provisioner.await_ready(
            runner.id, runner.backend_ref, deadline, "became_ready"
        )

    # --- filling --------------------------------------------------------------------------

    def refill_soon(self) -> None:
        """Top the pools up in the background (one fill at a time)."""
        if not self._sizes or self._fill_lock.locked():
            return
        task = asyncio.get_running_loop().create_task(self._refill())
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill(self) -> None:
        try:
            await self.top_up()
        except PaddockError:
            logger.exception("warm pool refill failed")

    async def top_up(self) -> list[str]:
        """Start pooled runners where a pool is short; returns their ids. Never more than
        `pool_refill_parallel` are starting at once."""
        started: list[str] = []
        async with self._fill_lock:
            records = await self._unclaimed()
            starting = sum(r.state == S.PROVISIONING for r in records)
            budget = self._settings.pool_refill_parallel - starting
            for key, size in self._sizes.items():
                have = sum(r.pool == key and r.state in _FILLING for r in records)
                for _ in range(max(0, min(size - have, budget))):
                    started.append(await self._start(key))
                    budget -= 1
        return started

    async def prune(self) -> list[str]:
        """Delete unclaimed pool runners that failed or stopped, or used half their life."""
        now = utcnow()
        half = timedelta(seconds=(self._settings.runner_ttl_s or 0) / 2)
        pruned = []
        for r in await self._unclaimed():
            old = r.expires_at is not None and r.expires_at - now < half
            if r.state in _FILLING and not (old and r.state == S.POOLED):
                continue
            if r.id in self._runners.provisioner.inflight:
                continue
            async with self._runners.guard(r.id, r.version) as current:
                if current is None:
                    continue
                if current.state != S.DELETING:
                    reason = "pool_recycled" if old else "pool_runner_unusable"
                    current = await self._runners.transition_locked(
                        current, "delete", "system", reason
                    )
                await self._runners.finish_delete(current, "system")
                pruned.append(r.id)
        return pruned

    async def close(self) -> None:
        for task in list(self._refills):
            task.cancel()
        for task in list(self._refills):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pooled(self, key: str) -> list[RunnerRecord]:
        return [r for r in await self._unclaimed() if r.pool == key and r.state == S.POOLED]

    async def _unclaimed(self) -> list[RunnerRecord]:
        return [
            r
            for r in await self._store.list_runners(self._owner)
            if r.pool is not None and r.claimed_at is None and not r.deleted
        ]

    async def _start(self, key: str) -> str:
        image, profile, sandbox = key.split("/")
        p = self._runners.plan(RunnerRequest(profile, sandbox, None, image))
        who = Principal(org_id=self._owner, actor="system:pool")
        return (await self._runners.launch(who, p, pool=key)).id
