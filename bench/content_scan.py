"""Content steps benchmark: steps 5 and 9 to 11 (reasoning cap, PII, content safety, security
scan) and the shipped chain as a whole, in-process, on a 35 KB OpenClaw-like request (a 25 KB
system prompt, tool definitions, a conversation with tool calls and results).

    python -m bench.content_scan            # 2,000 rounds per figure
    python -m bench.content_scan --rounds 300

Prints p50 and p99 in microseconds per call. Every loop is bounded by --rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.checks import STEPS, CallContext, ChainDeps, ChainPolicy, ContentPolicies, TokenPrice
from gateway.checks.steps import content_safety, pii, reasoning_cap, security_scan
from paddock_core import DEFAULT_POLICIES_DIR, SqliteStore

SYSTEM = "You are OpenClaw, a personal agent. " + "Follow the workspace rules. " * 900
TOOL_OUTPUT = "def handler(event):\n    return {'status': 200, 'items': items[:42]}\n" * 20


def openclaw_body() -> dict[str, Any]:
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"{name} in the workspace",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
            },
        }
        for name in ("read", "write", "edit", "exec", "web_fetch", "memory_search")
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for turn in range(5):
        messages.append({"role": "user", "content": f"Step {turn}: fix the failing test in src/"})
        call = {"id": f"call_{turn}", "type": "function"}
        call["function"] = {"name": "read", "arguments": json.dumps({"path": f"src/m{turn}.py"})}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "content": TOOL_OUTPUT})
    return {
        "model": "fake-gpt",
        "stream": True,
        "max_completion_tokens": 8192,
        "reasoning_effort": "medium",
        "messages": messages,
        "tools": tools,
    }


def context(body: dict[str, Any]) -> CallContext:
    size = len(json.dumps(body))
    return CallContext(
        org_id="org_bench",
        plan="team",
        actor="key:bench",
        runner=None,
        session=None,
        key_id=None,
        team_id=None,
        user_id=None,
        endpoint="chat",
        requested_model="fake-gpt",
        provider="fake",
        model="fake-gpt",
        stream=True,
        body=body,
        body_bytes=size,
        estimated_prompt_tokens=size // 4,
        price=TokenPrice(5e-6, 15e-6),
        now=time.time(),
    )


def timed(check: Any, body: dict[str, Any], rounds: int) -> tuple[float, float]:
    """(p50, p99) µs of one check on a fresh context per round (texts extracted each time, as
    in the gateway, where each call has its own context)."""

    async def run() -> list[float]:
        out = []
        for _ in range(rounds):
            ctx = context(body)
            started = time.perf_counter()
            await check(ctx)
            out.append((time.perf_counter() - started) * 1e6)
        return out

    samples = sorted(asyncio.run(run()))
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = max(10, parser.parse_args().rounds)
    body = openclaw_body()
    print(f"request: {len(json.dumps(body)) / 1024:.1f} KB, {len(body['messages'])} messages")
    content = ContentPolicies.load(DEFAULT_POLICIES_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        deps = ChainDeps(store=store, default_max_tokens=4096, content=content)
        policy = ChainPolicy.load(DEFAULT_POLICIES_DIR, STEPS)
        plan = policy.plans["team"]
        for module in (reasoning_cap, pii, content_safety, security_scan):
            spec = module.SPEC
            check = spec.build(spec.settings(), plan, deps)
            p50, p99 = timed(check.check, body, rounds)
            print(f"{spec.name:>16}: p50 {p50:7.1f} µs   p99 {p99:7.1f} µs")
        with_pii = openclaw_body()
        with_pii["messages"][-1]["content"] += "\nContact: jane.doe@example.com"
        check = pii.SPEC.build(pii.SPEC.settings(), plan, deps)
        p50, p99 = timed(check.check, with_pii, rounds)
        print(f"{'pii (redacting)':>16}: p50 {p50:7.1f} µs   p99 {p99:7.1f} µs")
        chain = policy.chain_for("org_bench", deps)
        p50, p99 = timed(chain.decide, body, rounds)
        print(f"{'shipped chain':>16}: p50 {p50:7.1f} µs   p99 {p99:7.1f} µs  ({chain.version})")


if __name__ == "__main__":
    main()
