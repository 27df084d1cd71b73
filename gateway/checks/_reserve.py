"""Budget reservations, shared by step 7 (org, team, key, user) and step 8 (session, runner).

Before a call goes out, its worst case (input estimate with a margin, plus its output cap at
the output price) is reserved in every bucket the step names, in one all-or-nothing operation
of the counters. When the client set no output cap, the largest one every bucket can pay for
(up to the gateway's default) is granted and written into the body, so the provider stops
there. The call's actual cost settles the reservation exactly once (through the pipeline);
a crashed process leaves it to its lease.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import Field, HttpUrl

from ..counters import Bucket, CountersUnavailableError, NeedsSeed, Over, ReserveRequest
from ._alerts import AlertTarget
from ._base import Allow, CallContext, Decision, Deny, Outcome
from ._config import StepSettings
from ._content import with_max_output_tokens
from ._deps import ChainDeps

__all__ = [
    "BudgetHold",
    "Planned",
    "ReservingSettings",
    "new_request_id",
    "reserve",
    "unavailable",
]

logger = logging.getLogger(__name__)

_NO_OUTPUT = frozenset({"embeddings", "count_tokens"})
_PROCESS = os.urandom(6).hex()  # ids unique across gateway processes without a uuid per call
_COUNT = itertools.count()


def new_request_id(kind: str) -> str:
    """An id for one call's counters entries, unique across processes sharing a Redis."""
    return f"{kind}_{_PROCESS}{next(_COUNT):x}"


class ReservingSettings(StepSettings):
    min_output_tokens: int = Field(
        default=16, ge=1, description="output tokens a reply needs at least; fewer: 403"
    )
    input_margin: float = Field(
        default=0.2, ge=0, description="fraction added to the input token estimate"
    )
    alert_thresholds: tuple[float, ...] = Field(
        default=(0.5, 0.8, 1.0), description="fractions of a budget that raise budget.alert"
    )
    lower_client_cap: bool = Field(
        default=False,
        description="True: a max_tokens the client set that the budgets cannot pay is lowered"
        " to what they can (down to min_output_tokens); False: the call is refused",
    )
    alert_webhook_url: HttpUrl | None = None


@dataclass(frozen=True)
class Planned:
    """A bucket this call must fit in, and how to read its recorded spend (USD) if the
    counters do not have it yet."""

    bucket: Bucket
    seed: Callable[[], Awaitable[float]]
    reason: str
    """The denial code when it is this bucket that cannot pay, e.g. `org_daily_budget_exhausted`."""
    what: str
    """For messages: `org org_1's daily budget`."""


@dataclass
class BudgetHold:
    """A reservation; the pipeline settles it once with the call's actual cost."""

    deps: ChainDeps
    reservation_id: str
    buckets: Sequence[Bucket]
    target: AlertTarget
    thresholds: tuple[float, ...]

    async def settle(self, outcome: Outcome) -> None:
        try:
            spent = await self.deps.counters.settle(
                self.reservation_id, self.buckets, outcome.cost_usd
            )
        except CountersUnavailableError:
            # Its lease frees the hold; the cost is in the store, where a reseed finds it.
            logger.warning("could not settle reservation %s", self.reservation_id)
            return
        alerts = self.deps.alerts
        if alerts is None or not self.thresholds:
            return
        for bucket in self.buckets:
            if bucket.key in spent and bucket.limit_usd > 0:
                await alerts.spent(
                    self.target,
                    bucket.key,
                    bucket.limit_usd,
                    spent[bucket.key],
                    self.thresholds,
                    bucket.ttl_s,
                )


def unavailable(step: str, deps: ChainDeps) -> Decision:
    """What a step answers when the counters cannot be reached: 503, or pass when fail-open."""
    if deps.counters_fail_open:
        return Allow(note="counters unavailable: not metered")
    return Deny(
        step,
        "counters_unavailable",
        "the gateway cannot reach its counters right now; retry shortly",
        status=503,
        headers={"retry-after": "1"},
    )


def target_of(ctx: CallContext, settings: ReservingSettings) -> AlertTarget:
    return AlertTarget(
        org_id=ctx.org_id,
        actor=ctx.actor,
        runner_id=ctx.runner.id if ctx.runner else None,
        session_id=ctx.session.id if ctx.session else None,
        webhook_url=str(settings.alert_webhook_url) if settings.alert_webhook_url else None,
    )


async def reserve(
    step: str,
    ctx: CallContext,
    planned: Sequence[Planned],
    settings: ReservingSettings,
    deps: ChainDeps,
    on_over: Callable[[Planned, float], Awaitable[None]] | None = None,
) -> Decision:
    if not planned or ctx.endpoint == "count_tokens":
        return Allow()
    # A cap the client chose is reserved whole (or the call refused) unless the policy lets
    # it be lowered; a cap a check set for the client (an earlier budget) may be lowered.
    fixed_cap = ctx.client_max_output_tokens is not None and not settings.lower_client_cap
    current = ctx.max_output_tokens
    if ctx.endpoint in _NO_OUTPUT:
        most = least = 0
    else:
        most = current or deps.default_max_tokens
        least = most if fixed_cap else min(settings.min_output_tokens, most)
    input_tokens = math.ceil(ctx.estimated_prompt_tokens * (1 + settings.input_margin))
    request = ReserveRequest(
        reservation_id=new_request_id("rsv"),
        buckets=[p.bucket for p in planned],
        fixed_usd=input_tokens * ctx.price.input,
        unit_usd=ctx.price.output,
        max_units=most,
        min_units=least,
        lease_s=deps.reservation_lease_s,
    )
    try:
        result = await deps.counters.reserve(request)
        if isinstance(result, NeedsSeed):
            wanted = set(result.keys)
            seeds = {p.bucket.key: await p.seed() for p in planned if p.bucket.key in wanted}
            result = await deps.counters.reserve(dataclasses.replace(request, seeds=seeds))
    except CountersUnavailableError:
        return unavailable(step, deps)
    if isinstance(result, NeedsSeed):  # seeded, then gone at once: refuse rather than guess
        return unavailable(step, deps)
    if isinstance(result, Over):
        found = next(p for p in planned if p.bucket.key == result.key)
        if on_over is not None:
            await on_over(found, result.remaining_usd)
        needed = request.fixed_usd + request.unit_usd * least
        remaining = max(result.remaining_usd, 0.0)
        return Deny(
            step,
            found.reason,
            f"{found.what} cannot pay for this call: ${remaining:.6f} of"
            f" ${found.bucket.limit_usd:.6f} left, the call needs up to ${needed:.6f}"
            + (f" (max_tokens {most})" if fixed_cap else ""),
            data={
                "bucket": found.bucket.key,
                "budget_usd": found.bucket.limit_usd,
                "remaining_usd": round(remaining, 9),
                "needed_usd": round(needed, 9),
            },
        )
    hold = BudgetHold(
        deps,
        result.reservation_id,
        request.buckets,
        target_of(ctx, settings),
        settings.alert_thresholds,
    )
    body = None
    if most > 0 and result.units != current:
        body = with_max_output_tokens(ctx.endpoint, ctx.body, result.units)
    return Allow(body=body, hold=hold)
