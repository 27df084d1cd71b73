"""Loop detection (issue: runaway agents): an agent that keeps calling tools without a person
in between is stopped before its budget notices.

Read from the conversation each request carries, so it needs no state and holds across
gateway replicas:
- iterations: model turns that asked for tools since the last message a person wrote
  (tool results do not count as one); more than `max_iterations` is a loop;
- repetition: the same tool call (name and arguments, canonicalised) `max_repeats` times in a
  row at the end of the conversation is a loop.

`action` decides what happens (see `_runaway`): `deny` (403 `loop_detected`, the agent reads
why), `pause` (held for a person; approving lets that call through) or `end` (403, and the
control plane ends the session: the runner goes back to `ready` with reason `loop_detected`).
"""

from __future__ import annotations

from pydantic import Field

from .._base import ALLOW, CallContext, Decision
from .._config import Plan, StepSpec
from .._content import agent_turns
from .._deps import ChainDeps
from .._runaway import RunawaySettings, runaway

NAME = "loop_guard"


class LoopGuardSettings(RunawaySettings):
    max_iterations: int = Field(
        default=10, gt=0, description="tool-calling turns allowed per message from a person"
    )
    max_repeats: int = Field(
        default=3, ge=2, description="identical tool calls in a row that make a loop"
    )


class LoopGuardCheck:
    name = NAME

    def __init__(self, settings: LoopGuardSettings, deps: ChainDeps) -> None:
        self.settings = settings
        self.deps = deps

    async def check(self, ctx: CallContext) -> Decision:
        if ctx.approved or ctx.endpoint not in ("chat", "messages", "responses"):
            return ALLOW  # a person let this very call through
        turns = agent_turns(ctx.endpoint, ctx.body)
        limit = self.settings.max_iterations
        if turns.iterations > limit:
            message = (
                f"loop detected: {turns.iterations} tool-calling turns since the last user"
                f" message; the limit is {limit}. Stop calling tools and answer the user"
            )
            data = {"kind": "iterations", "iterations": turns.iterations, "limit": limit}
            return await self._decide(ctx, message, data)
        repeats = self.settings.max_repeats
        tail = turns.last(repeats)
        if len(tail) == repeats and len(set(tail)) == 1:
            name = tail[0][0]
            message = (
                f"loop detected: the tool {name!r} was called {repeats} times in a row with the"
                " same arguments. Use its result, or try something else"
            )
            data = {"kind": "repetition", "tool": name, "repeats": repeats}
            return await self._decide(ctx, message, data)
        return ALLOW

    async def _decide(self, ctx: CallContext, message: str, data: dict[str, object]) -> Decision:
        return await runaway(NAME, "loop_detected", message, data, ctx, self.settings, self.deps)


def _build(settings: LoopGuardSettings, _plan: Plan, deps: ChainDeps) -> LoopGuardCheck:
    return LoopGuardCheck(settings, deps)


SPEC = StepSpec(NAME, LoopGuardSettings, _build)
