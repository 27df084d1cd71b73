"""Steps 5 and 12 in-process: the reasoning cap (deny, clamp, and the output cap it leaves for
the reservation) and the AI classifier (flagged, clean, and its fail modes) with a fake
classifier passed in. End to end through the real gateway: test_gateway_content.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.checks import Allow, Deny, PolicyChain, Verdict
from gateway.checks.steps.classifier import ClassifierCheck, ClassifierSettings
from gateway.checks.steps.cost_estimate import CostEstimateCheck, CostEstimateSettings
from gateway.checks.steps.reasoning_cap import ReasoningCapCheck, ReasoningCapSettings
from tests.gateway.chain_support import chat, decide, make_ctx

# --- step 5: reasoning cap -----------------------------------------------------------------------


def _thinking(budget: int, max_tokens: int | None = 32000) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "fake-claude",
        "messages": [{"role": "user", "content": "think"}],
        "thinking": {"type": "enabled", "budget_tokens": budget},
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def _cap(**settings: Any) -> ReasoningCapCheck:
    return ReasoningCapCheck(ReasoningCapSettings(**settings), default_max_tokens=4096)


def test_reasoning_cap_denies_an_anthropic_budget_above_it() -> None:
    decision = decide(
        _cap(max_reasoning_tokens=8000), make_ctx(endpoint="messages", body=_thinking(20000))
    )
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason, decision.step) == (
        400,
        "reasoning_cap_exceeded",
        "reasoning_cap",
    )
    assert decision.data == {
        "field": "thinking.budget_tokens",
        "requested_tokens": 20000,
        "max_reasoning_tokens": 8000,
    }
    within = make_ctx(endpoint="messages", body=_thinking(8000))
    assert decide(_cap(max_reasoning_tokens=8000), within) == Allow()


def test_reasoning_cap_clamps_an_anthropic_budget_and_sets_a_missing_output_cap() -> None:
    clamp = _cap(max_reasoning_tokens=8000, mode="clamp")
    decision = decide(clamp, make_ctx(endpoint="messages", body=_thinking(20000, None)))
    assert isinstance(decision, Allow) and decision.body is not None
    assert decision.body["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert decision.body["max_tokens"] == 8000 + 4096
    assert decision.note == "thinking budget 20000 -> 8000 tokens"
    tiny = decide(
        _cap(max_reasoning_tokens=500, mode="clamp"),
        make_ctx(endpoint="messages", body=_thinking(2000)),
    )
    assert isinstance(tiny, Allow) and tiny.body is not None
    assert tiny.body["thinking"] == {"type": "disabled"}


def test_reasoning_cap_maps_openai_effort_to_tokens() -> None:
    body = chat(("user", "think"), reasoning_effort="high")
    denied = decide(_cap(max_reasoning_tokens=4096), make_ctx(body=body))
    assert isinstance(denied, Deny) and denied.data["field"] == "reasoning_effort"
    assert denied.data["requested_tokens"] == 16384
    clamped = decide(_cap(max_reasoning_tokens=4096, mode="clamp"), make_ctx(body=body))
    assert isinstance(clamped, Allow) and clamped.body is not None
    assert clamped.body["reasoning_effort"] == "medium"
    assert clamped.body["max_completion_tokens"] == 4096 + 4096
    assert clamped.note == "reasoning effort high -> medium"
    responses = {"model": "fake-gpt", "input": "x", "reasoning": {"effort": "high"}}
    out = decide(
        _cap(max_reasoning_tokens=1024, mode="clamp", answer_tokens=500),
        make_ctx(endpoint="responses", body=responses),
    )
    assert isinstance(out, Allow) and out.body is not None
    assert out.body["reasoning"] == {"effort": "low"} and out.body["max_output_tokens"] == 1524
    unknown = decide(
        _cap(max_reasoning_tokens=4096), make_ctx(body=chat(("user", "x"), reasoning_effort="max"))
    )
    assert isinstance(unknown, Deny) and unknown.reason == "unknown_reasoning_effort"
    assert decide(_cap(), make_ctx(body=body)) == Allow()  # no cap set
    # An org naming one level keeps the others.
    cheap_high = _cap(max_reasoning_tokens=4096, effort_tokens={"high": 3000})
    assert decide(cheap_high, make_ctx(body=body)) == Allow(
        body={**body, "max_completion_tokens": 4096 + 4096}
    )
    medium = chat(("user", "think"), reasoning_effort="medium", max_completion_tokens=100)
    assert decide(cheap_high, make_ctx(body=medium)) == Allow()


def test_the_bounded_output_cap_is_what_the_cost_estimate_reserves_for() -> None:
    # effort within the cap, no output cap from the client: the cap + 4096 tokens reserved
    body = chat(("user", "think"), reasoning_effort="high")
    price_out = 15e-6  # chain_support's output price, USD per token
    ceiling = 10 * 5e-6 + 8192 * price_out  # above the default cap's cost, below the bounded one
    chain = PolicyChain(
        [
            _cap(max_reasoning_tokens=32768),
            CostEstimateCheck(CostEstimateSettings(max_call_usd=ceiling), 4096),
        ]
    )
    result = asyncio.run(chain.decide(make_ctx(body=body)))
    assert isinstance(result.decision, Deny) and result.decision.step == "cost_estimate"
    assert result.decision.data["max_output_tokens"] == 32768 + 4096
    within = chat(("user", "think"), reasoning_effort="low", max_completion_tokens=2000)
    kept = decide(_cap(max_reasoning_tokens=32768), make_ctx(body=within))
    assert kept == Allow()  # the client's own cap is within the bound: the body is untouched


# --- step 12: the AI classifier ------------------------------------------------------------------


class _Classifier:
    def __init__(self, verdict: Verdict | None = None, *, hang: bool = False) -> None:
        self.verdict = verdict
        self.hang = hang
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, model: str, text: str) -> Verdict:
        self.seen.append((model, text))
        if self.hang:
            await asyncio.sleep(30)  # cut short by the step's timeout
        if self.verdict is None:
            raise RuntimeError("moderation endpoint down")
        return self.verdict


def _classifier(classify: Any, **settings: Any) -> ClassifierCheck:
    return ClassifierCheck(ClassifierSettings(enabled=True, **settings), classify)


def test_classifier_refuses_flagged_content_and_passes_the_rest() -> None:
    flagging = _Classifier(Verdict(True, ("violence",)))
    decision = decide(_classifier(flagging, model="mod"), make_ctx(body=chat(("user", "x"))))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason, decision.step) == (
        403,
        "content_flagged",
        "classifier",
    )
    assert decision.data == {"categories": ["violence"], "model": "mod"}
    assert flagging.seen == [("mod", "x")]
    clean = _Classifier(Verdict(False))
    assert decide(_classifier(clean), make_ctx(body=chat(("user", "x")))) == Allow()
    other = _classifier(flagging, block_categories=("sexual/minors",))
    assert decide(other, make_ctx(body=chat(("user", "x")))) == Allow(
        note="flagged, not blocked: violence"
    )


def test_classifier_sends_only_the_chosen_roles_newest_text() -> None:
    seen = _Classifier(Verdict(False))
    body = chat(("system", "operator"), ("user", "a" * 50), ("tool", "tail"))
    decide(_classifier(seen, max_chars=10), make_ctx(body=body))
    assert seen.seen == [("omni-moderation-latest", "aaaa\n\ntail")]


def test_classifier_skips_token_counts() -> None:
    seen = _Classifier(Verdict(True, ("violence",)))
    body = {"model": "fake-claude", "messages": [{"role": "user", "content": "x"}]}
    assert decide(_classifier(seen), make_ctx(endpoint="count_tokens", body=body)) == Allow()
    assert seen.seen == []


@pytest.mark.parametrize("classify", [_Classifier(), _Classifier(hang=True), None])
def test_classifier_failures_follow_the_fail_mode(classify: Any) -> None:
    ctx = make_ctx(body=chat(("user", "x")))
    opened = decide(_classifier(classify, timeout_s=0.05), ctx)
    assert isinstance(opened, Allow) and opened.note is not None
    assert opened.note.startswith("classifier unavailable (") and "failed open" in opened.note
    closed = decide(_classifier(classify, timeout_s=0.05, fail_mode="closed"), ctx)
    assert isinstance(closed, Deny)
    assert (closed.status, closed.reason) == (503, "classifier_unavailable")
