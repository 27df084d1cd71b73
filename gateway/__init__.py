"""Paddock's governance gateway: an OpenAI- and Anthropic-compatible proxy that authenticates
callers, runs the policy chain (budgets first), routes models to 50+ providers (translating
between protocols where needed), streams without buffering, and records every call with its
cost and audit event."""

from ._app import create_gateway
from ._cache import CachedAnswer, MemoryResponseCache, ResponseCache
from ._chain import (
    ALLOW,
    Allow,
    BudgetCheck,
    CallContext,
    Decision,
    Deny,
    PolicyChain,
    PolicyCheck,
    default_checks,
)
from ._orgs import OrgGateway, OrgSettingsSource, StaticOrgSettings, StoredOrgSettings
from ._settings import GatewaySettings

__all__ = [
    "ALLOW",
    "Allow",
    "BudgetCheck",
    "CachedAnswer",
    "CallContext",
    "Decision",
    "Deny",
    "GatewaySettings",
    "MemoryResponseCache",
    "OrgGateway",
    "OrgSettingsSource",
    "PolicyChain",
    "PolicyCheck",
    "ResponseCache",
    "StaticOrgSettings",
    "StoredOrgSettings",
    "create_gateway",
    "default_checks",
]
