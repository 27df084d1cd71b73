"""One contract for the `OrgSettingsSource` port: the in-memory one and the store-backed one
(provider keys sealed at rest) answer the same questions the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway import OrgGateway, OrgSettingsSource, StaticOrgSettings, StoredOrgSettings
from paddock_core import (
    OrgGatewayRecord,
    PutObject,
    SqliteStore,
    StoreError,
    UpdateObject,
    seal_provider_key,
)

SECRET = "contract-secret"
ORG = "org_contract"
WANTED = OrgGateway(
    cache_enabled=True,
    aliases={"fast": "fake-mini"},
    provider_keys={"openai": SecretStr("sk-org-1")},
    provider_base_urls={"azure": "https://org.openai.azure.com/openai/v1"},
)

Check = Callable[[OrgSettingsSource], Awaitable[None]]


async def _same(source: OrgSettingsSource) -> None:
    got = await source.get(ORG)
    assert got.cache_enabled is True
    assert dict(got.aliases) == {"fast": "fake-mini"}
    assert {k: v.get_secret_value() for k, v in got.provider_keys.items()} == {"openai": "sk-org-1"}
    assert dict(got.provider_base_urls) == dict(WANTED.provider_base_urls)
    assert await source.get("org_unknown") == OrgGateway()


def _record(secret: str = SECRET) -> OrgGatewayRecord:
    return OrgGatewayRecord(
        id=ORG,
        org_id=ORG,
        cache_enabled=True,
        aliases={"fast": "fake-mini"},
        provider_keys={"openai": seal_provider_key(secret, ORG, "openai", "sk-org-1")},
        provider_base_urls=dict(WANTED.provider_base_urls),
    )


def _with_store(tmp_path: Path, check: Check, *, ttl_s: float = 0.0) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "orgs.db")
        await store.open()
        try:
            await store.apply([PutObject("org_gateway", _record())])
            await check(StoredOrgSettings(store, SecretStr(SECRET), ttl_s=ttl_s))
        finally:
            await store.close()

    asyncio.run(main())


def test_static_source() -> None:
    asyncio.run(_same(StaticOrgSettings({ORG: WANTED})))


def test_stored_source_unseals_keys(tmp_path: Path) -> None:
    _with_store(tmp_path, _same)


def test_stored_source_refuses_keys_sealed_under_another_secret(tmp_path: Path) -> None:
    async def check(source: OrgSettingsSource) -> None:
        assert isinstance(source, StoredOrgSettings)
        store = source._store  # the same store: overwrite with a key sealed elsewhere
        other = _record(secret="another-secret").model_dump(mode="json", exclude={"id", "org_id"})
        await store.apply([UpdateObject("org_gateway", ORG, other)])
        with pytest.raises(StoreError, match="cannot open the provider key"):
            await source.get(ORG)

    _with_store(tmp_path, check)


def test_stored_source_keeps_an_org_for_its_ttl(tmp_path: Path) -> None:
    async def check(source: OrgSettingsSource) -> None:
        assert isinstance(source, StoredOrgSettings)
        first = await source.get(ORG)
        await source._store.apply([UpdateObject("org_gateway", ORG, {"cache_enabled": False})])
        assert await source.get(ORG) is first  # within the TTL: no store read

    _with_store(tmp_path, check, ttl_s=60)
