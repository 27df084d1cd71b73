"""Paddock's governance gateway: an OpenAI- and Anthropic-compatible proxy that authenticates
callers, runs the governance chain (gateway/checks), routes models to 50+ providers
(translating between protocols where needed), streams without buffering, and records every call
with its cost and audit event."""

from ._app import create_gateway
from ._cache import CachedAnswer, MemoryResponseCache, ResponseCache
from ._orgs import OrgGateway, OrgSettingsSource, StaticOrgSettings, StoredOrgSettings
from ._settings import GatewaySettings
from .checks import (
    ALLOW,
    STEPS,
    Allow,
    CallContext,
    ChainPolicy,
    Decision,
    Deny,
    Hold,
    PolicyChain,
    PolicyCheck,
    PolicyConfigError,
)

__all__ = [
    "ALLOW",
    "STEPS",
    "Allow",
    "CachedAnswer",
    "CallContext",
    "ChainPolicy",
    "Decision",
    "Deny",
    "GatewaySettings",
    "Hold",
    "MemoryResponseCache",
    "OrgGateway",
    "OrgSettingsSource",
    "PolicyChain",
    "PolicyCheck",
    "PolicyConfigError",
    "ResponseCache",
    "StaticOrgSettings",
    "StoredOrgSettings",
    "create_gateway",
]
