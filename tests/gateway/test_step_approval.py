"""Step 15's rules in-process (the held-call machinery is in test_gateway_approvals.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.checks import ALLOW, STEPS, CallContext, ChainPolicy, Hold, PolicyConfigError
from gateway.checks.steps.approval import ApprovalCheck, ApprovalSettings
from paddock_core import DEFAULT_POLICIES_DIR
from tests.gateway.chain_support import make_ctx

TOOLS = [{"type": "function", "function": {"name": "shell.exec", "parameters": {}}}]


def decide(settings: dict[str, Any], ctx: CallContext) -> Any:
    check = ApprovalCheck(ApprovalSettings.model_validate(settings), default_max_tokens=4096)
    return asyncio.run(check.check(ctx))


def test_each_rule_holds_with_what_it_saw() -> None:
    by_model = decide({"rules": {"models": ["fake-g*"]}}, make_ctx())
    assert isinstance(by_model, Hold) and by_model.step == "approval"
    assert by_model.data["rule"] == "model" and by_model.data["mode"] == "hold"

    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    by_tool = decide({"rules": {"tools": ["shell.*"]}}, make_ctx(body=body))
    assert isinstance(by_tool, Hold) and by_tool.data["matched"] == ["shell.exec"]
    assert "shell.exec" in by_tool.message

    # 10 input tokens at $5/M + 40,000 output at $15/M = $0.60005 > the default $0.50.
    costly = make_ctx(body={"model": "fake-gpt", "messages": [], "max_tokens": 40_000})
    by_cost = decide({"mode": "queue"}, costly)
    assert isinstance(by_cost, Hold) and by_cost.data["rule"] == "estimate_usd_over"
    assert by_cost.data["estimate_usd"] == pytest.approx(0.60005)
    assert by_cost.data["mode"] == "queue" and "$0.600050" in by_cost.message


def test_calls_under_every_rule_and_approved_calls_pass() -> None:
    assert decide({}, make_ctx()) is ALLOW  # 4096 default output tokens: about $0.06
    costly = make_ctx(body={"model": "fake-gpt", "messages": [], "max_tokens": 40_000})
    assert decide({"rules": {"estimate_usd_over": None}}, costly) is ALLOW
    assert decide({"rules": {"models": ["*"]}}, make_ctx(approved=True)) is ALLOW
    assert decide({"rules": {"tools": ["shell.*"]}}, make_ctx()) is ALLOW  # offers no tools


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"mode": "later"}, "steps.approval.mode"),
        ({"timeout_s": 0}, "steps.approval.timeout_s"),
        ({"rules": {"estimate_usd_over": -1}}, "steps.approval.rules.estimate_usd_over"),
        ({"rules": {"model": ["x"]}}, "steps.approval.rules.model"),
    ],
)
def test_bad_approval_settings_are_refused_naming_the_setting(
    given: dict[str, Any], named: str
) -> None:
    policy = ChainPolicy.load(DEFAULT_POLICIES_DIR, STEPS)
    with pytest.raises(PolicyConfigError) as caught:
        policy.resolve("org_x", None, {"approval": given})
    assert named in caught.value.message
