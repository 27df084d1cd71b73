"""`GET/PUT /v1/runners/{id}/egress` and the runner watch, on the fake backend (no Docker)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from tests.support.servers import serve_app

ADMIN_KEY = "pdk_egress_api_admin_key"


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(ready_after=0)


@pytest.fixture
def api(tmp_path: Path, fake: FakeBackend) -> Iterator[httpx.Client]:
    settings = ControlPlaneSettings(
        data_dir=tmp_path,
        admin_key=ADMIN_KEY,
        backend="fake",
        probe_interval_s=0.02,
        watch_interval_s=0.05,
        egress_provider_hosts=["llm.internal.example"],
    )
    with serve_app(create_app(settings, backend=fake)) as url:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            yield client


def _runner(api: httpx.Client, profile: str) -> str:
    rid: str = api.post("/v1/runners", json={"profile": profile, "image": "probe"}).json()["id"]
    deadline = time.monotonic() + 10
    while api.get(f"/v1/runners/{rid}").json()["state"] != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return rid


def test_rules_change_live_within_limits_and_are_audited(api: httpx.Client) -> None:
    rid = _runner(api, "standard")
    view = api.get(f"/v1/runners/{rid}/egress").json()
    assert view["effective"]["mode"] == "allowlist"
    assert "llm.internal.example" in view["effective"]["provider_hosts"]
    assert view["override"] == {"allow": [], "deny": [], "private_ranges": []}

    put = api.put(f"/v1/runners/{rid}/egress", json={"allow": ["Docs.Example.org:443"]})
    assert put.status_code == 200, put.text
    assert "docs.example.org:443" in put.json()["effective"]["allow"]
    changed = [e for e in api.get(f"/v1/runners/{rid}/events").json()["events"]
               if e["type"] == "runner.egress_changed"]  # fmt: skip
    assert changed[-1]["data"]["after"]["allow"] == ["docs.example.org:443"]
    assert changed[-1]["data"]["before"] == {}

    for body, status in [
        ({"allow": ["api.openai.com"]}, 422),  # a provider: through the gateway only
        ({"allow": ["llm.internal.example"]}, 422),
        ({"private_ranges": ["10.0.0.0/8"]}, 403),  # not within what the org allows
        ({"allow": ["exa*mple.org"]}, 422),
        ({"allow": ["a.org"], "extra": 1}, 422),
    ]:
        response = api.put(f"/v1/runners/{rid}/egress", json=body)
        assert response.status_code == status, (body, response.text)
    # The last good rules still stand.
    assert api.get(f"/v1/runners/{rid}/egress").json()["override"]["allow"] == [
        "docs.example.org:443"
    ]


def test_gateway_only_profiles_take_deny_rules_only(api: httpx.Client) -> None:
    rid = _runner(api, "minimal")
    refused = api.put(f"/v1/runners/{rid}/egress", json={"allow": ["docs.example.org"]})
    assert refused.status_code == 403
    assert refused.json()["error"]["reason"] == "profile_gateway_only"
    assert api.put(f"/v1/runners/{rid}/egress", json={"deny": ["x.org"]}).status_code == 200
    assert api.get(f"/v1/runners/{rid}/egress").json()["effective"]["mode"] == "gateway_only"
    assert api.get("/v1/runners/rn_nope/egress").status_code == 404


def test_watch_fails_a_live_runner_whose_container_died(
    api: httpx.Client, fake: FakeBackend
) -> None:
    rid = _runner(api, "minimal")
    fake.runners[rid].status = "exited"
    deadline = time.monotonic() + 10
    runner = api.get(f"/v1/runners/{rid}").json()
    while runner["state"] != "failed":
        assert time.monotonic() < deadline, runner
        time.sleep(0.05)
        runner = api.get(f"/v1/runners/{rid}").json()
    assert runner["failure"]["code"] == "exited"
    assert ("stop", rid) in fake.calls
    events = api.get(f"/v1/runners/{rid}/events").json()["events"]
    assert events[-1]["data"]["to"] == "failed" and events[-1]["actor"] == "system"
