"""The policy chain's port: one frozen `CallContext` in, one `Decision` out.

    Decision = Allow | Deny | Hold

A check never raises to deny: it returns `Deny` (with the HTTP status of its step) or `Hold`
(human approval). A check that crashes denies with `check_failed` (fails closed).

`Allow` may carry what the call needs beyond a yes:
- `body`: a rewritten request body (PII redacted, `max_tokens` set, a tool stripped); later
  checks see it, and it is what is forwarded;
- `headers`: added to the answer, streamed or not (`X-RateLimit-*`);
- `hold`: a `Settlement` (a budget reservation, a token count) that the pipeline settles exactly
  once with the call's `Outcome`: its actual cost when recorded, $0 when the call never went
  out. A crashed process never settles: reservations carry a lease that frees them.
- `note`: a short fact for the audit trail (`redacted: email`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Protocol, TypeVar, cast

from paddock_core import RunnerRecord, SessionRecord

from ._content import (
    Text,
    extract_texts,
    max_output_tokens,
    reasoning_request,
    texts_by_role,
    tool_names,
)
from ._text import joined

T = TypeVar("T")

__all__ = [
    "ALLOW",
    "Allow",
    "CallContext",
    "Decision",
    "Deny",
    "Hold",
    "Outcome",
    "PolicyCheck",
    "Settlement",
    "TokenPrice",
]


@dataclass(frozen=True)
class TokenPrice:
    """USD per token of the routed model (0 when its price is unknown)."""

    input: float
    output: float


@dataclass(frozen=True)
class CallContext:
    """Everything a check may look at, for one call, after routing and before forwarding."""

    org_id: str
    plan: str
    """The org's plan (policies/plans.yaml)."""
    actor: str
    runner: RunnerRecord | None
    session: SessionRecord | None
    key_id: str | None
    team_id: str | None
    user_id: str | None
    endpoint: str
    """chat | responses | embeddings | messages | count_tokens"""
    requested_model: str
    provider: str
    model: str
    stream: bool
    body: Mapping[str, Any]
    """The request body in the client's protocol, as it will be forwarded (so far)."""
    body_bytes: int
    estimated_prompt_tokens: int
    price: TokenPrice
    now: float
    """Seconds since the epoch when the call arrived (one clock for every check)."""
    key_models: tuple[str, ...] | None = None
    """The calling key's own model allowlist (globs), if it has one."""
    key_skills: tuple[str, ...] | None = None
    """The calling key's own tool allowlist (globs), if it has one."""
    approved: bool = False
    """True when a human approved this very call (step 15 then lets it through)."""
    runner_pending_usd: float = 0.0
    """Spend of the runner's answered calls not yet in `runner.spent_usd` (written behind)."""
    session_pending_usd: float = 0.0
    client_body: Mapping[str, Any] | None = None
    """The body as the client sent it, once a check has rewritten `body` (None: `body` is it)."""

    @cached_property
    def texts(self) -> tuple[Text, ...]:
        """Every text of the request, with its role (system, user, assistant, tool)."""
        return extract_texts(self.endpoint, self.body)

    @cached_property
    def role_texts(self) -> Mapping[str, str]:
        """Each role's texts joined into one, normalized for scanning (`_scan.joined`): the PII,
        safety and security steps all scan these, so they are built once per call."""
        by_role = texts_by_role(self.endpoint, self.body)
        return {role: joined(texts) for role, texts in by_role.items()}

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()` once per call for `key`, shared by the checks that ask (the content
        steps share one pattern scan of each role's text)."""
        kept: dict[Hashable, Any] = self.__dict__.setdefault("_memo", {})
        if key not in kept:
            kept[key] = compute()
        return cast(T, kept[key])

    @cached_property
    def tools(self) -> tuple[str, ...]:
        """Names of the tools (skills) the request offers the model."""
        return tool_names(self.endpoint, self.body)

    @cached_property
    def max_output_tokens(self) -> int | None:
        """The client's output cap (`max_tokens`, `max_completion_tokens`,
        `max_output_tokens`), or None when it set none."""
        return max_output_tokens(self.endpoint, self.body)

    @cached_property
    def client_max_output_tokens(self) -> int | None:
        """The output cap the client itself set (not one a check set for it)."""
        return max_output_tokens(self.endpoint, self.client_body or self.body)

    @cached_property
    def reasoning(self) -> tuple[str | None, int | None]:
        """(effort, budget tokens) the request asks for: OpenAI `reasoning_effort` /
        `reasoning.effort`, Anthropic `thinking.budget_tokens`."""
        return reasoning_request(self.endpoint, self.body)

    def with_body(self, body: Mapping[str, Any]) -> CallContext:
        """This context with a check's rewritten `body` (the client's own kept as
        `client_body`), and none of the values cached from the old body. The same as
        `dataclasses.replace`, which costs more than the rest of a small check."""
        kept = {name: self.__dict__[name] for name in _FIELDS}
        kept["body"] = body
        kept["client_body"] = self.body if self.client_body is None else self.client_body
        new = object.__new__(CallContext)
        new.__dict__.update(kept)
        return new

    def worst_case_usd(self, output_tokens: int | None = None) -> float:
        """Input estimate plus `output_tokens` (default: the client's cap) at the output price."""
        out = self.max_output_tokens if output_tokens is None else output_tokens
        return self.estimated_prompt_tokens * self.price.input + (out or 0) * self.price.output


_FIELDS = tuple(f.name for f in fields(CallContext))


@dataclass(frozen=True)
class Outcome:
    """What a call cost, known when it is recorded (or $0 when it never went out)."""

    cost_usd: float
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Settlement(Protocol):
    async def settle(self, outcome: Outcome) -> None:
        """Called exactly once per call by the pipeline. Must not raise."""
        ...


@dataclass(frozen=True)
class Allow:
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: Settlement | None = None
    note: str | None = None


ALLOW = Allow()


@dataclass(frozen=True)
class Deny:
    step: str
    reason: str
    """A stable code, e.g. `session_budget_exhausted`; the client sees it as the error code."""
    message: str
    status: int = 403
    headers: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    """Facts shown in the error body and the audit (e.g. `estimate_usd`, `pii_types`)."""


@dataclass(frozen=True)
class Hold:
    """Human approval needed before the call may go out (step 15)."""

    step: str
    reason: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


Decision = Allow | Deny | Hold


class PolicyCheck(Protocol):
    name: str

    async def check(self, ctx: CallContext) -> Decision: ...
