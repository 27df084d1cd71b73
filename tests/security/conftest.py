"""A whole confined Paddock on real Docker, per sandbox level, with stand-ins for the world.

One stack per sandbox level (module-scoped, parametrized): gateway, egress proxy (its DNS
stub, its firewall-refusal listener) and control plane, on this machine; the control plane
listens on all addresses, as the worst case the host firewall must hold against. The stand-in
provider is the gateway's `fake` provider and a registered provider host. Runners are the
probe image; the same runner serves several tests where nothing it does changes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.firewall import HostFirewall
from egress import EgressServer, EgressSettings
from gateway import GatewaySettings, create_gateway
from paddock_core import DEFAULT_POLICIES_DIR
from tests.conftest import PROBE_IMAGE, labelled, require_image
from tests.security.standins import StandIns, stand_ins
from tests.support.servers import serve_app

ADMIN_KEY = "pdk_security_admin_key"
LEVELS = ["hardened", "gvisor"]
_POLL_S = 0.1


@dataclass
class Runner:
    id: str
    profile: str
    address: str
    gateway_ip: str
    token: str
    session_id: str = ""


@dataclass
class Sec:
    """The stack of one sandbox level, and helpers to drive runners in it."""

    level: str
    api: httpx.Client
    docker: docker.DockerClient
    world: StandIns
    controlplane_id: str
    gateway_port: int
    cp_port: int
    egress_port: int
    listener_port: int
    listener_seen: list[str]
    """Addresses that connected to the host listener (on all addresses, port listener_port)."""
    runners: dict[str, Runner] = field(default_factory=dict)

    # --- runners ----------------------------------------------------------------------

    def runner(self, profile: str, key: str | None = None, **egress: Any) -> Runner:
        """A ready probe runner of `profile` (cached under `key`); `egress` replaces its rules."""
        key = key or profile
        if key in self.runners:
            if egress:
                self.set_egress(self.runners[key], **egress)
            return self.runners[key]
        body = {"profile": profile, "sandbox": self.level, "image": "probe", "budget_usd": 1.0}
        created = self.api.post("/v1/runners", json=body)
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        state = self.wait_state(rid, {"ready", "failed"}, 120)
        assert state["state"] == "ready", state
        attrs = self.docker.containers.get(f"paddock-{rid}").attrs
        env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
        network = attrs["NetworkSettings"]["Networks"][f"paddock-{rid}"]
        runner = Runner(
            rid,
            profile,
            network["IPAddress"],
            network["Gateway"],
            env["PADDOCK_RUNNER_TOKEN"],
        )
        if egress:
            self.set_egress(runner, **egress)
        runner.session_id = self.api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
        self.runners[key] = runner
        return runner

    def set_egress(self, runner: Runner, **rules: Any) -> dict[str, Any]:
        put = self.api.put(f"/v1/runners/{runner.id}/egress", json=rules)
        assert put.status_code == 200, put.text
        result: dict[str, Any] = put.json()
        return result

    def wait_state(self, rid: str, states: set[str], timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        runner: dict[str, Any] = {}
        while time.monotonic() < deadline:
            runner = self.api.get(f"/v1/runners/{rid}").json()
            if runner["state"] in states:
                return runner
            time.sleep(_POLL_S)
        raise AssertionError(f"runner {rid} never reached {states}: {runner}")

    def message(self, runner: Runner, content: str) -> dict[str, Any]:
        reply = self.api.post(
            f"/v1/sessions/{runner.session_id}/messages",
            json={"content": content, "stream": False},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def probe(self, runner: Runner, **spec: Any) -> dict[str, Any]:
        """Run one `!probe` inside the runner; its JSON result."""
        result: dict[str, Any] = json.loads(
            self.message(runner, "!probe " + json.dumps(spec))["reply"]
        )
        return result

    def via_proxy(
        self, runner: Runner, host: str, port: int, *, connect: bool = False, **extra: Any
    ) -> dict[str, Any]:
        """An HTTP GET from inside `runner` through the egress proxy, with its own credentials
        (even when its profile gives it no proxy: it may know the address all the same)."""
        spec = {
            "proxy": f"http://{runner.gateway_ip}:{self.egress_port}",
            "credentials": f"{runner.id}:{runner.token}",
            "host": host,
            "port": port,
            "connect": connect,
            "timeout": 10,
            **extra,
        }
        return self.probe(runner, op="proxy", **spec)

    def decision(self, runner: Runner, timeout_s: float = 10, **match: Any) -> dict[str, Any]:
        return self.wait_event(runner.id, "egress.decision", timeout_s, **match)

    # --- audit ------------------------------------------------------------------------

    def events(self, runner_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.api.get(
            f"/v1/runners/{runner_id}/events", params={"limit": 5000}
        ).json()["events"]
        return events

    def wait_event(
        self, runner_id: str, kind: str, timeout_s: float = 10, **match: Any
    ) -> dict[str, Any]:
        """The first `kind` event of the runner whose data has every `match` item (polled)."""
        deadline = time.monotonic() + timeout_s
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = [e["data"] for e in self.events(runner_id) if e["type"] == kind]
            for data in seen:
                if all(data.get(k) == v for k, v in match.items()):
                    return data
            time.sleep(_POLL_S)
        raise AssertionError(f"no {kind} event of {runner_id} with {match}; saw {seen}")


@contextmanager
def serve_egress(settings: EgressSettings) -> Iterator[EgressServer]:
    """The egress server on its own event loop in a thread (like `serve_app`)."""
    loop = asyncio.new_event_loop()
    server = EgressServer(settings)
    started = threading.Event()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        try:
            await stop.wait()
        finally:
            await server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise RuntimeError("the egress server did not start") from failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()


@contextmanager
def host_listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP service on all addresses of this host, recording who connected."""
    seen: list[str] = []
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, addr = sock.accept()
            except OSError:
                continue
            seen.append(addr[0])
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        done.set()
        thread.join(5)
        sock.close()


