"""Paddock on E2B without E2B: the shipped fake E2B on loopback, and a whole stack on it.

Nothing here reaches E2B: the SDK's API and sandbox URLs are the fake's, the fake's VMs are
containers on its own internal network, and their only way out is the fake's egress, which
knows loopback upstreams only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controlplane import ControlPlaneSettings, create_app
from gateway import GatewaySettings, create_gateway
from paddock.fake_e2b import FakeE2B, FakeE2BApp, FakeE2BConfig, FakeTemplate, create_fake_e2b
from paddock.fake_provider import create_fake_provider
from tests.support.servers import serve_app

GATEWAY_HOST = "gateway.paddock.test"
FAKE_DOMAIN = "fake-e2b.test"
FAKE_KEY = "e2b_fake_test_key"
ADMIN_KEY = "pdk_e2b_admin_key"


@dataclass
class FakeE2BServer:
    url: str
    app: FakeE2BApp

    @property
    def fake(self) -> FakeE2B:
        return self.app.fake

    def gateway_url(self) -> str:
        """PADDOCK_GATEWAY_PUBLIC_URL as the fake's VMs reach the gateway (through its egress)."""
        return f"{self.fake.egress_url(GATEWAY_HOST)}/v1"

    @contextlib.contextmanager
    def route(self, host: str, upstream: str) -> Iterator[None]:
        """Point a host of the fake's internet at a loopback server for a while."""
        before = self.fake.config.upstreams.get(host)
        self.fake.config.upstreams[host] = upstream
        try:
            yield
        finally:
            if before is None:
                self.fake.config.upstreams.pop(host, None)
            else:
                self.fake.config.upstreams[host] = before

    def knob(self, path: str, **body: Any) -> None:
        """Turn one of the fake's knobs (`/_fake/...`), over HTTP: it runs in its own thread."""
        httpx.post(f"{self.url}/_fake/{path}", json=body, timeout=30).raise_for_status()

    def kill_all(self, controlplane_id: str) -> list[str]:
        """Kill what a control plane left behind; return the sandbox ids."""
        left = [
            s.sandbox_id
            for s in list(self.fake.sandboxes.values())
            if s.metadata.get("io.paddock.controlplane-id") == controlplane_id
        ]
        for sandbox_id in left:
            httpx.delete(
                f"{self.url}/sandboxes/{sandbox_id}", headers={"X-API-KEY": FAKE_KEY}, timeout=30
            )
        return left

    def sdk_options(self) -> dict[str, Any]:
        return {
            "api_key": FAKE_KEY,
            "api_url": self.url,
            "sandbox_url": self.url,
            "domain": FAKE_DOMAIN,
        }


@contextlib.contextmanager
def serve_fake_e2b(**templates: FakeTemplate) -> Iterator[FakeE2BServer]:
    config = FakeE2BConfig(
        api_key=FAKE_KEY,
        domain=FAKE_DOMAIN,
        upstreams={GATEWAY_HOST: "http://127.0.0.1:9"},  # routed per test
    )
    config.templates.update(templates)
    app = create_fake_e2b(config)
    with serve_app(app) as url:
        yield FakeE2BServer(url, app)


@dataclass
class E2BStack:
    api: httpx.Client
    gateway_url: str
    controlplane_id: str
    fake: FakeE2BServer


@contextlib.contextmanager
def run_e2b_stack(
    data_dir: Path, controlplane_id: str, fake: FakeE2BServer, **cp_overrides: Any
) -> Iterator[E2BStack]:
    """Fake provider, gateway and control plane (backend e2b) on loopback, on the fake E2B."""
    with serve_app(create_fake_provider()) as provider_url:
        gw_settings = GatewaySettings(
            data_dir=data_dir,
            admin_key=ADMIN_KEY,
            provider_base_urls={"fake": f"{provider_url}/v1"},
        )
        with serve_app(create_gateway(gw_settings)) as gw_url, fake.route(GATEWAY_HOST, gw_url):
            settings: dict[str, Any] = {
                "data_dir": data_dir,
                "admin_key": ADMIN_KEY,
                "backend": "e2b",
                "controlplane_id": controlplane_id,
                "gateway_public_url": fake.gateway_url(),
                "e2b_api_key": FAKE_KEY,
                "e2b_api_url": fake.url,
                "e2b_sandbox_url": fake.url,
                "e2b_domain": FAKE_DOMAIN,
                "probe_interval_s": 0.05,
                "ready_timeout_s": 60,
                "watch_interval_s": 0.2,
                **cp_overrides,
            }
            with serve_app(create_app(ControlPlaneSettings(**settings))) as cp_url:
                headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
                with httpx.Client(base_url=cp_url, headers=headers, timeout=60) as api:
                    stack = E2BStack(api, gw_url, controlplane_id, fake)
                    try:
                        yield stack
                    finally:
                        if left := fake.kill_all(controlplane_id):
                            print(f"killed fake E2B sandboxes left by {controlplane_id}: {left}")


def wait_state(
    api: httpx.Client, runner_id: str, want: str, timeout_s: float = 60
) -> dict[str, Any]:
    """Poll the runner until it leaves `provisioning` (or, for `want` = failed, until failed)."""
    deadline = time.monotonic() + timeout_s
    runner: dict[str, Any] = {}
    while time.monotonic() < deadline:
        runner = api.get(f"/v1/runners/{runner_id}").json()
        if runner["state"] == want or runner["state"] in ("failed", "stopped"):
            break
        time.sleep(0.05)
    assert runner.get("state") == want, f"runner not {want}: {runner}"
    return runner
