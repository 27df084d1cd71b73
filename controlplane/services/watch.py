"""The runner watch: live runners whose container died or ran out of resources become `failed`.

Provisioning is watched by the runner service itself; once a runner is ready, only this loop
notices that its container exited, vanished, was OOM-killed or hit its pids limit. One pass
is: observe the backend (one listing), compare with the store, act on what differs. That is
the shape of a reconciler, into which this is meant to fold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from paddock_core import AuditQuery, ConflictError, PaddockError, RunnerRecord, Store

from ..backends import ObservedRunner, RunnerBackend
from ..domain import RunnerState
from .runners import Principal, RunnerService
from .sessions import ENDING_EVENTS, SessionService

__all__ = ["RunnerWatch"]

logger = logging.getLogger(__name__)

_WATCHED = frozenset({RunnerState.READY.value, RunnerState.RUNNING.value})
_GONE = frozenset({"exited", "dead", "missing"})
_MESSAGES = {
    "pids_exhausted": "the runner reached its pids limit (the kernel refused a fork)",
    "oom_killed": "the runner reached its memory limit (the kernel OOM-killed a process)",
}


class RunnerWatch:
    def __init__(
        self,
        *,
        store: Store,
        backend: RunnerBackend,
        runners: RunnerService,
        sessions: SessionService | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self._store = store
        self._backend = backend
        self._runners = runners
        self._sessions = sessions
        self._exhausted_seen: dict[str, int] = {}  # org -> seq of the last budget.exhausted read
        self._interval_s = interval_s
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
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_once()
            except Exception:  # the watch must outlive any one bad pass
                logger.exception("runner watch pass failed")

    async def check_once(self) -> list[str]:
        """One pass; returns the ids of the runners it failed."""
        live = [
            r
            for r in await self._store.list_runners()
            if r.state in _WATCHED and not r.deleted and r.backend == self._backend.name
        ]
        if not live:
            return []
        await self._close_exhausted(live)
        observed = {o.runner_id: o for o in await self._backend.list_runners()}
        failed = []
        for runner in live:
            seen = observed.get(runner.id, ObservedRunner(runner.id, "", "missing"))
            if seen.status in _GONE or seen.reason is not None:
                if await self._fail(runner, seen):
                    failed.append(runner.id)
        return failed

    async def _close_exhausted(self, live: list[RunnerRecord]) -> None:
        """Sessions the gateway asked to end between agent turns (out of budget, a loop; an
        agent working on its own) are closed here; after a turn, the session service does it
        at once."""
        if self._sessions is None:
            return
        open_sessions = {r.session_id: r for r in live if r.session_id is not None}
        # list_audit filters by type in the store; `after_seq` skips what earlier passes read.
        for org_id in {r.org_id for r in open_sessions.values()}:
            after = self._exhausted_seen.get(org_id, 0)
            query = AuditQuery(types=ENDING_EVENTS, after_seq=after, limit=100)
            for event in await self._store.list_audit(org_id, query=query):
                self._exhausted_seen[org_id] = event.seq
                if event.session_id in open_sessions and event.session_id is not None:
                    who = Principal(org_id=org_id, actor="system")
                    await self._sessions.close_if_ended(who, event.session_id)

    async def _fail(self, runner: RunnerRecord, seen: ObservedRunner) -> bool:
        code = seen.reason or "exited"
        message = _MESSAGES.get(code, f"the container is {seen.status}")
        if seen.status in _GONE and runner.backend_ref:
            result = await self._backend.probe(runner.backend_ref)
            if result.state == "missing":
                code, message = "container_vanished", result.detail
            else:
                code = result.reason or ("oom_killed" if result.oom_killed else code)
                message = f"exited with code {result.exit_code}: {result.detail}"
        changes = {"failure_code": code, "failure_message": message[:2000]}
        try:
            await self._runners.transition(runner.id, "fail", "system", code, changes=changes)
        except ConflictError:  # stopped or failed meanwhile: nothing left to do
            return False
        logger.warning("runner %s failed: %s (%s)", runner.id, code, message)
        if runner.backend_ref:
            # Failed first (its token dies at once), then stopped: an exhausted sandbox can take
            # seconds to stop, and the watch must not wait for it.
            task = asyncio.get_running_loop().create_task(self._stop(runner))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        return True

    async def _stop(self, runner: RunnerRecord) -> None:
        try:
            await self._backend.stop(runner.backend_ref)
        except PaddockError:
            logger.exception("could not stop failed runner %s", runner.id)
