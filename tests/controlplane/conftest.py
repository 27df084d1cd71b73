"""A control plane on loopback with the in-package fake backend (fast, no Docker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from tests.support.servers import serve_app

ADMIN_KEY = "pdk_test_admin_key"


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend(ready_after=0)


@pytest.fixture
def cp_settings(data_dir: Path) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        backend="fake",
        probe_interval_s=0.02,
        ready_timeout_s=5,
    )


@pytest.fixture
def api(cp_settings: ControlPlaneSettings, fake_backend: FakeBackend) -> Iterator[httpx.Client]:
    with serve_app(create_app(cp_settings, backend=fake_backend)) as url:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            yield client
