"""Docker backend on the docker SDK. Blocking SDK calls run in worker threads.

Each runner gets its own `--internal` bridge network with a small subnet of the runner pool
(172.31.0.0/16 by default, outside Docker's own address pools) and a bridge named after it
(`firewall.HostFirewall.bridge_name`): the host firewall matches runner traffic by that name.
The runner's address is fixed when its container is created, so the control plane records it
before the runner can send a single packet: the gateway and the egress proxy accept the
runner's token from that address only. The container is started by the first probe, after
the service has stored that reference.

Hardening for both sandbox levels (runc, or gVisor's runsc): every capability dropped,
no-new-privileges, Docker's default seccomp profile, a non-root user, an init process, pids,
memory (no swap) and CPU limits, the root filesystem read-only where the profile says so,
tmpfs for /tmp and $HOME, capped logs, and runners preferred by the host's OOM killer. The init
is the images' own tini as PID 1: Docker's `--init` would nest a second one, and gVisor lacks
the subreaper call that would keep that one quiet.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import anyio
import docker
import docker.errors
import httpx
from docker.models.containers import Container
from docker.models.networks import Network
from docker.types import LogConfig

from paddock_core import BackendError

from .base import (
    LABEL_CONTROLPLANE,
    LABEL_EXPIRES,
    LABEL_MANAGED,
    LABEL_ORG,
    LABEL_POOL,
    LABEL_RUNNER,
    BackendCapabilities,
    ObservedRunner,
    ProbeResult,
    RunnerSpec,
)
from .firewall import HostFirewall
from .kernel_log import KernelLog, cgroup_exhaustion

__all__ = ["AGENT_PORT", "DockerBackend"]

logger = logging.getLogger(__name__)

AGENT_PORT = 18789
_AGENT_UID = 10001
_SUBNET_ATTEMPTS = 32


class DockerBackend:
    name = "docker"

    def __init__(
        self,
        *,
        controlplane_id: str,
        gateway_port: int,
        gateway_url: str | None = None,
        egress_port: int | None = None,
        dns_port: int = 8053,
        nflog_group: int | None = None,
        runner_pool: str = "172.31.0.0/16",
        subnet_prefix: int = 28,
        firewall: bool = True,
        kernel_log: str | None = "/dev/kmsg",
        client_factory: Callable[[], docker.DockerClient] = docker.from_env,
    ) -> None:
        self._controlplane_id = controlplane_id
        self._gateway_port = gateway_port
        self._gateway_url = gateway_url
        self._egress_port = egress_port
        self._pool = ipaddress.IPv4Network(runner_pool)
        self._prefix = subnet_prefix
        if not self._pool.prefixlen <= subnet_prefix <= 29:
            raise BackendError(f"runner subnets /{subnet_prefix} do not fit pool {runner_pool}")
        ports = (gateway_port,) + ((egress_port,) if egress_port else ())
        self._firewall = HostFirewall(controlplane_id, runner_pool, ports, dns_port, nflog_group)
        self._use_firewall = firewall
        self._kernel = KernelLog(kernel_log) if kernel_log else None
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0))
        self._runtimes: frozenset[str] | None = None
        self._subnet_lock = threading.Lock()

    async def _docker(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = await anyio.to_thread.run_sync(self._client_factory)
                info = await anyio.to_thread.run_sync(self._client.info)
            except docker.errors.DockerException as exc:
                raise BackendError(f"cannot reach the Docker engine: {exc}") from exc
            self._runtimes = frozenset(info.get("Runtimes", {}))
        return self._client

    @property
    def capabilities(self) -> BackendCapabilities:
        runtimes = self._runtimes if self._runtimes is not None else frozenset({"runc", "runsc"})
        sandboxes = {"hardened"} | ({"gvisor"} if "runsc" in runtimes else set())
        return BackendCapabilities(sandboxes=frozenset(sandboxes), pause=True, pool=True)

    @property
    def firewall(self) -> HostFirewall:
        return self._firewall

    async def start(self) -> None:
        """Connect to the engine, install the host firewall, open the kernel log."""
        await self._docker()
        if self._use_firewall:
            await anyio.to_thread.run_sync(self._firewall.install)
        else:
            logger.warning("runner firewall disabled: runners can reach every port of this host")
        if self._kernel is not None and not self._kernel.open():
            self._kernel = None

    def _labels(self, spec: RunnerSpec) -> dict[str, str]:
        labels = {
            LABEL_MANAGED: "true",
            LABEL_RUNNER: spec.runner_id,
            LABEL_CONTROLPLANE: self._controlplane_id,
            LABEL_ORG: spec.org_id,
        }
        if spec.expires_at is not None:
            labels[LABEL_EXPIRES] = str(int(spec.expires_at))
        if spec.pool is not None:
            labels[LABEL_POOL] = spec.pool
        return labels

    async def provision(self, spec: RunnerSpec) -> dict[str, Any]:
        """Create the runner's network and container (started by the first `probe`)."""
        client = await self._docker()
        try:
            return await anyio.to_thread.run_sync(self._provision_sync, client, spec)
        except docker.errors.ImageNotFound as exc:
            raise BackendError(
                f"runner image {spec.image!r} is not built", reason="image_missing"
            ) from exc
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker could not create the runner: {exc}") from exc

    def _provision_sync(self, client: docker.DockerClient, spec: RunnerSpec) -> dict[str, Any]:
        name = f"paddock-{spec.runner_id}"
        labels = self._labels(spec)
        network = self._network(client, name, labels, self._firewall.bridge_name(spec.runner_id))
        subnet = ipaddress.IPv4Network(network.attrs["IPAM"]["Config"][0]["Subnet"])
        gateway_ip, address = str(subnet[1]), str(subnet[2])
        gateway_url = self._gateway_url or f"http://{gateway_ip}:{self._gateway_port}/v1"
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            container = client.containers.create(
                spec.image,
                name=name,
                hostname="runner",
                labels=labels,
                environment=self._environment(spec, gateway_ip, gateway_url),
                network=name,
                networking_config={name: client.api.create_endpoint_config(ipv4_address=address)},
                dns=[gateway_ip if self._use_firewall else "127.0.0.1"],
                **self._hardening(spec),
            )
        return {
            "container_id": container.id,
            "container_name": name,
            "network_id": network.id,
            "address": address,
            "gateway_ip": gateway_ip,
            "gateway_url": gateway_url,
        }

    async def claim_env(self, spec: RunnerSpec, ref: dict[str, Any]) -> dict[str, str]:
        """What a claimed pooled runner is handed: its secrets and the proxy built from them."""
        return self._environment(spec, ref["gateway_ip"], ref["gateway_url"])

    def _environment(self, spec: RunnerSpec, gateway_ip: str, gateway_url: str) -> dict[str, str]:
        env = {**spec.env, "PADDOCK_GATEWAY_URL": gateway_url}
        token = spec.env.get("PADDOCK_RUNNER_TOKEN", "")
        if spec.profile.network != "gateway_only" and self._egress_port and token:
            # The token is the runner's only credential; the proxy takes it from this address.
            credentials = f"{quote(spec.runner_id)}:{quote(token, safe='')}"
            proxy = f"http://{credentials}@{gateway_ip}:{self._egress_port}"
            for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[key] = proxy
            env["NO_PROXY"] = env["no_proxy"] = gateway_ip  # the gateway is reached directly
            env["NODE_USE_ENV_PROXY"] = "1"
            env["PADDOCK_EGRESS_PROXY"] = proxy
        return env

    def _hardening(self, spec: RunnerSpec) -> dict[str, Any]:
        profile, res = spec.profile, spec.profile.resources
        tmpfs = {
            "/tmp": "rw,nosuid,nodev,size=256m",
            "/home/agent": f"rw,nosuid,nodev,size=512m,uid={_AGENT_UID},gid={_AGENT_UID}",
        }
        if profile.filesystem.workspace_writable:
            tmpfs["/workspace"] = f"rw,nosuid,nodev,size=1g,uid={_AGENT_UID},gid={_AGENT_UID}"
        return {
            "user": f"{_AGENT_UID}:{_AGENT_UID}",
            "read_only": profile.filesystem.root_read_only,
            "tmpfs": tmpfs,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "pids_limit": res.pids,
            "mem_limit": f"{res.memory_mb}m",
            "memswap_limit": f"{res.memory_mb}m",
            "nano_cpus": int(res.cpus * 1e9),
            "oom_score_adj": 500,
            "log_config": LogConfig(type="json-file", config={"max-size": "5m", "max-file": "2"}),
            "runtime": spec.sandbox.runtime,
        }

    def _network(
        self, client: docker.DockerClient, name: str, labels: dict[str, str], bridge: str
    ) -> Network:
        """The runner's network: an existing one (a repeated provision), or a new subnet."""
        try:
            network = client.networks.get(name)
            network.reload()
            return network
        except docker.errors.NotFound:
            pass
        with self._subnet_lock:
            for _ in range(_SUBNET_ATTEMPTS):
                subnet = self._free_subnet(client)
                try:
                    network = client.networks.create(
                        name,
                        driver="bridge",
                        internal=True,
                        labels=labels,
                        ipam=docker.types.IPAMConfig(
                            pool_configs=[
                                docker.types.IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))
                            ]
                        ),
                        options={
                            "com.docker.network.bridge.enable_icc": "false",
                            "com.docker.network.bridge.name": bridge,
                        },
                    )
                except docker.errors.APIError as exc:
                    if "overlap" in str(exc).lower():  # another plane took it meanwhile
                        continue
                    raise
                network.reload()
                return network
        raise BackendError(f"no free runner subnet in {self._pool}", reason="no_subnet")

    def _free_subnet(self, client: docker.DockerClient) -> ipaddress.IPv4Network:
        taken: list[ipaddress.IPv4Network] = []
        for net in client.networks.list():
            for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                try:
                    found = ipaddress.ip_network(cfg.get("Subnet", ""))
                except ValueError:
                    continue
                if isinstance(found, ipaddress.IPv4Network) and found.overlaps(self._pool):
                    taken.append(found)
        count = 1 << (self._prefix - self._pool.prefixlen)
        start = random.randrange(count)  # planes sharing a pool rarely race for one subnet
        size = 1 << (32 - self._prefix)
        for i in range(count):
            base = int(self._pool.network_address) + ((start + i) % count) * size
            candidate = ipaddress.IPv4Network((base, self._prefix))
            if not any(candidate.overlaps(t) for t in taken):
                return candidate
        raise BackendError(f"no free runner subnet in {self._pool}", reason="no_subnet")

    def agent_url(self, ref: dict[str, Any]) -> str:
        return f"http://{ref['address']}:{AGENT_PORT}"

    async def probe(self, ref: dict[str, Any]) -> ProbeResult:
        client = await self._docker()
        try:
            container = await anyio.to_thread.run_sync(client.containers.get, ref["container_id"])
        except docker.errors.NotFound:
            return ProbeResult("missing", "the runner's container is gone")
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker inspect failed: {exc}") from exc
        if container.status == "created":  # its reference is stored: now it may run
            try:
                await anyio.to_thread.run_sync(container.start)
            except docker.errors.DockerException as exc:
                detail = f"docker could not start it: {exc}"
                return ProbeResult("exited", detail, reason="backend_error")
            return ProbeResult("starting", "started")
        state = container.attrs["State"]
        if state.get("Status") in ("exited", "dead"):
            tail = await anyio.to_thread.run_sync(_log_tail, container)
            oom = bool(state.get("OOMKilled"))
            return ProbeResult(
                "exited",
                tail,
                exit_code=state.get("ExitCode"),
                oom_killed=oom,
                reason=self._exhaustion(container.id or "") or ("oom_killed" if oom else None),
            )
        if state.get("Status") != "running" or not ref.get("address"):
            return ProbeResult("starting", state.get("Status", ""))
        try:
            response = await self._http.get(f"{self.agent_url(ref)}/readyz")
        except httpx.HTTPError as exc:
            return ProbeResult("starting", f"readyz: {type(exc).__name__}")
        if response.status_code == 200:
            return ProbeResult("ready")
        return ProbeResult("starting", f"readyz answered {response.status_code}")

    def _exhaustion(self, container_id: str) -> str | None:
        """`pids_exhausted` or `oom_killed` when the kernel reported it for this container."""
        if self._kernel is not None:
            self._kernel.poll()
            if self._kernel.pids_exhausted(container_id):
                return "pids_exhausted"
            if self._kernel.oom_killed(container_id):
                return "oom_killed"
        return cgroup_exhaustion(container_id)

    async def stop(self, ref: dict[str, Any]) -> None:
        client = await self._docker()

        def _stop() -> None:
            try:
                container = client.containers.get(ref["container_id"])
                if container.status == "paused":  # a frozen process cannot take its SIGTERM
                    container.unpause()
                container.stop(timeout=5)
            except docker.errors.NotFound:
                pass

        try:
            await anyio.to_thread.run_sync(_stop)
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker could not stop the runner: {exc}") from exc

    async def destroy(self, runner_id: str) -> None:
        client = await self._docker()
        try:
            await anyio.to_thread.run_sync(self._destroy_sync, client, runner_id)
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker could not remove the runner: {exc}") from exc

    def _destroy_sync(self, client: docker.DockerClient, runner_id: str) -> None:
        filters: dict[str, Any] = {
            "label": [f"{LABEL_RUNNER}={runner_id}", f"{LABEL_MANAGED}=true"]
        }
        for container in client.containers.list(all=True, filters=filters):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for network in client.networks.list(filters=filters):
            try:
                network.remove()
            except docker.errors.NotFound:
                pass

    async def pause(self, ref: dict[str, Any]) -> None:
        """`docker pause` (the cgroup freezer); pausing a paused runner is a no-op."""
        await self._freeze(ref, pause=True)

    async def resume(self, ref: dict[str, Any]) -> None:
        """`docker unpause`; resuming a running runner is a no-op."""
        await self._freeze(ref, pause=False)

    async def _freeze(self, ref: dict[str, Any], *, pause: bool) -> None:
        client = await self._docker()

        def _act() -> None:
            container = client.containers.get(ref["container_id"])
            if pause and container.status == "running":
                container.pause()
            elif not pause and container.status == "paused":
                container.unpause()

        try:
            await anyio.to_thread.run_sync(_act)
        except docker.errors.NotFound as exc:
            raise BackendError(
                "the runner's container is gone", reason="container_vanished"
            ) from exc
        except docker.errors.DockerException as exc:
            verb = "pause" if pause else "unpause"
            raise BackendError(f"docker could not {verb} the runner: {exc}") from exc

    async def list_runners(self) -> list[ObservedRunner]:
        """This control plane's runners as Docker sees them (containers, and networks left
        without one), with the exhaustion the kernel saw."""
        client = await self._docker()
        filters: dict[str, Any] = {
            "label": [f"{LABEL_MANAGED}=true", f"{LABEL_CONTROLPLANE}={self._controlplane_id}"]
        }

        def _list() -> tuple[list[dict[str, Any]], list[Network]]:
            # The low-level listing: one call, no inspect per container (which races removals).
            containers = client.api.containers(all=True, filters=filters)
            return containers, client.networks.list(filters=filters)

        try:
            containers, networks = await anyio.to_thread.run_sync(_list)
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker could not list runners: {exc}") from exc
        seen = []
        for c in containers:
            labels, status = c.get("Labels") or {}, str(c.get("State", ""))
            seen.append(
                ObservedRunner(
                    runner_id=labels.get(LABEL_RUNNER, ""),
                    controlplane_id=labels.get(LABEL_CONTROLPLANE, ""),
                    status=status,
                    reason=self._exhaustion(c.get("Id", "")) if status == "running" else None,
                    expires_at=_expiry(labels),
                )
            )
        with_container = {o.runner_id for o in seen}
        for n in networks:
            labels = n.attrs.get("Labels") or {}
            if labels.get(LABEL_RUNNER, "") not in with_container:
                seen.append(
                    ObservedRunner(
                        runner_id=labels.get(LABEL_RUNNER, ""),
                        controlplane_id=labels.get(LABEL_CONTROLPLANE, ""),
                        status="network",
                        expires_at=_expiry(labels),
                    )
                )
        return seen

    async def close(self) -> None:
        """Close connections. This plane's firewall rules go only with its last runner network
        (runners outlive a control-plane restart and must stay confined meanwhile)."""
        await self._http.aclose()
        if self._kernel is not None:
            self._kernel.close()
        if self._client is not None:
            client = self._client
            if self._use_firewall:
                await anyio.to_thread.run_sync(self._remove_firewall_if_unused, client)
            await anyio.to_thread.run_sync(client.close)
            self._client = None

    def _remove_firewall_if_unused(self, client: docker.DockerClient) -> None:
        filters = {"label": [f"{LABEL_CONTROLPLANE}={self._controlplane_id}"]}
        try:
            if not client.networks.list(filters=filters):
                self._firewall.remove()
        except (docker.errors.DockerException, BackendError) as exc:
            logger.warning("host firewall rules of this plane left in place: %s", exc)


def _log_tail(container: Container) -> str:
    try:
        raw: bytes = container.logs(tail=8)
    except docker.errors.DockerException:
        return ""
    return raw.decode(errors="replace").strip()[-800:]


def _expiry(labels: dict[str, str]) -> float | None:
    try:
        return float(labels[LABEL_EXPIRES])
    except (KeyError, ValueError):
        return None
