"""What the chain's checks share: built once per gateway process, handed to every step's
`build`. Checks hold no module globals; everything they reach comes through here."""

from __future__ import annotations

from dataclasses import dataclass, field

from paddock_core import Store

from ..counters import Counters, MemoryCounters
from ._alerts import BudgetAlerts

__all__ = ["ChainDeps"]


@dataclass(frozen=True)
class ChainDeps:
    store: Store
    default_max_tokens: int
    """The output cap assumed when a client sets none (cost estimates, reservations)."""
    counters: Counters = field(default_factory=MemoryCounters)
    """Rate limits and budget reservations (shared through Redis when configured)."""
    counters_fail_open: bool = False
    """True: when the counters are unreachable, calls pass unmetered; False: 503."""
    reservation_lease_s: float = 300.0
    """Seconds a budget reservation outlives a process that never settles it."""
    alerts: BudgetAlerts | None = None
    """Budget alerts (audit events, webhooks); None: none are sent."""
