"""The reconciler: at start and every `watch_interval_s`, make the backend match the store.

One pass observes the backend first (one listing, by label), then reads the store, so every
container it sees was created after its record (intent is stored before the backend is
asked): a container with no live record is an orphan, never a runner being born. Then, per
runner, under its lock and only if its version is still the one the pass read:

- labelled containers and networks the store does not know (or knows as deleted): removed;
- `stopping` / `deleting` left by a crash: finished; `provisioning` left by a crash: adopted
  (probed on) or failed with `interrupted`;
- a live runner whose container exited, died or vanished, or that the kernel reports out of
  memory or pids: `failed` with that reason (then its container is stopped);
- past its TTL (`expires_at`): stopped (`ttl_expired`); a stopped or failed runner's
  container past its expiry label (plus a grace period): removed;
- idle (no message for `idle_timeout_s`): suspended (docker pause) or stopped, per
  `idle_action`; the paused/running state of the container converges to the record's;
- stopped or failed runners whose container still runs: stopped;
- warm pools: unusable pooled runners pruned, pools topped up.

Each pass also keeps E2B leases alive (its `list_runners` renews them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from paddock_core import ConflictError, PaddockError, RunnerRecord, Store, utcnow

from ..backends import ObservedRunner, RunnerBackend, SupportsPause
from ..domain import RunnerState
from ..settings import ControlPlaneSettings
from .pool import WarmPool
from .runners import RunnerService
from .sessions import SessionService

__all__ = ["ReconcileReport", "Reconciler"]

logger = logging.getLogger(__name__)

S = RunnerState
_SERVING = frozenset({S.POOLED.value, S.READY.value, S.RUNNING.value, S.SUSPENDED.value})
_GONE = frozenset({"exited", "dead", "missing", "network"})
_UP = frozenset({"running", "paused", "restarting"})
_MESSAGES = {
    "pids_exhausted": "the runner reached its pids limit (the kernel refused a fork)",
    "oom_killed": "the runner reached its memory limit (the kernel OOM-killed a process)",
}


@dataclass
class ReconcileReport:
    """What one pass did, by runner id."""

    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    suspended: list[str] = field(default_factory=list)
    converged: list[str] = field(default_factory=list)
    pool_started: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        *,
        store: Store,
        backend: RunnerBackend,
        runners: RunnerService,
        settings: ControlPlaneSettings,
        pool: WarmPool | None = None,
        sessions: SessionService | None = None,
    ) -> None:
        """`sessions`: when given, each pass also closes the sessions the gateway asked to end
        between agent turns (budget exhausted, a loop)."""
        self._sessions = sessions
        self._store = store
        self._backend = backend
        self._runners = runners
        self._settings = settings
        self._pool = pool
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._stopping:
            await asyncio.wait(self._stopping, timeout=15)

    async def _run(self) -> None:
        while True:  # the first pass runs at once: a restart repairs before it waits
            try:
                await self.reconcile_once()
            except Exception:  # the loop must outlive any one bad pass
                logger.exception("reconcile pass failed")
            await asyncio.sleep(self._settings.watch_interval_s)

    async def reconcile_once(self) -> ReconcileReport:
        report = ReconcileReport()
        observed = {o.runner_id: o for o in await self._backend.list_runners()}
        records = {
            r.id: r for r in await self._store.list_runners() if r.backend == self._backend.name
        }
        for runner_id, seen in observed.items():
            known = records.get(runner_id)
            if known is None or known.deleted:
                await self._backend.destroy(runner_id)
                logger.warning("removed orphan %s (%s)", runner_id or "?", seen.status)
                report.removed.append(runner_id)
        inflight = self._runners.provisioner.inflight
        for runner in records.values():
            if runner.deleted or runner.id in inflight:
                continue
            try:
                await self._one(runner, observed.get(runner.id), report)
            except (PaddockError, OSError):  # one runner's trouble must not stop the pass
                logger.exception("reconciling runner %s failed", runner.id)
        if self._sessions is not None:
            live = [r for r in records.values() if not r.deleted and r.session_id is not None]
            await self._sessions.close_ended_between_turns(live)
        if self._pool is not None:
            await self._pool.prune()
            report.pool_started = await self._pool.top_up()
        return report

    async def _one(
        self, runner: RunnerRecord, seen: ObservedRunner | None, report: ReconcileReport
    ) -> None:
        state = runner.state
        now = utcnow()
        if state == S.PROVISIONING:
            self._runners.provisioner.adopt(runner)
            report.adopted.append(runner.id)
        elif state in (S.STOPPING, S.DELETING):
            async with self._runners.guard(runner.id, runner.version) as current:
                if current is not None:
                    if state == S.STOPPING:
                        await self._runners.finish_stop(current, "system")
                    else:
                        await self._runners.finish_delete(current, "system")
                    report.finished.append(runner.id)
        elif state in _SERVING:
            if seen is None or seen.status in _GONE or seen.reason is not None:
                if await self._fail(runner, seen):
                    report.failed.append(runner.id)
            elif runner.expires_at is not None and runner.expires_at <= now:
                if await self._stop(runner, "ttl_expired"):
                    report.expired.append(runner.id)
            elif await self._converge(runner, seen):
                report.converged.append(runner.id)
            elif self._idle(runner, now):
                if await self._idle_out(runner):
                    report.suspended.append(runner.id)
        elif seen is not None:  # stopped or failed: its container must not run, nor outlive
            grace = self._settings.expired_sweep_grace_s
            if seen.expires_at is not None and seen.expires_at + grace < time.time():
                await self._backend.destroy(runner.id)
                report.removed.append(runner.id)
            elif seen.status in _UP and runner.backend_ref:
                await self._backend.stop(runner.backend_ref)
                report.converged.append(runner.id)

    def _idle(self, runner: RunnerRecord, now: object) -> bool:
        limit = self._settings.idle_timeout_s
        if limit is None or runner.state not in (S.READY, S.RUNNING):
            return False
        since = runner.last_active_at or runner.updated_at
        return bool(since + timedelta(seconds=limit) <= now)  # type: ignore[operator]

    async def _idle_out(self, runner: RunnerRecord) -> bool:
        if self._settings.idle_action == "stop" or not isinstance(self._backend, SupportsPause):
            return await self._stop(runner, "idle_timeout")
        async with self._runners.guard(runner.id, runner.version) as current:
            if current is None:
                return False
            await self._runners.suspend(current, "system", "idle_timeout")
            return True

    async def _converge(self, runner: RunnerRecord, seen: ObservedRunner) -> bool:
        """A paused container of a runner that should run, or the reverse (a crash between
        the recorded intent and the pause or unpause): repeat the action."""
        if not isinstance(self._backend, SupportsPause) or not runner.backend_ref:
            return False
        if runner.state == S.SUSPENDED and seen.status == "running":
            await self._backend.pause(runner.backend_ref)
            return True
        if runner.state != S.SUSPENDED and seen.status == "paused":
            await self._backend.resume(runner.backend_ref)
            return True
        return False

    async def _stop(self, runner: RunnerRecord, reason: str) -> bool:
        async with self._runners.guard(runner.id, runner.version) as current:
            if current is None:
                return False
            stopping = await self._runners.transition_locked(current, "stop", "system", reason)
            await self._runners.finish_stop(stopping, "system")
            return True

    async def _fail(self, runner: RunnerRecord, seen: ObservedRunner | None) -> bool:
        status = seen.status if seen is not None else "missing"
        code = (seen.reason if seen is not None else None) or "exited"
        message = _MESSAGES.get(code, f"the container is {status}")
        if status in _GONE and runner.backend_ref:
            result = await self._backend.probe(runner.backend_ref)
            if result.state == "missing":
                code, message = "container_vanished", result.detail
            else:
                code = result.reason or ("oom_killed" if result.oom_killed else code)
                message = f"exited with code {result.exit_code}: {result.detail}"
        elif status == "missing":
            code = "container_vanished"
        changes = {"failure_code": code, "failure_message": message[:2000]}
        async with self._runners.guard(runner.id, runner.version) as current:
            if current is None:
                return False
            try:
                await self._runners.transition_locked(current, "fail", "system", code, changes)
            except ConflictError:
                return False
        logger.warning("runner %s failed: %s (%s)", runner.id, code, message)
        if runner.backend_ref and status not in ("missing", "network"):
            # Failed first (its token dies at once), then stopped: an exhausted sandbox can take
            # seconds to stop, and the pass must not wait for it. An exited one is stopped too:
            # on E2B `exited` means the runner died but its VM still runs.
            task = asyncio.get_running_loop().create_task(self._stop_container(runner))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        return True

    async def _stop_container(self, runner: RunnerRecord) -> None:
        try:
            await self._backend.stop(runner.backend_ref)
        except PaddockError:
            logger.exception("could not stop failed runner %s", runner.id)
