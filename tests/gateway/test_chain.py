"""The chain itself: folding what checks return, failing closed, releasing holds on a refusal,
where each protocol keeps its text, and the configuration's validation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.checks import (
    ALLOW,
    STEPS,
    Allow,
    CallContext,
    ChainDeps,
    ChainPolicy,
    Decision,
    Deny,
    Outcome,
    PolicyChain,
    PolicyConfigError,
    extract_texts,
    rewrite_texts,
    with_max_output_tokens,
)
from paddock_core import DEFAULT_POLICIES_DIR, SqliteStore
from tests.gateway.chain_support import make_ctx


class _Crashes:
    name = "crashes"

    async def check(self, ctx: CallContext) -> Decision:
        raise RuntimeError("bug")


class _Seen:
    name = "seen"

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def check(self, ctx: CallContext) -> Decision:
        self.bodies.append(ctx.body)
        return ALLOW


class _Hold:
    """Allows, holding a settlement, and remembers what it was settled with."""

    name = "holds"

    def __init__(self) -> None:
        self.settled: list[Outcome] = []

    async def settle(self, outcome: Outcome) -> None:
        self.settled.append(outcome)

    async def check(self, ctx: CallContext) -> Decision:
        return Allow(hold=self, headers={"x-ratelimit-remaining": "4"}, body={"rewritten": True})


class _Denies:
    name = "denies"

    async def check(self, ctx: CallContext) -> Decision:
        return Deny(self.name, "nope", "denied", status=429, headers={"retry-after": "3"})


def test_a_rewrite_is_what_later_checks_see_and_holds_settle_once() -> None:
    hold, seen = _Hold(), _Seen()
    result = asyncio.run(PolicyChain([hold, seen]).decide(make_ctx()))
    assert isinstance(result.decision, Allow)
    assert seen.bodies == [{"rewritten": True}] and result.body == {"rewritten": True}
    assert result.headers == {"x-ratelimit-remaining": "4"}
    assert result.passed == ["holds", "seen"]
    asyncio.run(result.settle(Outcome(0.25, 10, 5)))
    asyncio.run(result.settle(Outcome(9.0)))  # a second settle does nothing
    assert hold.settled == [Outcome(0.25, 10, 5)]


def test_a_later_denial_releases_earlier_holds_and_keeps_its_headers() -> None:
    hold = _Hold()
    result = asyncio.run(PolicyChain([hold, _Denies(), _Seen()]).decide(make_ctx()))
    assert isinstance(result.decision, Deny) and result.decision.status == 429
    assert hold.settled == [Outcome(0.0)]
    assert result.headers["retry-after"] == "3"


def test_a_crashing_check_fails_closed() -> None:
    seen = _Seen()
    result = asyncio.run(PolicyChain([_Crashes(), seen]).decide(make_ctx()))
    assert isinstance(result.decision, Deny)
    assert (result.decision.step, result.decision.reason) == ("crashes", "check_failed")
    assert seen.bodies == []


# --- where each protocol keeps its text ------------------------------------------------------


def test_texts_of_each_protocol_with_roles() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "u1"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": '{"a":1}'}}],
            },
            {"role": "tool", "content": "tool out"},
        ]
    }
    assert [(t.role, t.text) for t in extract_texts("chat", chat)] == [
        ("system", "sys"),
        ("user", "u1"),
        ("assistant", '{"a":1}'),
        ("tool", "tool out"),
    ]
    messages = {
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": "u1"},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "content": [{"type": "text", "text": "res"}]},
                    {"type": "tool_result", "content": "res2"},
                ],
            },
        ],
    }
    assert [(t.role, t.text) for t in extract_texts("messages", messages)] == [
        ("system", "sys"),
        ("user", "u1"),
        ("tool", "res"),
        ("tool", "res2"),
    ]
    responses = {
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"type": "function_call_output", "output": "out"},
        ],
    }
    assert [(t.role, t.text) for t in extract_texts("responses", responses)] == [
        ("system", "be brief"),
        ("user", "q"),
        ("tool", "out"),
    ]
    assert [t.text for t in extract_texts("embeddings", {"input": ["a", "b"]})] == ["a", "b"]


def test_rewrite_changes_a_copy_only() -> None:
    body = {"messages": [{"role": "user", "content": "mail me at a@b.c"}]}
    out = rewrite_texts("chat", body, lambda role, text: f"{role}:{text.upper()}")
    assert out["messages"][0]["content"] == "user:MAIL ME AT A@B.C"
    assert body["messages"][0]["content"] == "mail me at a@b.c"


def test_output_cap_in_each_protocols_field() -> None:
    assert make_ctx(body={"max_completion_tokens": 7}).max_output_tokens == 7
    assert make_ctx(body={"max_tokens": 9}).max_output_tokens == 9
    assert make_ctx(body={}).max_output_tokens is None
    assert with_max_output_tokens("chat", {"max_tokens": 100}, 5) == {"max_tokens": 5}
    assert with_max_output_tokens("chat", {}, 5) == {"max_completion_tokens": 5}
    assert with_max_output_tokens("responses", {}, 5) == {"max_output_tokens": 5}
    assert with_max_output_tokens("messages", {"max_tokens": 99}, 5) == {"max_tokens": 5}


# --- configuration --------------------------------------------------------------------------


def _policy_dir(tmp_path: Path, chain: dict[str, Any], plans: dict[str, Any] | None = None) -> Path:
    shipped = yaml.safe_load((DEFAULT_POLICIES_DIR / "plans.yaml").read_text())
    (tmp_path / "chain.yaml").write_text(yaml.safe_dump(chain))
    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(plans or shipped))
    return tmp_path


def test_the_shipped_policy_loads_and_names_every_plan() -> None:
    policy = ChainPolicy.load(DEFAULT_POLICIES_DIR, STEPS)
    assert {"free", "team", "enterprise"} <= set(policy.plans)


@pytest.mark.parametrize(
    ("chain", "named"),
    [
        ({"order": ["plan", "no_such_step"]}, "order: unknown step 'no_such_step'"),
        ({"order": ["plan", "plan"]}, "listed twice"),
        (
            {"order": ["skill_allowlist"], "steps": {"skill_allowlist": {"mode": "x"}}},
            "chain.yaml: steps.skill_allowlist.mode",
        ),
        (
            {"order": ["body_size"], "steps": {"body_size": {"max_byte": 5}}},
            "steps.body_size.max_byte",
        ),
        ({"order": ["plan"], "orgs": {"org_x": {"plan": "gold"}}}, "orgs.org_x: plan"),
        (
            {"order": ["plan"], "orgs": {"org_x": {"steps": {"nope": {}}}}},
            "orgs.org_x: steps: unknown step 'nope'",
        ),
    ],
)
def test_a_bad_policy_file_is_refused_naming_the_setting(
    tmp_path: Path, chain: dict[str, Any], named: str
) -> None:
    with pytest.raises(PolicyConfigError) as caught:
        ChainPolicy.load(_policy_dir(tmp_path, chain), STEPS)
    assert named in caught.value.message


def test_org_settings_override_the_plan_and_disable_steps(tmp_path: Path) -> None:
    chain = {
        "order": ["plan", "body_size", "cost_estimate"],
        "steps": {"body_size": {"max_bytes": 1000}},
        "orgs": {"org_big": {"plan": "enterprise", "steps": {"cost_estimate": {"enabled": False}}}},
    }
    policy = ChainPolicy.load(_policy_dir(tmp_path, chain), STEPS)
    plan, steps = policy.resolve("org_big", None, {})
    assert plan.name == "enterprise"
    assert [spec.name for spec, _ in steps] == ["plan", "body_size"]
    assert steps[1][1].model_dump()["max_bytes"] == 33554432  # the plan's, over the default
    _, steps = policy.resolve("org_other", "free", {"body_size": {"max_bytes": 10}})
    assert steps[1][1].model_dump()["max_bytes"] == 10  # the org's own, over its plan's
    with pytest.raises(PolicyConfigError) as caught:
        policy.resolve("org_other", None, {"body_size": {"max_bytes": "big"}})
    assert caught.value.field == "steps.body_size"
    assert "steps.body_size.max_bytes" in caught.value.message


def test_orgs_sharing_a_policy_share_a_chain(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "s.db")
        await store.open()
        try:
            policy = ChainPolicy.load(DEFAULT_POLICIES_DIR, STEPS)
            deps = ChainDeps(store=store, default_max_tokens=4096)
            a = policy.chain_for("org_a", deps)
            assert policy.chain_for("org_b", deps) is a
            free = policy.chain_for("org_c", deps, "free")
            assert free is not a and free.version.startswith("free:")
            assert policy.chain_for("org_d", deps, "free") is free
        finally:
            await store.close()

    asyncio.run(main())
