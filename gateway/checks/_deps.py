"""What the chain's checks share: built once per gateway process, handed to every step's
`build`. Checks hold no module globals; everything they reach comes through here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from paddock_core import DEFAULT_POLICIES_DIR, Store

from ..counters import Counters, MemoryCounters
from ._alerts import BudgetAlerts
from ._scan import ContentPolicies

__all__ = ["ChainDeps", "Classify", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """A moderation model's answer about one text."""

    flagged: bool
    categories: tuple[str, ...] = ()
    """The categories it flagged."""


Classify = Callable[[str, str], Awaitable[Verdict]]
"""`classify(model, text)`: asks a moderation model (step 12). Raises when it cannot answer."""


def _shipped_content() -> ContentPolicies:
    return ContentPolicies.load(DEFAULT_POLICIES_DIR)


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
    content: ContentPolicies = field(default_factory=_shipped_content)
    """Compiled PII patterns and content rules (steps 9 to 11). Default: the shipped
    policies/pii.yaml and content_rules.yaml; the gateway loads its own `policies_dir`'s."""
    classify: Classify | None = None
    """The moderation model's client (step 12); None: step 12 fails open or closed as set."""
