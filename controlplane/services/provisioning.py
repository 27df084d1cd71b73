"""Provisioning: backend create, store the reference, probe until ready (or warm), or fail.

Runs as background tasks of the runner service. The ids being worked on here are `inflight`;
the reconciler leaves those alone and adopts any other runner found in `provisioning` (a
crash interrupted it): it resumes probing when the container is there, and fails the runner
with `interrupted` when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio

from paddock_core import BackendError, RunnerRecord, Store, UpdateRunner, utcnow

from ..backends import RunnerBackend, RunnerSpec
from ..domain import RunnerState
from ..settings import ControlPlaneSettings

if TYPE_CHECKING:
    from .runners import RunnerService

__all__ = ["Provisioner"]

logger = logging.getLogger(__name__)

_SHUTDOWN_WAIT_S = 30.0  # for backend creations under way at shutdown


class Provisioner:
    def __init__(
        self,
        runners: RunnerService,
        *,
        store: Store,
        backend: RunnerBackend,
        settings: ControlPlaneSettings,
    ) -> None:
        self._runners = runners
        self._store = store
        self._backend = backend
        self._settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._creating: set[asyncio.Task[dict[str, Any] | None]] = set()
        self.inflight: set[str] = set()
        """Runner ids this process is provisioning (or claiming) right now."""

    @contextlib.contextmanager
    def reserve(self, runner_id: str) -> Iterator[None]:
        """Mark `runner_id` in flight while its record is written; released if that fails
        (else `start`/`spawn` keeps it until the work is done)."""
        self.inflight.add(runner_id)
        try:
            yield
        except BaseException:
            self.inflight.discard(runner_id)
            raise

    def start(self, runner_id: str, spec: RunnerSpec, trigger: str = "became_ready") -> None:
        """Provision in the background; `trigger` is `became_warm` for a pooled runner."""
        self.spawn(runner_id, self._provision(runner_id, spec, trigger))

    def adopt(self, runner: RunnerRecord) -> None:
        """Resume a provisioning that a crash interrupted, if it can be resumed."""
        self.spawn(runner.id, self._adopt(runner))

    def spawn(self, runner_id: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        self.inflight.add(runner_id)

        async def _run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a crash here must leave the runner failed, never stuck
                logger.exception("provisioning of %s crashed", runner_id)
                await self._runners.fail(
                    runner_id, "internal_error", f"{type(exc).__name__}: {exc}"
                )
            finally:
                self.inflight.discard(runner_id)

        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(_run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def shutdown(self) -> None:
        """Cancel provisioning tasks: their runners stay `provisioning`, every record whole,
        and the next start adopts them. Backend creations under way are waited for (a
        thread cannot be cancelled), so what they made is recorded or removed."""
        for task in list(self._tasks):
            task.cancel()
        pending = self._tasks | self._creating
        if pending:
            await asyncio.wait(pending, timeout=_SHUTDOWN_WAIT_S)

    async def _provision(self, runner_id: str, spec: RunnerSpec, trigger: str) -> None:
        # Shielded: cancelling the provisioning must not orphan what the backend is making.
        creating = asyncio.get_running_loop().create_task(self._create(runner_id, spec))
        self._creating.add(creating)
        creating.add_done_callback(self._creating.discard)
        ref = await asyncio.shield(creating)
        if ref is not None:
            deadline = anyio.current_time() + self._settings.ready_timeout_s
            await self.await_ready(runner_id, ref, deadline, trigger)

    async def _create(self, runner_id: str, spec: RunnerSpec) -> dict[str, Any] | None:
        """Backend create, then store its reference; None when there is nothing to probe."""
        try:
            ref = await self._backend.provision(spec)
        except BackendError as exc:
            reason = str(exc.details.get("reason", "backend_error"))
            await self._runners.fail(runner_id, reason, exc.message)
            return None
        async with self._runners.guard(runner_id) as runner:
            if runner is None:
                return None
            update = UpdateRunner(runner.id, runner.version, {"backend_ref": ref})
            runner = (await self._store.apply([update])).runners[runner_id]
            if runner.deleted or runner.state in (RunnerState.DELETING, RunnerState.DELETED):
                # Deleted while the backend was creating it: remove what it made.
                await self._backend.destroy(runner_id)
                return None
            if runner.state != RunnerState.PROVISIONING:
                await self._backend.stop(ref)  # stopped or failed meanwhile
                return None
        return ref

    async def _adopt(self, runner: RunnerRecord) -> None:
        started = runner.claimed_at or runner.created_at
        left = (
            started + timedelta(seconds=self._settings.ready_timeout_s) - utcnow()
        ).total_seconds()
        if runner.claimed_at is not None or not runner.backend_ref:
            # A claim's secrets were never stored, and a container without a stored reference
            # may hold an environment nobody can reproduce: neither can be resumed.
            await self._runners.fail(
                runner.id,
                "interrupted",
                "the control plane stopped while this runner was being "
                + ("claimed" if runner.claimed_at else "created"),
                version=runner.version,
            )
            return
        if left <= 0:
            await self._runners.fail(
                runner.id, "probe_timeout", "not ready in time", version=runner.version
            )
            return
        trigger = "became_warm" if runner.pool and runner.claimed_at is None else "became_ready"
        logger.info("adopting runner %s in provisioning (%.0f s left)", runner.id, left)
        await self.await_ready(runner.id, runner.backend_ref, anyio.current_time() + left, trigger)

    async def await_ready(
        self, runner_id: str, ref: dict[str, Any], deadline: float, trigger: str
    ) -> None:
        """Probe until ready (then `trigger`), exited (then failed) or `deadline` (anyio time)."""
        last = ""
        while anyio.current_time() < deadline:
            result = await self._backend.probe(ref)
            if result.state == "ready":
                async with self._runners.guard(runner_id) as runner:
                    if runner is not None and runner.state == RunnerState.PROVISIONING:
                        await self._runners.transition_locked(runner, trigger, "system", "probe_ok")
                return
            if result.state in ("exited", "missing"):
                code = result.reason or _exit_reason(
                    result.exit_code, result.oom_killed, result.state
                )
                await self._runners.fail(runner_id, code, result.detail or result.state)
                return
            last = result.detail
            current = await self._store.get_runner(runner_id)
            if current is None or current.state != RunnerState.PROVISIONING:
                return
            await asyncio.sleep(self._settings.probe_interval_s)
        await self._runners.fail(
            runner_id,
            "probe_timeout",
            f"not ready after {self._settings.ready_timeout_s:.0f} s (last: {last})",
        )


def _exit_reason(exit_code: int | None, oom_killed: bool, state: str) -> str:
    if state == "missing":
        return "container_vanished"
    if oom_killed:
        return "oom_killed"
    if exit_code == 3:
        return "gateway_unreachable"
    return "exited"
