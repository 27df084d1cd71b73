"""The reconciler's decisions through the REST API, on the fake backend (which cannot pause):
an idle runner is stopped, a vanished one fails, a bad Idempotency-Key is a 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from tests.controlplane.conftest import ADMIN_KEY
from tests.controlplane.helpers import transitions, wait_for_state
from tests.support.servers import serve_app


@pytest.fixture
def fast_api(data_dir: Path, fake_backend: FakeBackend) -> Iterator[httpx.Client]:
    settings = ControlPlaneSettings(
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        backend="fake",
        probe_interval_s=0.02,
        watch_interval_s=0.1,
        idle_timeout_s=0.5,
    )
    with serve_app(create_app(settings, backend=fake_backend)) as url:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            yield client


def test_idle_runner_is_stopped_when_the_backend_cannot_pause(fast_api: httpx.Client) -> None:
    rid = fast_api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(fast_api, rid, {"stopped"}, timeout_s=15)
    assert transitions(fast_api, rid)[-2:] == [("ready", "stopping"), ("stopping", "stopped")]
    events = fast_api.get(f"/v1/runners/{rid}/events").json()["events"]
    assert [e["data"]["reason"] for e in events if e["data"].get("to") == "stopping"] == [
        "idle_timeout"
    ]


def test_vanished_runner_fails_with_its_reason(
    fast_api: httpx.Client, fake_backend: FakeBackend
) -> None:
    rid = fast_api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(fast_api, rid, {"ready"})
    fake_backend.runners.pop(rid)  # behind Paddock's back
    runner = wait_for_state(fast_api, rid, {"failed"})
    assert runner["failure"]["code"] == "container_vanished"


@pytest.mark.parametrize("key", ["", "x" * 201])
def test_bad_idempotency_key_is_a_4xx_naming_it(fast_api: httpx.Client, key: str) -> None:
    answer = fast_api.post(
        "/v1/runners", json={"profile": "minimal"}, headers={"Idempotency-Key": key}
    )
    assert answer.status_code == 422, answer.text
    assert "idempotency" in answer.json()["error"]["field"].lower()


def test_ttl_longer_than_the_planes_is_capped(fast_api: httpx.Client) -> None:
    bad = fast_api.post("/v1/runners", json={"profile": "minimal", "ttl_s": -1})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "ttl_s"
    runner = fast_api.post("/v1/runners", json={"profile": "minimal", "ttl_s": 10**9}).json()
    created = fast_api.get(f"/v1/runners/{runner['id']}").json()
    life = datetime.fromisoformat(created["expires_at"]) - datetime.fromisoformat(
        created["created_at"]
    )
    assert timedelta(hours=23) < life <= timedelta(days=1)  # runner_ttl_s, not 31 years
