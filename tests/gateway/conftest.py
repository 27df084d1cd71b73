"""A real gateway and the real fake provider on loopback, over a temporary SQLite store.

The servers live for the whole module (starting them is the slow part); every test seeds its own
runner with its own token, so tests never see each other's records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from pydantic import SecretStr

from gateway import GatewaySettings, create_gateway
from paddock.fake_provider import create_fake_provider
from tests.gateway.harness import ADMIN_KEY, FAKE_PROVIDER_KEY, ORG, Records, Seeded
from tests.support.servers import serve_app


@pytest.fixture(scope="module")
def fake_provider_url() -> Iterator[str]:
    with serve_app(create_fake_provider(api_key=FAKE_PROVIDER_KEY)) as url:
        yield url


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory: Path = tmp_path_factory.mktemp("gateway")
    return f"sqlite:///{directory / 'paddock.db'}"


@pytest.fixture(scope="module")
def records(database_url: str) -> Records:
    return Records(database_url)


@pytest.fixture(scope="module")
def gateway_settings(database_url: str, fake_provider_url: str) -> GatewaySettings:
    return GatewaySettings(
        database_url=database_url,
        admin_key=SecretStr(ADMIN_KEY),
        org_id=ORG,
        provider_base_urls={"fake": f"{fake_provider_url}/v1"},
        provider_keys={"fake": SecretStr(FAKE_PROVIDER_KEY)},
        upstream_timeout_s=5.0,
        connect_timeout_s=2.0,
    )


@pytest.fixture(scope="module")
def gateway_url(gateway_settings: GatewaySettings) -> Iterator[str]:
    with serve_app(create_gateway(gateway_settings)) as url:
        yield url


@pytest.fixture
def runner(records: Records) -> Seeded:
    """A running runner in an open session without budgets."""
    return records.runner()


@pytest.fixture
def client_for(gateway_url: str) -> Iterator[Callable[[str], OpenAI]]:
    """The real OpenAI SDK pointed at the gateway; no retries, so each call is one request."""
    clients: list[OpenAI] = []

    def make(api_key: str) -> OpenAI:
        client = OpenAI(base_url=f"{gateway_url}/v1", api_key=api_key, max_retries=0, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
