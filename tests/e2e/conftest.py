"""A whole Paddock on this machine: fake provider, gateway and control plane on real Docker."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from controlplane import ControlPlaneSettings, create_app
from gateway import GatewaySettings, create_gateway
from paddock.fake_provider import create_fake_provider
from tests.support.servers import serve_app

ADMIN_KEY = "pdk_e2e_admin_key"


@dataclass
class Stack:
    api: httpx.Client
    gateway_url: str  # loopback URL of the gateway, for the tests themselves
    controlplane_id: str
    docker: docker.DockerClient


@contextlib.contextmanager
def run_stack(
    data_dir: Path, controlplane_id: str, client: docker.DockerClient, **cp_overrides: Any
) -> Iterator[Stack]:
    with serve_app(create_fake_provider()) as fake_url:
        gw_settings = GatewaySettings(
            data_dir=data_dir,
            admin_key=ADMIN_KEY,
            provider_base_urls={"fake": f"{fake_url}/v1", "fake-anthropic": fake_url},
            org_settings_ttl_s=0,  # an org's change applies to its next call
        )
        # All addresses: runners reach the gateway at their bridge's gateway address.
        with serve_app(create_gateway(gw_settings), host="0.0.0.0") as gw_url:
            port = int(gw_url.rsplit(":", 1)[1])
            cp_settings = ControlPlaneSettings(
                data_dir=data_dir,
                admin_key=ADMIN_KEY,
                backend="docker",
                controlplane_id=controlplane_id,
                gateway_port=port,
                probe_interval_s=0.05,
                ready_timeout_s=240,
                **cp_overrides,
            )
            with serve_app(create_app(cp_settings)) as cp_url:
                headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
                with httpx.Client(base_url=cp_url, headers=headers, timeout=300) as api:
                    yield Stack(api, f"http://127.0.0.1:{port}", controlplane_id, client)


@pytest.fixture
def make_stack(
    data_dir: Path, controlplane_id: str, docker_client: docker.DockerClient, docker_sweep: None
) -> Callable[..., contextlib.AbstractContextManager[Stack]]:
    def make(**overrides: Any) -> contextlib.AbstractContextManager[Stack]:
        return run_stack(data_dir, controlplane_id, docker_client, **overrides)

    return make


@pytest.fixture
def stack(make_stack: Callable[..., contextlib.AbstractContextManager[Stack]]) -> Iterator[Stack]:
    with make_stack() as s:
        yield s
