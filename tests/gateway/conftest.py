"""A real gateway and the real fake provider on loopback, over a temporary SQLite store.

The servers live for the whole module (starting them is the slow part); every test seeds its own
runner with its own token, so tests never see each other's records. The gateway's wire is its
real default transport limited to loopback: a model routed by mistake to a real provider fails
instead of leaving the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from anthropic import Anthropic
from openai import OpenAI
from pydantic import SecretStr

from gateway import GatewaySettings, create_gateway
from paddock.fake_provider import FakeState, create_fake_provider
from tests.gateway.counters_support import redis_prefix  # noqa: F401  (a fixture)
from tests.gateway.harness import (
    ADMIN_KEY,
    FAKE_PROVIDER_KEY,
    ORG,
    Records,
    Seeded,
    loopback_transport,
)
from tests.support.servers import serve_app


@pytest.fixture(scope="module")
def fake_state() -> FakeState:
    """What the fake provider saw (its request counts, the last bodies it got)."""
    return FakeState()


@pytest.fixture(scope="module")
def fake_provider_url(fake_state: FakeState) -> Iterator[str]:
    with serve_app(create_fake_provider(api_key=FAKE_PROVIDER_KEY, state=fake_state)) as url:
        yield url


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory: Path = tmp_path_factory.mktemp("gateway")
    return f"sqlite:///{directory / 'paddock.db'}"


@pytest.fixture(scope="module")
def records(database_url: str) -> Records:
    return Records(database_url)


MAX_BODY = 1_000_000


def fake_settings(database_url: str, fake_url: str, **overrides: object) -> GatewaySettings:
    """Both faces of the fake provider configured; no retries and a breaker that never opens
    unless a test asks (tests share one gateway, and their failures must not add up)."""
    key = SecretStr(FAKE_PROVIDER_KEY)
    values: dict[str, object] = {
        "database_url": database_url,
        "admin_key": SecretStr(ADMIN_KEY),
        "org_id": ORG,
        "provider_base_urls": {"fake": f"{fake_url}/v1", "fake-anthropic": fake_url},
        "provider_keys": {"fake": key, "fake-anthropic": key},
        "model_aliases": {"fast": "fake-mini", "smart": "fake-claude"},
        "upstream_timeout_s": 5.0,
        "connect_timeout_s": 2.0,
        "max_retries": 0,
        "breaker_failures": 10_000,
        "org_settings_ttl_s": 0.0,
        "max_body_bytes": MAX_BODY,
    }
    values.update(overrides)
    return GatewaySettings.model_validate(values)


@pytest.fixture(scope="module")
def gateway_settings(database_url: str, fake_provider_url: str) -> GatewaySettings:
    return fake_settings(database_url, fake_provider_url)


@pytest.fixture(scope="module")
def gateway_url(gateway_settings: GatewaySettings) -> Iterator[str]:
    app = create_gateway(gateway_settings, upstream_transport=loopback_transport())
    with serve_app(app) as url:
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


@pytest.fixture
def anthropic_for(gateway_url: str) -> Iterator[Callable[[str], Anthropic]]:
    """The real Anthropic SDK pointed at the gateway (base URL without /v1, as it expects)."""
    clients: list[Anthropic] = []

    def make(api_key: str) -> Anthropic:
        client = Anthropic(base_url=gateway_url, api_key=api_key, max_retries=0, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()

