"""The fake E2B Paddock ships: E2B's REST API and in-sandbox API (envd) as real servers, so the
real `e2b` SDK, and Paddock's E2B backend on it, run against this machine only.

Each sandbox is a container of its template's image (the "microVM"), on the fake's own
internal Docker network; envd's commands are `docker exec`s in it; its ports are proxied
(`{port}-{id}.{domain}`, or the `E2b-Sandbox-Id`/`-Port` headers on the shared URL); its
outbound HTTP goes through the fake's egress, which applies the sandbox's `allowOut`/`denyOut`
and per-host header rules as E2B's network layer does. Needs the Docker engine.

    app = create_fake_e2b(FakeE2BConfig(upstreams={"gateway.paddock.test": gateway_url}))
    # SDK: api_url = sandbox_url = the app's URL, api_key = config.api_key
"""

from __future__ import annotations

from ._api import FakeE2BApp, create_fake_e2b
from ._state import FakeE2B, FakeE2BConfig, FakeError, FakeSandbox, FakeTemplate
from ._vm import FAKE_LABEL

__all__ = [
    "FAKE_LABEL",
    "FakeE2B",
    "FakeE2BApp",
    "FakeE2BConfig",
    "FakeError",
    "FakeSandbox",
    "FakeTemplate",
    "create_fake_e2b",
]
