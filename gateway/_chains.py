"""Which chain an org's calls pass: built from policies/ (its plan, the files' settings and its
own overrides), or one fixed chain for every org (`create_gateway(checks=...)`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ._orgs import OrgGateway
from .checks import ChainDeps, ChainPolicy, PolicyChain, PolicyCheck

__all__ = ["ChainSource", "ConfiguredChains", "FixedChain"]


class ChainSource(Protocol):
    def chain_for(self, org_id: str, org: OrgGateway) -> PolicyChain: ...


class FixedChain:
    def __init__(self, checks: Sequence[PolicyCheck], version: str = "fixed") -> None:
        self._chain = PolicyChain(checks, version=version)

    def chain_for(self, org_id: str, org: OrgGateway) -> PolicyChain:  # noqa: ARG002
        return self._chain


class ConfiguredChains:
    def __init__(self, policy: ChainPolicy, deps: ChainDeps) -> None:
        self.policy = policy
        self._deps = deps

    def chain_for(self, org_id: str, org: OrgGateway) -> PolicyChain:
        return self.policy.chain_for(org_id, self._deps, org.plan, org.policy)
