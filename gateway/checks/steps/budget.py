"""Step 7, hierarchical budget (403): daily and monthly USD budgets per org, team, key and
user, enforced by reservation (gateway/checks/_reserve.py): a call is refused when the worst
case it could cost does not fit in every budget that applies, so concurrent calls can never
spend past a budget. Days and months are UTC.

Settings (chain.yaml `steps.budget`, a plan's or an org's own): `org_daily_usd`,
`org_monthly_usd`, `team_*`, `key_*`, `user_*` (USD; None: no budget), per-entity overrides
under `teams`, `keys`, `users` ({id: {daily_usd, monthly_usd}}), alert thresholds and webhook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from ...counters import Bucket
from .._base import CallContext, Decision
from .._config import Plan, StepSpec
from .._deps import ChainDeps
from .._reserve import Planned, ReservingSettings, reserve

NAME = "budget"
_DAY_TTL_S = 2 * 86_400
_MONTH_TTL_S = 62 * 86_400

Usd = float | None


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)


class BudgetSettings(ReservingSettings):
    org_daily_usd: Usd = Field(default=None, gt=0)
    org_monthly_usd: Usd = Field(default=None, gt=0)
    team_daily_usd: Usd = Field(default=None, gt=0)
    team_monthly_usd: Usd = Field(default=None, gt=0)
    key_daily_usd: Usd = Field(default=None, gt=0)
    key_monthly_usd: Usd = Field(default=None, gt=0)
    user_daily_usd: Usd = Field(default=None, gt=0)
    user_monthly_usd: Usd = Field(default=None, gt=0)
    teams: dict[str, Limits] = Field(default_factory=dict)
    keys: dict[str, Limits] = Field(default_factory=dict)
    users: dict[str, Limits] = Field(default_factory=dict)


def _month_after(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


class BudgetCheck:
    name = NAME

    def __init__(self, settings: BudgetSettings, deps: ChainDeps) -> None:
        self.settings = settings
        self.deps = deps
        self._plans: dict[tuple[str | int | None, ...], list[Planned]] = {}
        self._any = any(
            getattr(settings, f"{who}_{period}_usd") is not None
            for who in ("org", "team", "key", "user")
            for period in ("daily", "monthly")
        ) or bool(settings.teams or settings.keys or settings.users)

    def _limits(self, who: str, entity: str) -> tuple[Usd, Usd]:
        given: dict[str, Limits] = getattr(self.settings, f"{who}s") if who != "org" else {}
        own = given.get(entity, Limits())
        daily = own.daily_usd or getattr(self.settings, f"{who}_daily_usd")
        monthly = own.monthly_usd or getattr(self.settings, f"{who}_monthly_usd")
        return daily, monthly

    def _planned(self, ctx: CallContext) -> list[Planned]:
        # The buckets of one caller change only with the UTC day: built once per day.
        key = (ctx.org_id, ctx.team_id, ctx.key_id, ctx.user_id, int(ctx.now // 86_400))
        found = self._plans.get(key)
        if found is None:
            if len(self._plans) > 10_000:
                self._plans.clear()
            found = self._plans[key] = self._plan(ctx)
        return found

    def _plan(self, ctx: CallContext) -> list[Planned]:
        now = datetime.fromtimestamp(ctx.now, UTC)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        out: list[Planned] = []
        for who, entity in (
            ("org", ctx.org_id),
            ("team", ctx.team_id),
            ("key", ctx.key_id),
            ("user", ctx.user_id),
        ):
            if entity is None:
                continue
            daily, monthly = self._limits(who, entity)
            for period, limit, start, end, ttl in (
                ("day", daily, day, day + timedelta(days=1), _DAY_TTL_S),
                ("month", monthly, month, _month_after(month), _MONTH_TTL_S),
            ):
                if limit is None:
                    continue
                label = f"{start:%Y-%m-%d}" if period == "day" else f"{start:%Y-%m}"
                out.append(
                    Planned(
                        Bucket(f"{who}:{entity}:{period}:{label}", limit, ttl),
                        self._seed(ctx.org_id, who, entity, start, end),
                        f"{who}_{'daily' if period == 'day' else 'monthly'}_budget_exhausted",
                        f"{who} {entity}'s {'daily' if period == 'day' else 'monthly'} budget",
                    )
                )
        return out

    def _seed(
        self, org_id: str, who: str, entity: str, since: datetime, until: datetime
    ) -> Callable[[], Awaitable[float]]:
        store = self.deps.store
        scope = {} if who == "org" else {f"{who}_id": entity}

        def seed() -> Awaitable[float]:
            return store.spend_usd(org_id, since=since, until=until, **scope)

        return seed

    async def check(self, ctx: CallContext) -> Decision:
        planned = self._planned(ctx) if self._any else []
        return await reserve(NAME, ctx, planned, self.settings, self.deps)


def _build(settings: BudgetSettings, _plan: Plan, deps: ChainDeps) -> BudgetCheck:
    return BudgetCheck(settings, deps)


SPEC = StepSpec(NAME, BudgetSettings, _build)