def _policies(tmp: Path, world: StandIns) -> Path:
    """The shipped policies, with the stand-ins' networks openable by runner overrides."""
    target = tmp / "policies"
    shutil.copytree(DEFAULT_POLICIES_DIR, target)
    ranges = json.dumps(sorted(world.subnets.values()))
    (target / "egress.yaml").write_text(
        (DEFAULT_POLICIES_DIR / "egress.yaml")
        .read_text()
        .replace("private_ranges: []", f"private_ranges: {ranges}")
    )
    profiles = yaml.safe_load((target / "profiles.yaml").read_text())
    profiles["profiles"]["research"] = CUSTOM_PROFILE
    (target / "profiles.yaml").write_text(yaml.safe_dump(profiles))
    return target


CUSTOM_PROFILE = {
    "description": "A custom profile: its own allowlist, no commands, small limits.",
    "filesystem": {"root_read_only": True, "workspace_writable": True},
    "network": "allowlist",
    "exec": "deny",
    "exec_allowlist": [],
    "openclaw": {"tools_profile": "minimal", "deny": ["group:runtime"]},
    "resources": {"memory_mb": 512, "pids": 128, "cpus": 0.5},
    "egress": {"allow": ["outside.test:8080"], "deny": []},
}


@contextmanager
def confined_stack(
    level: str,
    client: docker.DockerClient,
    tmp: Path,
    *,
    provider_key: str | None = None,
    ready_timeout_s: float = 120,
) -> Iterator[Sec]:
    """Stand-ins, egress server, gateway and control plane for one sandbox level.

    `provider_key`: the gateway's key for the stand-in provider (it must never reach a runner).
    """
    require_image(client, PROBE_IMAGE)
    cp_id = f"sec-{os.getpid()}-{level}-{random.randrange(10**6)}"
    group = random.randrange(20000, 60000)
    with stand_ins(client) as world, host_listener() as (listener_port, listener_seen):
        policies = _policies(tmp, world)
        provider_url = f"http://{world.hosts['provider'].address}:8080/v1"
        common: dict[str, Any] = {
            "data_dir": tmp / "data",
            "admin_key": ADMIN_KEY,
            "policies_dir": policies,
        }
        egress_settings = EgressSettings(
            **common,
            egress_host="0.0.0.0",
            egress_port=0,
            egress_dns_port=0,
            egress_nflog_group=group,
            egress_resolver=f"{world.hosts['resolver'].address}:5353",
            egress_provider_hosts=["provider.test"],
            provider_base_urls={"fake": provider_url},
            egress_audit_window_s=0.5,
        )
        keys = {"fake": provider_key} if provider_key else {}
        gw_settings = GatewaySettings(
            **common, provider_base_urls={"fake": provider_url}, provider_keys=keys
        )
        with (
            serve_egress(egress_settings) as egress,
            serve_app(create_gateway(gw_settings), host="0.0.0.0") as gw_url,
        ):
            gw_port = int(gw_url.rsplit(":", 1)[1])
            cp_settings = ControlPlaneSettings(
                **common,
                backend="docker",
                controlplane_id=cp_id,
                gateway_port=gw_port,
                egress_port=egress.proxy_port,
                egress_dns_port=egress.dns_port,
                egress_nflog_group=group,
                egress_provider_hosts=["provider.test"],
                probe_interval_s=0.05,
                watch_interval_s=0.25,
                ready_timeout_s=ready_timeout_s,
            )
            try:
                with serve_app(create_app(cp_settings), host="0.0.0.0") as cp_url:
                    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
                    with httpx.Client(base_url=cp_url, headers=headers, timeout=60) as api:
                        yield Sec(
                            level=level,
                            api=api,
                            docker=client,
                            world=world,
                            controlplane_id=cp_id,
                            gateway_port=gw_port,
                            cp_port=int(cp_url.rsplit(":", 1)[1]),
                            egress_port=egress.proxy_port,
                            listener_port=listener_port,
                            listener_seen=listener_seen,
                        )
                        for runner in api.get("/v1/runners").json()["runners"]:
                            api.delete(f"/v1/runners/{runner['id']}")
            finally:
                _sweep(client, cp_settings)


@pytest.fixture(scope="module", params=LEVELS)
def sec(
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sec]:
    level: str = request.param
    with confined_stack(level, docker_client, tmp_path_factory.mktemp(f"sec-{level}")) as stack:
        yield stack


def _sweep(client: docker.DockerClient, settings: ControlPlaneSettings) -> None:
    filters = {"label": [f"io.paddock.controlplane-id={settings.controlplane_id}"]}
    for c in client.containers.list(all=True, filters=filters):
        c.remove(force=True)
    for n in client.networks.list(filters=filters):
        n.remove()
    HostFirewall.remove_plane(settings.controlplane_id)
    left = labelled(client, settings.controlplane_id)
    assert left == ([], []), f"left behind: {left}"
