"""Chain benchmark: the whole governance chain in process, on a 35 KB OpenClaw-like request.

    python -m bench.chain                # in-memory counters, then Redis (PADDOCK_REDIS_URL)
    python -m bench.chain --no-redis     # in-memory counters only
    python -m bench.chain --n 5000       # more iterations

The chain is built from the shipped policies (policies/chain.yaml and plans.yaml, with every
registered step), for an org whose overrides switch on rate limits and every budget, so each
step does its real work. One iteration is what the pipeline does per call: build the
`CallContext`, `decide`, then settle the holds with the call's outcome. Figures are wall time
per iteration in microseconds (p50, p99), and each step's own p50. Redis keys live under a
fresh prefix, deleted at the end. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from gateway._usage import estimate_tokens
from gateway.checks import (
    STEPS,
    CallContext,
    ChainDeps,
    ChainPolicy,
    Decision,
    Outcome,
    PolicyCheck,
    TokenPrice,
)
from gateway.counters import Counters, MemoryCounters, RedisCounters
from paddock_core import DEFAULT_POLICIES_DIR, RunnerRecord, SessionRecord, SqliteStore

ORG = "org_bench"
_HUGE = 1e9
_MAX_SECONDS = 60.0
OVERRIDES: dict[str, dict[str, Any]] = {
    "rate_limit": {
        "org_requests": 10**9, "org_tokens": 10**12, "key_requests": 10**9,
        "runner_requests": 10**9, "runner_tokens": 10**12,
    },
    "budget": {
        "org_daily_usd": _HUGE, "org_monthly_usd": _HUGE, "team_daily_usd": _HUGE,
        "user_monthly_usd": _HUGE,
    },
}


def openclaw_request(target_bytes: int = 35_000) -> dict[str, Any]:
    """A chat request shaped like OpenClaw's: a long system prompt, tools, a conversation
    with tool calls and results; about `target_bytes` of JSON."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"{name}: " + "Runs the operation and returns its output. " * 6,
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "args": {"type": "string"}},
                    "required": ["path"],
                },
            },
        }
        for name in ("read", "write", "edit", "exec", "browser", "web_search", "memory", "cron")
    ]
    system = "You are a personal assistant running inside OpenClaw. " + (
        "Follow the workspace rules in AGENTS.md; prefer tools over guessing. " * 150
    )
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    turn = 0
    while len(json.dumps({"messages": messages, "tools": tools})) < target_bytes:
        turn += 1
        messages.append({"role": "user", "content": f"Step {turn}: check the logs and report."})
        call_id = f"call_{turn}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "exec", "arguments": '{"path": "/var/log/app"}'},
                    }
                ],
            }
        )
        messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": "log line ok\n" * 40}
        )
    return {"model": "gpt-4o-mini", "messages": messages, "tools": tools, "stream": True}


class _Timed:
    """Wraps a check to note its own time (nanoseconds) per call."""

    def __init__(self, inner: PolicyCheck, times: dict[str, list[int]]) -> None:
        self.inner = inner
        self.name = inner.name
        self._times = times[inner.name]

    async def check(self, ctx: CallContext) -> Decision:
        started = time.perf_counter_ns()
        try:
            return await self.inner.check(ctx)
        finally:
            self._times.append(time.perf_counter_ns() - started)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def run(counters: Counters, store: SqliteStore, n: int) -> dict[str, Any]:
    deps = ChainDeps(store=store, default_max_tokens=4096, counters=counters)
    policy = ChainPolicy.load(DEFAULT_POLICIES_DIR, STEPS)
    chain = policy.chain_for(ORG, deps, None, OVERRIDES)
    body = openclaw_request()
    raw = json.dumps(body).encode()
    runner = RunnerRecord(
        id="rn_bench", org_id=ORG, state="running", profile="minimal", sandbox="hardened",
        image="bench", model="gpt-4o-mini", budget_usd=_HUGE, token_hash="x",
        session_id="ses_bench", backend="fake", team_id="team_bench", user_id="user_bench",
    )
    session = SessionRecord(id="ses_bench", org_id=ORG, runner_id=runner.id, budget_usd=_HUGE)
    prompt_chars = sum(len(m.get("content") or "") for m in body["messages"])
    estimate = estimate_tokens(prompt_chars)

    async def one() -> Decision:
        ctx = CallContext(
            org_id=ORG, plan="team", actor=f"runner:{runner.id}", runner=runner,
            session=session, key_id=None, team_id=runner.team_id, user_id=runner.user_id,
            endpoint="chat", requested_model="gpt-4o-mini", provider="openai",
            model="gpt-4o-mini", stream=True, body=body, body_bytes=len(raw),
            estimated_prompt_tokens=estimate, price=TokenPrice(0.15e-6, 0.6e-6),
            now=time.time(),
        )  # fmt: skip
        result = await chain.decide(ctx)
        await result.settle(Outcome(0.0012, 9000, 40))
        return result.decision

    # Pass 1, the figure: the bare chain. Pass 2: each step wrapped in a timer (which adds
    # its own cost, so pass 2 gives the steps' shares, not the total).
    totals: list[float] = []
    deadline = time.monotonic() + _MAX_SECONDS
    for i in range(n + 50):  # the first 50 warm up (caches, seeds)
        started = time.perf_counter_ns()
        decision = await one()
        if i >= 50:
            totals.append((time.perf_counter_ns() - started) / 1000)
        if time.monotonic() > deadline:
            break
    times: dict[str, list[int]] = defaultdict(list)
    chain.checks = tuple(_Timed(c, times) for c in chain.checks)
    for _ in range(min(n, len(totals))):
        await one()
        if time.monotonic() > deadline + _MAX_SECONDS:
            break
    steps = {name: statistics.median(v) / 1000 for name, v in times.items()}
    return {
        "n": len(totals),
        "bytes": len(raw),
        "p50_us": _pct(totals, 0.5),
        "p99_us": _pct(totals, 0.99),
        "steps_p50_us": steps,
        "decision": type(decision).__name__,
    }


def _print(label: str, figures: dict[str, Any]) -> None:
    print(
        f"{label:<8} n={figures['n']:<6} request={figures['bytes']} B  "
        f"p50={figures['p50_us']:.0f} µs  p99={figures['p99_us']:.0f} µs  "
        f"({figures['decision']})"
    )
    for name, us in figures["steps_p50_us"].items():
        print(f"           {name:<18} p50 {us:8.1f} µs")


async def main(n: int, with_redis: bool) -> None:
    with tempfile.TemporaryDirectory() as data:
        store = SqliteStore(Path(data) / "bench.db")
        await store.open()
        try:
            _print("memory", await run(MemoryCounters(), store, n))
            if with_redis:
                url = os.environ.get("PADDOCK_REDIS_URL", "redis://127.0.0.1:6379")
                prefix = f"paddock-bench:{uuid.uuid4().hex[:8]}:"
                counters = RedisCounters(url, prefix=prefix)
                try:
                    _print("redis", await run(counters, store, n))
                finally:
                    keys = [k async for k in counters._redis.scan_iter(match=f"{prefix}*")]  # noqa: SLF001
                    if keys:
                        await counters._redis.delete(*keys)  # noqa: SLF001
                    await counters.close()
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="timed iterations per variant")
    parser.add_argument("--no-redis", action="store_true", help="in-memory counters only")
    args = parser.parse_args()
    asyncio.run(main(args.n, not args.no_redis))
