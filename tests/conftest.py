"""Fixtures shared by every suite: real Docker, real servers on loopback, labelled cleanup.

In CI (CI=true) a test that needs Docker fails when the engine is missing; it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from controlplane.backends import LABEL_CONTROLPLANE, LABEL_MANAGED
from controlplane.backends.firewall import HostFirewall

PROBE_IMAGE = "paddock/runner-probe:latest"
OPENCLAW_IMAGE = "paddock/runner-openclaw:latest"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the Docker engine is required (run scripts/setup-host): {exc}")
    yield client
    client.close()


def require_image(client: docker.DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {image} is missing: build it with runner_images/build")


@pytest.fixture
def controlplane_id(request: pytest.FixtureRequest) -> str:
    """A label value unique to this test, so cleanup checks see only what it created."""
    return f"test-{os.getpid()}-{abs(hash(request.node.nodeid)) % 10**8}"


def labelled(client: docker.DockerClient, controlplane_id: str) -> tuple[list[str], list[str]]:
    filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_CONTROLPLANE}={controlplane_id}"]}
    containers = [c.name or c.id for c in client.containers.list(all=True, filters=filters)]
    networks = [n.name or n.id for n in client.networks.list(filters=filters)]
    return containers, networks


@pytest.fixture
def docker_sweep(docker_client: docker.DockerClient, controlplane_id: str) -> Iterator[None]:
    """Destroy whatever this test's control plane left behind, and name it on failure."""
    yield
    containers, networks = labelled(docker_client, controlplane_id)
    filters = {"label": [f"{LABEL_CONTROLPLANE}={controlplane_id}"]}
    for c in docker_client.containers.list(all=True, filters=filters):
        c.remove(force=True)
    for n in docker_client.networks.list(filters=filters):
        n.remove()
    HostFirewall.remove_plane(controlplane_id)  # its host firewall chains, if it left any
    if containers or networks:
        print(f"swept leftovers of {controlplane_id}: containers={containers} networks={networks}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "paddock"
