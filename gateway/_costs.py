"""Prices, and the one write that records a call with its audit event.

Prices: the local table (policies/prices.yaml) wins where it has the model; else the maintained
`genai-prices` data (input, cached input, cache writes, output; reasoning is output). A model
known to neither is recorded at $0 with one warning, and counted in the metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
from genai_prices.data_snapshot import get_snapshot

from paddock_core import (
    AppendAudit,
    AuditEvent,
    LlmCallRecord,
    ModelPrice,
    Operation,
    PaddockError,
    Policies,
    ProviderSpec,
    RecordLlmCall,
    Store,
)

from ._metrics import GatewayMetrics
from ._usage import Usage

__all__ = ["CallMeta", "Ledger", "Pricing"]

logger = logging.getLogger(__name__)

_MTOK = Decimal(1_000_000)
_RATE_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


@dataclass(frozen=True)
class _Rates:
    """USD per million tokens of one model, when its price is flat (not tiered)."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    def cost(self, usage: Usage) -> float:
        fresh = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
        total = (
            fresh * self.input
            + usage.cached_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.completion_tokens * self.output
        )
        return float(total / _MTOK)


def _local_rates(price: ModelPrice) -> _Rates:
    def d(value: float | None, default: float) -> Decimal:
        return Decimal(str(default if value is None else value))

    return _Rates(
        d(price.input_per_mtok, 0),
        d(price.output_per_mtok, 0),
        d(price.cached_input_per_mtok, price.input_per_mtok),
        d(price.cache_write_per_mtok, price.input_per_mtok),
    )


class Pricing:
    """USD cost of a call. Lookups are cached per (provider, model) for the process's life."""

    def __init__(self, policies: Policies) -> None:
        self._local = {model: _local_rates(p) for model, p in policies.prices.items()}
        self._found: dict[tuple[str, str], _Rates | Any | None] = {}
        self._estimates: dict[tuple[str, str, str], tuple[float, float]] = {}

    def known(self, spec: ProviderSpec, model: str) -> bool:
        return self._lookup(spec, model) is not None

    def _lookup(self, spec: ProviderSpec, model: str) -> _Rates | Any | None:
        key = (spec.name, model)
        if key in self._found:
            return self._found[key]
        found: _Rates | Any | None = self._local.get(model)
        if found is None:
            snapshot = get_snapshot()
            for provider_id in (spec.price_provider or spec.name, None):
                try:
                    _, info = snapshot.find_provider_model(model, None, provider_id, None)
                except LookupError:
                    continue
                price = info.get_prices(datetime.now(UTC))
                rates = [getattr(price, f, None) for f in _RATE_FIELDS]
                if all(r is None or isinstance(r, Decimal) for r in rates):
                    inp, out, read, write = (r if r is not None else None for r in rates)
                    found = _Rates(
                        inp or Decimal(0),
                        out or Decimal(0),
                        read if read is not None else (inp or Decimal(0)),
                        write if write is not None else (inp or Decimal(0)),
                    )
                else:
                    found = (provider_id, model)  # tiered: let the library compute each call
                break
            if found is None:
                logger.warning(
                    "no price for model %r of provider %r: its calls are recorded at $0",
                    model,
                    spec.name,
                )
        self._found[key] = found
        return found

    def token_price(self, spec: ProviderSpec, model: str) -> tuple[float, float]:
        """(input, output) USD per token, for estimates; (0, 0) when the price is unknown.
        Tiered prices are estimated at the first tier's cost of a million tokens each way."""
        found = self._lookup(spec, model)
        if found is None:
            return (0.0, 0.0)
        if isinstance(found, _Rates):
            return (float(found.input / _MTOK), float(found.output / _MTOK))
        key = ("price", spec.name, model)
        kept = self._estimates.get(key)
        if kept is None:
            mtok = 1_000_000
            inp = self.cost_usd(spec, model, Usage(mtok, 0)) / mtok
            out = self.cost_usd(spec, model, Usage(0, mtok)) / mtok
            kept = self._estimates[key] = (inp, out)
        return kept

    def cost_usd(self, spec: ProviderSpec, model: str, usage: Usage) -> float:
        found = self._lookup(spec, model)
        if found is None:
            return 0.0
        if isinstance(found, _Rates):
            return found.cost(usage)
        provider_id, name = found
        calc = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                cache_read_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            ),
            name,
            provider_id=provider_id,
        )
        return float(calc.total_price)


@dataclass(frozen=True)
class CallMeta:
    """Who made a call and where it went; everything a record needs except the outcome."""

    id: str
    org_id: str
    actor: str
    runner_id: str | None
    session_id: str | None
    endpoint: str
    provider: ProviderSpec
    model: str
    stream: bool
    key_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    policy_version: str | None = None
    """The chain that allowed the call (in its audit event)."""
    policy_notes: tuple[str, ...] = ()
    """What the chain changed, e.g. `pii: redacted email` (never the values)."""


