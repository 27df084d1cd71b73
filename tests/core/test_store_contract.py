"""The `Store` contract: one suite, run against every implementation (see conftest.py).

Each test is a coroutine `body(store)` run by `backend.run`, which opens a fresh store on the
test's data; calling it twice is a reopen.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from paddock_core import (
    GENESIS_HASH,
    ApiKeyRecord,
    AppendAudit,
    AppendCheckpoint,
    AuditCheckpoint,
    AuditEvent,
    DeleteObject,
    InsertRunner,
    InsertSession,
    LlmCallRecord,
    NotFoundError,
    Operation,
    OrgRecord,
    PutObject,
    RecordLlmCall,
    Role,
    Store,
    StoreError,
    TeamRecord,
    UpdateObject,
    UpdateRunner,
    UpdateSession,
    VersionConflictError,
    open_store,
)
from tests.core.conftest import Backend
from tests.core.records import T0, assert_chain, call, event, json_i, runner, session

# --- runners and sessions -------------------------------------------------------------


def test_insert_get_and_list_runners_and_sessions(backend: Backend) -> None:
    a1, a2, b1 = runner("org_a"), runner("org_a"), runner("org_b")
    s1 = session(a1)

    async def body(store: Store) -> None:
        result = await store.apply([InsertRunner(a1), InsertRunner(a2), InsertSession(s1)])
        assert result.runners == {a1.id: a1, a2.id: a2} and result.sessions == {s1.id: s1}
        await store.apply([InsertRunner(b1)])
        assert await store.get_runner(a1.id) == a1
        assert await store.get_runner("rn_missing") is None
        assert [r.id for r in await store.list_runners()] == [a1.id, a2.id, b1.id]
        assert await store.list_runners("org_a") == [a1, a2]
        assert await store.list_runners("org_c") == []
        assert await store.find_runner_by_token(b1.token_hash) == b1
        assert await store.find_runner_by_token("nope") is None
        assert await store.get_session(s1.id) == s1
        assert await store.get_session("ss_missing") is None

    backend.run(body)


def test_duplicate_runner_id_is_refused(backend: Backend) -> None:
    r = runner()

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r)])
        with pytest.raises(StoreError):
            await store.apply([InsertRunner(runner(id=r.id)), AppendAudit(event())])
        assert await store.list_runners() == [r]
        assert await store.audit_head("org_a") == (0, GENESIS_HASH)

    backend.run(body)


def test_cas_update_succeeds_once_per_version(backend: Backend) -> None:
    r = runner()
    s = session(r)

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r), InsertSession(s)])
        result = await store.apply([UpdateRunner(r.id, 1, {"state": "ready"})])
        updated = result.runners[r.id]
        assert (updated.version, updated.state) == (2, "ready")
        assert updated.updated_at >= r.updated_at
        assert await store.get_runner(r.id) == updated
        with pytest.raises(VersionConflictError):
            await store.apply([UpdateRunner(r.id, 1, {"state": "failed"})])
        assert await store.get_runner(r.id) == updated

        closed = {"state": "closed", "closed_at": T0, "close_reason": "done"}
        got = (await store.apply([UpdateSession(s.id, 1, closed)])).sessions[s.id]
        assert (got.version, got.state, got.closed_at) == (2, "closed", T0)
        assert await store.get_session(s.id) == got
        with pytest.raises(VersionConflictError):
            await store.apply([UpdateSession(s.id, 1, {"close_reason": "again"})])

    backend.run(body)


def test_cas_update_moves_a_runner_to_another_org_and_token(backend: Backend) -> None:
    """A warm-pool claim rebinds a pooled runner: its org and token lookups follow the doc."""
    r = runner("org_pool")

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r)])
        change = {"org_id": "org_b", "token_hash": "tok_claimed"}
        moved = (await store.apply([UpdateRunner(r.id, 1, change)])).runners[r.id]
        assert await store.list_runners("org_pool") == []
        assert await store.list_runners("org_b") == [moved]
        assert await store.find_runner_by_token("tok_claimed") == moved
        assert await store.find_runner_by_token(r.token_hash) is None

    backend.run(body)


@pytest.mark.parametrize("field", ["spent_usd", "version", "id"])
def test_cas_refuses_store_owned_fields(backend: Backend, field: str) -> None:
    r = runner()

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r)])
        with pytest.raises(StoreError):
            await store.apply([UpdateRunner(r.id, 1, {field: 7})])
        assert await store.get_runner(r.id) == r

    backend.run(body)


def test_cas_on_a_missing_record_is_not_found(backend: Backend) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(NotFoundError):
            await store.apply([UpdateRunner("rn_missing", 1, {"state": "ready"})])
        with pytest.raises(NotFoundError):
            await store.apply([UpdateSession("ss_missing", 1, {"state": "closed"})])

    backend.run(body)


# --- atomic batches -----------------------------------------------------------------------


def test_a_failing_batch_leaves_nothing_behind(backend: Backend) -> None:
    r = runner()
    s = session(r)
    other = runner()

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r), InsertSession(s), AppendAudit(event())])
        head = await store.audit_head("org_a")
        doomed: list[Operation] = [
            InsertRunner(other),
            RecordLlmCall(call("org_a", r.id, s.id, cost_usd=1.5)),
            AppendAudit(event(type_="llm.call")),
            PutObject("team", TeamRecord(id="tm_doomed", org_id="org_a", name="x")),
            UpdateRunner(r.id, 99, {"state": "ready"}),  # loses: the whole batch goes
        ]
        with pytest.raises(VersionConflictError):
            await store.apply(doomed)
        assert await store.get_runner(other.id) is None
        assert await store.get_runner(r.id) == r
        assert await store.get_session(s.id) == s
        assert await store.list_llm_calls(org_id="org_a") == []
        assert await store.get_object("team", "tm_doomed") is None
        assert await store.audit_head("org_a") == head
        await assert_chain(store, "org_a", 1)

    backend.run(body)


def test_failing_batches_fail_alone_among_concurrent_ones(backend: Backend) -> None:
    r = runner()

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r)])
        good = [
            store.apply([AppendAudit(event(data={"i": i}))])
            if i % 5
            else store.apply([InsertRunner(runner()), AppendAudit(event(data={"i": i}))])
            for i in range(30)
        ]
        lost = [
            store.apply([AppendAudit(event(type_="doomed")), UpdateRunner(r.id, 5, {})])
            for _ in range(5)
        ]
        # An audit-only batch can fail too: its second event's data cannot be encoded.
        bad = event(data={"x": object()})
        unencodable = [store.apply([AppendAudit(event(type_="doomed")), AppendAudit(bad)])]
        outcomes = await asyncio.gather(*good, *lost, *unencodable, return_exceptions=True)
        assert not any(isinstance(o, BaseException) for o in outcomes[:30])
        assert all(isinstance(o, VersionConflictError) for o in outcomes[30:35])
        assert isinstance(outcomes[35], TypeError)
        rows = await assert_chain(store, "org_a", 30)
        assert {r.type for r in rows} == {"runner.created"}
        assert sorted(json_i(r) for r in rows) == list(range(30))
        assert len(await store.list_runners()) == 1 + 6

    backend.run(body)


def test_a_cancelled_caller_does_not_take_its_batch_back(backend: Backend) -> None:
    async def body(store: Store) -> None:
        r = runner()
        task = asyncio.create_task(store.apply([InsertRunner(r), AppendAudit(event())]))
        await asyncio.sleep(0)  # the batch is handed to the store
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.apply([AppendAudit(event(type_="after"))])  # queued behind it
        assert await store.get_runner(r.id) == r
        await assert_chain(store, "org_a", 2)

    backend.run(body)


def test_spend_increments_survive_concurrent_cas_updates(backend: Backend) -> None:
    r = runner()
    s = session(r)
    calls, updates = 40, 15

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r), InsertSession(s)])

        async def spend() -> None:
            await store.apply([RecordLlmCall(call("org_a", r.id, s.id, cost_usd=0.125))])

        async def touch_runner(i: int) -> None:
            for _ in range(200):  # bounded: each try loses only to another touch
                current = await store.get_runner(r.id)
                assert current is not None
                try:
                    await store.apply([UpdateRunner(r.id, current.version, {"model": f"m{i}"})])
                    return
                except VersionConflictError:
                    await asyncio.sleep(0)
            raise AssertionError("runner CAS never won")

        async def touch_session(i: int) -> None:
            for _ in range(200):
                current = await store.get_session(s.id)
                assert current is not None
                try:
                    change = {"close_reason": f"r{i}"}
                    await store.apply([UpdateSession(s.id, current.version, change)])
                    return
                except VersionConflictError:
                    await asyncio.sleep(0)
            raise AssertionError("session CAS never won")

        await asyncio.gather(
            *(spend() for _ in range(calls)),
            *(touch_runner(i) for i in range(updates)),
            *(touch_session(i) for i in range(updates)),
        )
        got_r, got_s = await store.get_runner(r.id), await store.get_session(s.id)
        assert got_r is not None and got_s is not None
        assert got_r.spent_usd == pytest.approx(calls * 0.125)
        assert got_s.spent_usd == pytest.approx(calls * 0.125)
        assert got_r.version == got_s.version == 1 + updates
        assert len(await store.list_llm_calls(runner_id=r.id)) == calls

    backend.run(body)


def test_record_llm_call_adds_to_session_and_runner(backend: Backend) -> None:
    r = runner()
    s = session(r)

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r), InsertSession(s)])
        await store.apply([RecordLlmCall(call("org_a", r.id, s.id, cost_usd=0.5))])
        await store.apply([RecordLlmCall(call("org_a", r.id, None, cost_usd=0.25))])
        await store.apply([RecordLlmCall(call("org_a", None, None, cost_usd=9.0))])
        got_r, got_s = await store.get_runner(r.id), await store.get_session(s.id)
        assert got_r is not None and got_r.spent_usd == pytest.approx(0.75)
        assert got_s is not None and got_s.spent_usd == pytest.approx(0.5)
        updated = (await store.apply([UpdateRunner(r.id, 1, {"state": "ready"})])).runners
        assert updated[r.id].spent_usd == pytest.approx(0.75)

    backend.run(body)


# --- tenancy objects ----------------------------------------------------------------------


def test_objects_put_get_list_update(backend: Backend) -> None:
    org_a, org_b = OrgRecord(id="org_a", name="A"), OrgRecord(id="org_b", name="B")
    teams = [TeamRecord(id=f"tm_{i}", org_id=f"org_{'ab'[i % 2]}", name=f"t{i}") for i in range(4)]
    key = ApiKeyRecord(
        id="pdk_0000aaaa", org_id="org_a", role=Role.OPERATOR, name="ci",
        key_hash="h" * 64, created_by="pdk_admin",
    )  # fmt: skip

    async def body(store: Store) -> None:
        await store.apply([PutObject("org", org_a), PutObject("org", org_b)])
        await store.apply([PutObject("team", t) for t in teams] + [PutObject("api_key", key)])
        got = await store.get_object("org", "org_a")
        assert got is not None and OrgRecord.model_validate(got) == org_a
        assert await store.get_object("org", "org_missing") is None
        assert await store.get_object("team", "org_a") is None  # kinds are separate
        listed = await store.list_objects("team", "org_a")
        assert [TeamRecord.model_validate(d) for d in listed] == [teams[0], teams[2]]
        assert [d["id"] for d in await store.list_objects("team", None)] == [t.id for t in teams]
        assert [d["id"] for d in await store.list_objects("org", None)] == ["org_a", "org_b"]

        await store.apply([UpdateObject("api_key", key.id, {"revoked_at": T0})])
        got_key = await store.get_object("api_key", key.id)
        assert got_key is not None
        assert ApiKeyRecord.model_validate(got_key) == key.model_copy(update={"revoked_at": T0})
        with pytest.raises(NotFoundError):
            await store.apply([UpdateObject("api_key", "pdk_missing", {"name": "x"})])
        with pytest.raises(StoreError):
            await store.apply([PutObject("org", OrgRecord(id="org_a", name="again"))])
        got = await store.get_object("org", "org_a")
        assert got is not None and got["name"] == "A"

    backend.run(body)


def test_object_updates_compare_and_set_when_asked(backend: Backend) -> None:
    team = TeamRecord(id="tm_cas", org_id="org_a", name="t")

    async def body(store: Store) -> None:
        await store.apply([PutObject("team", team)])
        await store.apply([UpdateObject("team", team.id, {"name": "u"}, expected={"name": "t"})])
        event = AuditEvent(org_id="org_a", actor="test", type="team.renamed")
        with pytest.raises(VersionConflictError) as lost:
            await store.apply(
                [
                    UpdateObject("team", team.id, {"name": "v"}, expected={"name": "t"}),
                    AppendAudit(event),
                ]
            )
        assert lost.value.details["current"] == "u"
        got = await store.get_object("team", team.id)
        assert got is not None and got["name"] == "u"
        assert await store.list_audit("org_a") == []  # the losing batch left nothing

    backend.run(body)


def test_object_deletes_compare_and_set_and_leave_nothing_when_refused(backend: Backend) -> None:
    kept, gone = TeamRecord(id="tm_kept", org_id="org_a", name="k"), TeamRecord(
        id="tm_gone", org_id="org_a", name="g"
    )

    async def body(store: Store) -> None:
        await store.apply([PutObject("team", kept), PutObject("team", gone)])
        event = AuditEvent(org_id="org_a", actor="test", type="teams.purged")
        with pytest.raises(VersionConflictError):  # one refused delete refuses the batch
            await store.apply(
                [
                    DeleteObject("team", gone.id),
                    DeleteObject("team", kept.id, expected={"name": "other"}),
                    AppendAudit(event),
                ]
            )
        assert await store.get_object("team", gone.id) is not None
        assert await store.list_audit("org_a") == []
        await store.apply([DeleteObject("team", gone.id, expected={"name": "g"})])
        assert await store.get_object("team", gone.id) is None
        assert [d["id"] for d in await store.list_objects("team", "org_a")] == [kept.id]
        with pytest.raises(NotFoundError):
            await store.apply([DeleteObject("team", gone.id)])

    backend.run(body)


# --- LLM calls ------------------------------------------------------------------------------


def test_list_llm_calls_by_key_and_time(backend: Backend) -> None:
    r1, r2, rb = runner("org_a"), runner("org_a"), runner("org_b")
    s1 = session(r1)
    at = [T0 + timedelta(minutes=i) for i in range(6)]
    calls = [
        call("org_a", r1.id, s1.id, at=at[3]),
        call("org_a", r1.id, s1.id, at=at[0]),
        call("org_a", r2.id, None, at=at[1]),
        call("org_a", None, None, at=at[4]),  # a key's call through the gateway
        call("org_b", rb.id, None, at=at[2]),
        call("org_a", r1.id, None, at=at[5]),
    ]

    async def body(store: Store) -> None:
        await store.apply([InsertRunner(r1), InsertRunner(r2), InsertRunner(rb)])
        await store.apply([InsertSession(s1)])
        await store.apply([RecordLlmCall(c) for c in calls])

        def ids(found: list[LlmCallRecord]) -> list[str]:
            return [c.id for c in found]

        c = [x.id for x in calls]
        assert ids(await store.list_llm_calls(session_id=s1.id)) == [c[1], c[0]]
        assert ids(await store.list_llm_calls(runner_id=r1.id)) == [c[1], c[0], c[5]]
        assert ids(await store.list_llm_calls(org_id="org_a")) == [c[1], c[2], c[0], c[3], c[5]]
        assert ids(await store.list_llm_calls(org_id="org_b")) == [c[4]]
        window = await store.list_llm_calls(org_id="org_a", since=at[1], until=at[4])
        assert ids(window) == [c[2], c[0]]
        both = await store.list_llm_calls(org_id="org_a", runner_id=r1.id, since=at[3])
        assert ids(both) == [c[0], c[5]]
        assert (await store.list_llm_calls(session_id=s1.id))[1] == calls[0]
        with pytest.raises(StoreError):
            await store.list_llm_calls(since=at[0])

    backend.run(body)


def test_spend_of_an_org_team_key_or_user_in_a_window(backend: Backend) -> None:
    at = [T0 + timedelta(hours=i) for i in range(4)]

    def made(cost: float, when: datetime, **who: str) -> LlmCallRecord:
        return call("org_a", None, None, cost_usd=cost, at=when).model_copy(update=who)

    calls = [
        made(0.5, at[0], team_id="t1", key_id="k1", user_id="u1"),
        made(0.25, at[1], team_id="t1", key_id="k2"),
        made(0.125, at[2], team_id="t2", user_id="u1"),
        made(1.0, at[3]),
        call("org_b", None, None, cost_usd=8.0, at=at[1]),
    ]

    async def body(store: Store) -> None:
        await store.apply([RecordLlmCall(c) for c in calls])
        end = at[3]  # exclusive
        assert await store.spend_usd("org_a", since=at[0], until=end) == pytest.approx(0.875)
        assert await store.spend_usd("org_a", since=at[1], until=end) == pytest.approx(0.375)
        assert await store.spend_usd(
            "org_a", since=at[0], until=end, team_id="t1"
        ) == pytest.approx(0.75)
        assert await store.spend_usd("org_a", since=at[0], until=end, key_id="k2") == 0.25
        assert await store.spend_usd(
            "org_a", since=at[0], until=end, user_id="u1"
        ) == pytest.approx(0.625)
        assert await store.spend_usd("org_c", since=at[0], until=end) == 0.0

    backend.run(body)


# --- lifecycle ------------------------------------------------------------------------------


def test_reopen_keeps_everything(backend: Backend) -> None:
    r = runner()
    s = session(r)
    cp_time = T0

    async def write(store: Store) -> list[AuditEvent]:
        result = await store.apply(
            [
                InsertRunner(r),
                InsertSession(s),
                RecordLlmCall(call("org_a", r.id, s.id, cost_usd=0.5, at=T0)),
                PutObject("org", OrgRecord(id="org_a", name="A")),
                AppendAudit(event()),
                AppendAudit(event(type_="session.opened")),
            ]
        )
        await store.apply([AppendCheckpoint(AuditCheckpoint("org_a", 2, "h", cp_time, "s", "k"))])
        return result.events

    async def read(store: Store) -> None:
        got_r, got_s = await store.get_runner(r.id), await store.get_session(s.id)
        assert got_r is not None and got_r.spent_usd == 0.5
        assert got_s is not None and got_s.spent_usd == 0.5
        assert len(await store.list_llm_calls(session_id=s.id)) == 1
        assert await store.get_object("org", "org_a") is not None
        assert [c.seq for c in await store.list_checkpoints("org_a")] == [2]
        assert await store.list_audit("org_a") == events
        # The chain goes on from the stored head, not from scratch.
        more = (await store.apply([AppendAudit(event(type_="runner.stopped"))])).events
        assert more[0].seq == 3 and more[0].prev_hash == events[-1].hash
        await assert_chain(store, "org_a", 3)

    events = backend.run(write)
    backend.run(read)


def test_a_store_that_is_not_open_refuses_work(backend: Backend) -> None:
    async def body() -> None:
        store = open_store(backend.url)
        with pytest.raises(StoreError):
            await store.apply([AppendAudit(event())])
        with pytest.raises(StoreError):
            await store.get_runner("rn_x")

    asyncio.run(body())
