"""Seeding and reading the gateway's store from tests, through the core's store API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from gateway._transport import AiohttpTransport, loopback_only
from paddock_core import (
    AuditEvent,
    InsertRunner,
    InsertSession,
    LlmCallRecord,
    OrgGatewayRecord,
    PutObject,
    RunnerRecord,
    SessionRecord,
    Store,
    UpdateObject,
    UpdateRunner,
    hash_token,
    mint_token,
    new_id,
    open_store,
)

ORG = "org_gateway_tests"
ADMIN_KEY = "pdk_gateway_test_admin_key"
FAKE_PROVIDER_KEY = "fk_gateway_test_provider_key"

T = TypeVar("T")


def loopback_transport() -> AiohttpTransport:
    """The gateway's real (default) transport, refusing any host that is not a loopback address:
    whatever a test routes by mistake to a real provider never leaves the machine."""
    return AiohttpTransport(
        connect_timeout_s=2.0, read_timeout_s=5.0, max_connections=100, host_filter=loopback_only
    )


@dataclass(frozen=True)
class Seeded:
    token: str
    runner_id: str
    session_id: str | None


class Records:
    """Seeds and reads the gateway's store through the core API, one short-lived store each."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def _run(self, work: Callable[[Store], Awaitable[T]]) -> T:
        async def main() -> T:
            store = open_store(self.database_url)
            await store.open()
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(main())

    def runner(
        self,
        *,
        state: str = "running",
        model: str = "fake-gpt",
        budget_usd: float | None = None,
        spent_usd: float = 0.0,
        session_budget_usd: float | None = None,
        session_spent_usd: float = 0.0,
        with_session: bool = True,
        deleted: bool = False,
        org_id: str = ORG,
    ) -> Seeded:
        token = mint_token("prt")
        runner_id = new_id("rn")
        session_id = new_id("ses") if with_session else None
        runner = RunnerRecord(
            id=runner_id,
            org_id=org_id,
            state=state,
            profile="minimal",
            sandbox="hardened",
            image="paddock/runner-probe:latest",
            model=model,
            budget_usd=budget_usd,
            spent_usd=spent_usd,
            token_hash=hash_token(token),
            session_id=session_id,
            backend="fake",
            deleted=deleted,
        )
        ops: list[InsertRunner | InsertSession] = [InsertRunner(runner)]
        if session_id is not None:
            session = SessionRecord(
                id=session_id,
                org_id=org_id,
                runner_id=runner_id,
                budget_usd=session_budget_usd,
                spent_usd=session_spent_usd,
            )
            ops.append(InsertSession(session))
        self._run(lambda store: store.apply(ops))
        return Seeded(token=token, runner_id=runner_id, session_id=session_id)

    def set_state(self, runner_id: str, state: str) -> None:
        async def work(store: Store) -> None:
            runner = await store.get_runner(runner_id)
            assert runner is not None
            await store.apply([UpdateRunner(runner_id, runner.version, {"state": state})])

        self._run(work)

    def put_org_gateway(self, record: OrgGatewayRecord) -> None:
        async def work(store: Store) -> None:
            if await store.get_object("org_gateway", record.id) is None:
                await store.apply([PutObject("org_gateway", record)])
            else:
                changes = record.model_dump(mode="json", exclude={"id", "org_id"})
                await store.apply([UpdateObject("org_gateway", record.id, changes)])

        self._run(work)

    def get_runner(self, runner_id: str) -> RunnerRecord:
        runner = self._run(lambda store: store.get_runner(runner_id))
        assert runner is not None
        return runner

    def get_session(self, session_id: str) -> SessionRecord:
        session = self._run(lambda store: store.get_session(session_id))
        assert session is not None
        return session

    def calls(self, runner_id: str) -> list[LlmCallRecord]:
        return self._run(lambda store: store.list_llm_calls(runner_id=runner_id))

    def audit(self, *, runner_id: str | None = None, org_id: str = ORG) -> list[AuditEvent]:
        return self._run(lambda store: store.list_audit(org_id, runner_id=runner_id))

    def wait_for_calls(
        self, runner_id: str, count: int, timeout_s: float = 5.0
    ) -> list[LlmCallRecord]:
        """A stream that ends early (cut, broken) is recorded just after, so poll for it."""
        deadline = time.monotonic() + timeout_s
        while len(calls := self.calls(runner_id)) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"runner {runner_id}: {len(calls)} calls recorded, expected {count}")
            time.sleep(0.02)
        return calls
