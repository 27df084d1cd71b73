"""What the chain's checks share: built once per gateway process, handed to every step's
`build`. Checks hold no module globals; everything they reach comes through here."""

from __future__ import annotations

from dataclasses import dataclass

from paddock_core import Store

__all__ = ["ChainDeps"]


@dataclass(frozen=True)
class ChainDeps:
    store: Store
    default_max_tokens: int
    """The output cap assumed when a client sets none (cost estimates, reservations)."""
