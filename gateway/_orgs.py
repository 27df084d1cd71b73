"""What an org changes about the gateway, behind a port so tenancy can plug in its own source.

`OrgSettingsSource` answers one question per call: this org's `OrgGateway` (cache on or off,
its aliases, its own provider keys and base URLs). Two implementations ship:

- `StaticOrgSettings`: a fixed mapping, in memory (tests, single-tenant deployments);
- `StoredOrgSettings`: the `org_gateway` object of the core store, provider keys unsealed with
  the master secret key, each org kept for `ttl_s` seconds (so a change lands within that).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import SecretStr

from paddock_core import OrgGatewayRecord, Store, TranscriptSettings, open_provider_key

__all__ = ["OrgGateway", "OrgSettingsSource", "StaticOrgSettings", "StoredOrgSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrgGateway:
    cache_enabled: bool | None = None
    """None: the gateway's default."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    provider_keys: Mapping[str, SecretStr] = field(default_factory=dict)
    provider_base_urls: Mapping[str, str] = field(default_factory=dict)
    plan: str | None = None
    """None: chain.yaml's choice, else the default plan."""
    policy: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The org's own step settings, over its plan's (policies/chain.yaml format)."""
    transcripts: TranscriptSettings = TranscriptSettings()


_DEFAULT = OrgGateway()


class OrgSettingsSource(Protocol):
    async def get(self, org_id: str) -> OrgGateway: ...


class StaticOrgSettings:
    def __init__(self, orgs: Mapping[str, OrgGateway] | None = None) -> None:
        self._orgs = dict(orgs or {})

    async def get(self, org_id: str) -> OrgGateway:
        return self._orgs.get(org_id, _DEFAULT)


class StoredOrgSettings:
    def __init__(self, store: Store, secret_key: SecretStr, *, ttl_s: float) -> None:
        self._store = store
        self._secret = secret_key
        self._ttl_s = ttl_s
        self._kept: dict[str, tuple[float, OrgGateway]] = {}

    async def get(self, org_id: str) -> OrgGateway:
        now = time.monotonic()
        kept = self._kept.get(org_id)
        if kept is not None and now - kept[0] < self._ttl_s:
            return kept[1]
        doc = await self._store.get_object("org_gateway", org_id)
        org = self._unseal(OrgGatewayRecord.model_validate(doc)) if doc else _DEFAULT
        self._kept[org_id] = (now, org)
        return org

    def _unseal(self, record: OrgGatewayRecord) -> OrgGateway:
        secret = self._secret.get_secret_value()
        keys = {
            provider: SecretStr(open_provider_key(secret, record.org_id, provider, sealed))
            for provider, sealed in record.provider_keys.items()
        }
        if keys:
            logger.debug("org %s brings its own keys for %s", record.org_id, sorted(keys))
        return OrgGateway(
            cache_enabled=record.cache_enabled,
            aliases=dict(record.aliases),
            provider_keys=keys,
            provider_base_urls=dict(record.provider_base_urls),
            plan=record.plan,
            policy={k: dict(v) for k, v in record.policy.items()},
            transcripts=TranscriptSettings(
                record.transcript_content, record.transcript_retention_days
            ),
        )
