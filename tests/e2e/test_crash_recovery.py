"""kill -9 of the control plane during each transition, then a restart on the same store:
no orphan container or network, every runner in a consistent state, the audit trail says
what happened. `paddock serve` runs as a subprocess of this worktree's code."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from controlplane.backends import LABEL_CONTROLPLANE, LABEL_POOL, LABEL_RUNNER
from tests.conftest import PROBE_IMAGE, labelled, require_image

KEY = "pdk_crash_admin_key"
ROOT = Path(__file__).resolve().parents[2]
STABLE = {"ready", "running", "suspended", "stopped", "failed", "pooled"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Plane:
    """`paddock serve` on free loopback ports, restartable on the same data dir."""

    def __init__(self, data_dir: Path, cp_id: str, **env: str) -> None:
        self.port = _port()
        self.log = data_dir / "serve.log"
        self.env = {
            **os.environ,
            "PADDOCK_ADMIN_KEY": KEY,
            "PADDOCK_DATA_DIR": str(data_dir),
            "PADDOCK_PORT": str(self.port),
            "PADDOCK_GATEWAY_PORT": str(_port()),
            "PADDOCK_FAKE_PROVIDER_PORT": str(_port()),
            "PADDOCK_EGRESS_PORT": str(_port()),
            "PADDOCK_EGRESS_DNS_PORT": str(_port()),
            "PADDOCK_CONTROLPLANE_ID": cp_id,
            "PADDOCK_WATCH_INTERVAL_S": "0.3",
            "PADDOCK_PROBE_INTERVAL_S": "0.05",
            "PADDOCK_READY_TIMEOUT_S": "60",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        )

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "paddock", "serve", "--fake-provider"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.api.get("/healthz", timeout=1).status_code == 200:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"paddock serve did not start:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.api.close()


@pytest.fixture
def plane_factory(
    tmp_path: Path, controlplane_id: str, docker_client: docker.DockerClient, docker_sweep: None
) -> Iterator[Callable[..., Plane]]:
    require_image(docker_client, PROBE_IMAGE)
    planes: list[Plane] = []

    def make(**env: str) -> Plane:
        data = tmp_path / "paddock"
        data.mkdir(exist_ok=True)
        plane = Plane(data, controlplane_id, **env)
        planes.append(plane)
        plane.start()
        return plane

    yield make
    for plane in planes:
        plane.close()


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = check()
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def state(api: httpx.Client, rid: str) -> str | None:
    answer = api.get(f"/v1/runners/{rid}")
    return None if answer.status_code == 404 else str(answer.json()["state"])


def kill_when(plane: Plane, seen: Callable[[], bool], limit_s: float = 30.0) -> bool:
    """kill -9 the plane as soon as `seen()` (polled tightly); True if it was seen first."""
    deadline = time.monotonic() + limit_s
    caught = False
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if seen():
                caught = True
                break
        time.sleep(0.002)
    plane.kill9()
    return caught


def in_background(call: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the plane dies under it
            call()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_consistent(plane: Plane, client: docker.DockerClient, cp_id: str) -> None:
    """Every labelled container and network belongs to a runner the store keeps; none is
    stuck in a transition; the audit chain verifies."""
    filters = {"label": [f"{LABEL_CONTROLPLANE}={cp_id}"]}
    for resource in [
        *client.containers.list(all=True, filters=filters),
        *client.networks.list(filters=filters),
    ]:
        labels = resource.labels if hasattr(resource, "labels") else resource.attrs["Labels"]
        rid = labels[LABEL_RUNNER]
        if labels.get(LABEL_POOL) and state(plane.api, rid) is None:
            continue  # unclaimed pooled runners belong to no org; the pool test counts them
        assert state(plane.api, rid) in STABLE, f"{rid} has a leftover {resource.name}"
    for runner in plane.api.get("/v1/runners").json()["runners"]:
        assert runner["state"] in STABLE, runner
    assert plane.api.get("/v1/audit/verify").json()["ok"] is True


def moves(plane: Plane, rid: str) -> list[tuple[str, str, str]]:
    return [
        (e["data"]["from"], e["data"]["to"], e["actor"])
        for e in plane.api.get(f"/v1/runners/{rid}/events").json()["events"]
        if e["type"] == "runner.state_changed"
    ]


def delete_all(plane: Plane, client: docker.DockerClient, cp_id: str) -> None:
    for runner in plane.api.get("/v1/runners").json()["runners"]:
        assert plane.api.delete(f"/v1/runners/{runner['id']}").status_code == 204
    assert labelled(client, cp_id) == ([], [])


def test_kill_during_provisioning(
    plane_factory: Callable[..., Plane], docker_client: docker.DockerClient, controlplane_id: str
) -> None:
    plane = plane_factory()
    body = {"profile": "minimal", "image": "probe"}
    ids = [plane.api.post("/v1/runners", json=body).json()["id"] for _ in range(3)]
    plane.kill9()  # at once: the runners are somewhere between record and container
    plane.start()
    for rid in ids:
        final = wait_for(lambda rid=rid: state(plane.api, rid) in STABLE, f"{rid} settled")
        assert final
        runner = plane.api.get(f"/v1/runners/{rid}").json()
        assert runner["state"] in ("ready", "failed"), runner
        if runner["state"] == "failed":
            assert runner["failure"]["code"] in ("interrupted", "probe_timeout"), runner
        # The restarted plane (actor system) took it out of provisioning.
        assert moves(plane, rid)[-1][0] == "provisioning"
    assert_consistent(plane, docker_client, controlplane_id)
    delete_all(plane, docker_client, controlplane_id)


@pytest.mark.parametrize("action", ["stop", "delete"])
def test_kill_during_stop_or_delete(
    plane_factory: Callable[..., Plane],
    docker_client: docker.DockerClient,
    controlplane_id: str,
    action: str,
) -> None:
    plane = plane_factory()
    rid = plane.api.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()["id"]
    wait_for(lambda: state(plane.api, rid) == "ready", "ready")
    if action == "stop":
        in_background(lambda: plane.api.post(f"/v1/runners/{rid}/stop"))
        caught = kill_when(plane, lambda: state(plane.api, rid) in ("stopping", "stopped"))
    else:
        in_background(lambda: plane.api.delete(f"/v1/runners/{rid}"))
        caught = kill_when(plane, lambda: state(plane.api, rid) in ("deleting", None))
    assert caught
    plane.start()
    if action == "stop":
        wait_for(lambda: state(plane.api, rid) == "stopped", "stopped")
        assert ("stopping", "stopped") in [m[:2] for m in moves(plane, rid)]
        assert docker_client.containers.get(f"paddock-{rid}").status != "running"
    else:
        wait_for(lambda: state(plane.api, rid) is None, "deleted")
        assert ("deleting", "deleted") in [m[:2] for m in moves(plane, rid)]
        assert labelled(docker_client, controlplane_id) == ([], [])
    assert_consistent(plane, docker_client, controlplane_id)
    delete_all(plane, docker_client, controlplane_id)


def test_kill_during_pool_refill(
    plane_factory: Callable[..., Plane], docker_client: docker.DockerClient, controlplane_id: str
) -> None:
    pools = '{"probe/minimal/hardened": 2}'
    plane = plane_factory(PADDOCK_POOLS=pools, PADDOCK_POOL_REFILL_PARALLEL="2")
    filters = {"label": [f"{LABEL_CONTROLPLANE}={controlplane_id}", LABEL_POOL]}

    def pool_containers() -> list[Any]:
        # The restarted plane sweeps orphans: one may vanish between listing and inspecting.
        for _ in range(10):
            with contextlib.suppress(docker.errors.NotFound):
                return list(docker_client.containers.list(all=True, filters=filters))
        return list(docker_client.containers.list(all=True, filters=filters))

    assert kill_when(plane, lambda: bool(pool_containers()))
    plane.start()

    claimed: set[str] = set()

    def two_warm() -> bool:  # claimed runners keep the pool label (labels cannot change)
        found = [c for c in pool_containers() if c.labels[LABEL_RUNNER] not in claimed]
        status = plane.api.get("/v1/pools").json()["pools"]
        return len(found) == 2 and status[0]["warm"] == 2

    wait_for(two_warm, "exactly two running pooled containers")
    # A claim from the refilled pool works end to end.
    created = plane.api.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()
    assert created["pool"] == "probe/minimal/hardened"
    claimed.add(created["id"])
    wait_for(lambda: state(plane.api, created["id"]) == "ready", "claimed runner ready")
    wait_for(two_warm, "the pool refilled to two")
    assert_consistent(plane, docker_client, controlplane_id)
