"""Steps 3, 7 and 8 in the chain, in process: how their reservations, rewrites and holds
compose (in-memory counters, a real SQLite store for seeds)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.checks import Allow, CallContext, ChainDeps, Decision, Deny, Outcome, PolicyChain
from gateway.checks.steps.budget import BudgetCheck, BudgetSettings
from gateway.checks.steps.rate_limit import RateLimitCheck, RateLimitSettings
from gateway.checks.steps.session_budget import SessionBudgetCheck, SessionBudgetSettings
from gateway.counters import MemoryCounters
from paddock_core import SessionRecord, SqliteStore
from tests.gateway.chain_support import make_ctx

T = TypeVar("T")


class _Refuse:
    name = "later"

    async def check(self, ctx: CallContext) -> Decision:  # noqa: ARG002
        return Deny("later", "no", "refused later")


def _run(tmp_path: Path, body: Callable[[ChainDeps, MemoryCounters], Awaitable[T]]) -> T:
    async def main() -> T:
        store = SqliteStore(tmp_path / "chain.db")
        await store.open()
        counters = MemoryCounters()
        try:
            return await body(ChainDeps(store, 4096, counters=counters), counters)
        finally:
            await store.close()

    return asyncio.run(main())


def _session(budget: float) -> SessionRecord:
    return SessionRecord(id="ses_t", org_id="org_t", runner_id="rn_t", budget_usd=budget)


def _chain(deps: ChainDeps, *extra: Any) -> PolicyChain:
    budget = BudgetCheck(BudgetSettings(org_monthly_usd=10.0), deps)
    return PolicyChain([budget, SessionBudgetCheck(SessionBudgetSettings(), deps), *extra])


def test_the_tightest_budget_sets_the_output_cap_and_both_settle(tmp_path: Path) -> None:
    async def body(deps: ChainDeps, counters: MemoryCounters) -> None:
        # $5/$15 per Mtok; 10 input tokens (+20%): the session pays 100 output tokens.
        ctx = make_ctx(session=_session(12 * 5e-6 + 100 * 15e-6))
        result = await _chain(deps).decide(ctx)
        assert isinstance(result.decision, Allow)
        assert result.body["max_completion_tokens"] == 100
        assert len(result.holds) == 2
        await result.settle(Outcome(0.0005))
        assert await counters.usage("session:ses_t") == (0.0005, 0.0, 0)
        month = [k for k in counters._buckets if k.startswith("org:org_t:month:")]  # noqa: SLF001
        assert await counters.usage(month[0]) == (0.0005, 0.0, 0)

    _run(tmp_path, body)


def test_a_client_cap_is_kept_and_a_refusal_later_frees_every_hold(tmp_path: Path) -> None:
    async def body(deps: ChainDeps, counters: MemoryCounters) -> None:
        asked = {"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]}
        ctx = make_ctx(body={**asked, "max_tokens": 50}, session=_session(1.0))
        kept = await _chain(deps).decide(ctx)
        assert kept.body is ctx.body
        await kept.settle(Outcome(0.0))
        refused = await _chain(deps, _Refuse()).decide(make_ctx(session=_session(1.0)))
        assert isinstance(refused.decision, Deny) and refused.holds == []
        assert await counters.usage("session:ses_t") == (0.0, 0.0, 0)

    _run(tmp_path, body)


def test_embeddings_reserve_their_input_only(tmp_path: Path) -> None:
    async def body(deps: ChainDeps, counters: MemoryCounters) -> None:
        ctx = make_ctx(
            endpoint="embeddings",
            body={"model": "fake-embed", "input": "hello"},
            session=_session(12 * 5e-6),
        )
        result = await _chain(deps).decide(ctx)
        assert isinstance(result.decision, Allow) and result.body is ctx.body
        assert (await counters.usage("session:ses_t"))[1] > 0
        await result.settle(Outcome(0.0))

    _run(tmp_path, body)


def test_output_tokens_count_against_the_token_limit_once_settled(tmp_path: Path) -> None:
    async def body(deps: ChainDeps, _: MemoryCounters) -> None:
        check = RateLimitCheck(RateLimitSettings(org_tokens=100), deps)
        first = await check.check(make_ctx())  # 10 input tokens
        assert isinstance(first, Allow) and first.hold is not None
        assert first.headers["x-ratelimit-remaining-tokens"] == "90"
        await first.hold.settle(Outcome(0.001, 10, 85))
        refused = await check.check(make_ctx())
        assert isinstance(refused, Deny) and refused.status == 429
        assert int(refused.headers["retry-after"]) >= 1

    _run(tmp_path, body)


def test_a_policy_may_lower_a_client_cap_instead_of_refusing(tmp_path: Path) -> None:
    async def body(deps: ChainDeps, _: MemoryCounters) -> None:
        asked = {"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]}
        ctx = make_ctx(body={**asked, "max_tokens": 8192}, session=_session(0.0016))
        strict = SessionBudgetCheck(SessionBudgetSettings(), deps)
        assert isinstance(await strict.check(ctx), Deny)
        lenient = SessionBudgetCheck(SessionBudgetSettings(lower_client_cap=True), deps)
        lowered = await lenient.check(ctx)
        assert isinstance(lowered, Allow) and lowered.body is not None
        assert lowered.body["max_tokens"] == 102  # ($0.0016 - 12 input tokens) / $15 per Mtok
        assert lowered.hold is not None
        await lowered.hold.settle(Outcome(0.0))

    _run(tmp_path, body)