class Ledger:
    """Writes each call and its `llm.call` audit event in one atomic batch. Never prompt text.

    `durable=True`: `record` returns once the batch is committed, so the answer ends only after
    its record is durable. `durable=False`: `record` hands the batch to the store's group commit
    and returns at once; until it lands, its cost is kept here (`pending_usd`) so budget checks
    still count it, and `drain()` (at shutdown) waits for every write still under way.
    """

    def __init__(
        self, store: Store, pricing: Pricing, metrics: GatewayMetrics, *, durable: bool = True
    ) -> None:
        self._store = store
        self._pricing = pricing
        self._metrics = metrics
        self._durable = durable
        self._pending: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def pending_usd(self, owner: str | None) -> float:
        """Spend of calls answered but not yet written, for `runner:<id>` or `session:<id>`."""
        return self._pending.get(owner, 0.0) if owner else 0.0

    def _hold(self, call: LlmCallRecord, sign: float) -> None:
        for owner in (f"runner:{call.runner_id}", f"session:{call.session_id}"):
            if not owner.endswith(":None"):
                left = self._pending.get(owner, 0.0) + sign * call.cost_usd
                if left > 1e-12:
                    self._pending[owner] = left
                else:
                    self._pending.pop(owner, None)

    async def _write_behind(self, call: LlmCallRecord, ops: list[Operation]) -> None:
        try:
            for attempt in range(3):
                try:
                    await self._store.apply(ops)
                    return
                except PaddockError as exc:
                    logger.warning("writing call %s failed (%s), attempt %d", call.id, exc, attempt)
                    await asyncio.sleep(0.2 * (attempt + 1))
            logger.error("call %s (cost_usd=%.6f) could not be recorded", call.id, call.cost_usd)
        finally:
            self._hold(call, -1)

    async def drain(self) -> None:
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def record(
        self,
        meta: CallMeta,
        usage: Usage,
        *,
        status: int,
        latency_ms: float,
        cache_hit: bool = False,
        extra: Sequence[Operation] = (),
    ) -> LlmCallRecord:
        """Record one call, with `extra` operations in the same batch (transcript entries).
        `status` is the provider's HTTP status, 502 when none came back,
        499 when the client went away mid-stream; `latency_ms` is upstream time in ms.
        A cache hit costs nothing."""
        cost = 0.0 if cache_hit else self._pricing.cost_usd(meta.provider, meta.model, usage)
        call = LlmCallRecord(
            id=meta.id,
            org_id=meta.org_id,
            runner_id=meta.runner_id,
            session_id=meta.session_id,
            provider=meta.provider.name,
            model=meta.model,
            stream=meta.stream,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cache_hit=cache_hit,
            endpoint=meta.endpoint,
            cost_usd=cost,
            latency_ms=round(latency_ms, 3),
            status=status,
            key_id=meta.key_id,
            team_id=meta.team_id,
            user_id=meta.user_id,
        )
        data: dict[str, Any] = {
            "call_id": meta.id,
            "model": meta.model,
            "provider": meta.provider.name,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "usage": "estimated" if usage.estimated else "reported",
            "cost_usd": cost,
            "latency_ms": call.latency_ms,
            "status": status,
            "stream": meta.stream,
        }
        if meta.endpoint != "chat.completions":
            data["endpoint"] = meta.endpoint
        if cache_hit:
            data["cache_hit"] = True
        if meta.policy_version is not None:
            data["policy"] = meta.policy_version
        if meta.policy_notes:
            data["policy_notes"] = list(meta.policy_notes)
        for kind in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
            if getattr(usage, kind):
                data[kind] = getattr(usage, kind)
        event = AuditEvent(
            org_id=meta.org_id,
            actor=meta.actor,
            type="llm.call",
            runner_id=meta.runner_id,
            session_id=meta.session_id,
            data=data,
        )
        ops: list[Operation] = [RecordLlmCall(call), AppendAudit(event), *extra]
        if self._durable:
            await self._store.apply(ops)
        else:
            self._hold(call, +1)
            task = asyncio.get_running_loop().create_task(self._write_behind(call, ops))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        self._metrics.call(call, estimated=usage.estimated)
        logger.debug(
            "llm call %s by %s: %s/%s status=%d tokens=%d+%d%s cost_usd=%.6f latency_ms=%.0f%s",
            meta.id,
            meta.actor,
            meta.provider.name,
            meta.model,
            status,
            usage.prompt_tokens,
            usage.completion_tokens,
            " (estimated)" if usage.estimated else "",
            cost,
            latency_ms,
            " cache_hit" if cache_hit else "",
        )
        return call
