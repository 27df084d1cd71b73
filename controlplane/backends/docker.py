"""Docker backend on the docker SDK. Blocking SDK calls run in worker threads.

Each runner gets its own `--internal` bridge network (no route out, nothing else on it), so
runners cannot see each other; the host is reachable from it only at the bridge's gateway
address, where the Paddock gateway listens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import docker
import docker.errors
import httpx
from docker.models.containers import Container

from paddock_core import BackendError

from .base import (
    LABEL_CONTROLPLANE,
    LABEL_MANAGED,
    LABEL_ORG,
    LABEL_RUNNER,
    BackendCapabilities,
    ObservedRunner,
    ProbeResult,
    RunnerSpec,
)

__all__ = ["AGENT_PORT", "DockerBackend"]

logger = logging.getLogger(__name__)

AGENT_PORT = 18789
_AGENT_UID = 10001


class DockerBackend:
    name = "docker"

    def __init__(
        self,
        *,
        controlplane_id: str,
        gateway_port: int,
        gateway_url: str | None = None,
        client_factory: Callable[[], docker.DockerClient] = docker.from_env,
    ) -> None:
        self._controlplane_id = controlplane_id
        self._gateway_port = gateway_port
        self._gateway_url = gateway_url
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0))
        self._runtimes: frozenset[str] | None = None

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
        return BackendCapabilities(sandboxes=frozenset(sandboxes), pause=True)

    async def start(self) -> None:
        """Connect to the engine (so capabilities reflect the real runtimes)."""
        await self._docker()

    def _labels(self, spec: RunnerSpec) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_RUNNER: spec.runner_id,
            LABEL_CONTROLPLANE: self._controlplane_id,
            LABEL_ORG: spec.org_id,
        }

    async def provision(self, spec: RunnerSpec) -> dict[str, Any]:
        client = await self._docker()
        try:
            return await anyio.to_thread.run_sync(self._provision_sync, client, spec)
        except docker.errors.ImageNotFound as exc:
            raise BackendError(
                f"runner image {spec.image!r} is not built", reason="image_missing"
            ) from exc
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker could not start the runner: {exc}") from exc

    def _provision_sync(self, client: docker.DockerClient, spec: RunnerSpec) -> dict[str, Any]:
        name = f"paddock-{spec.runner_id}"
        labels = self._labels(spec)
        network = _get_or_create_network(client, name, labels)
        gateway_ip = network.attrs["IPAM"]["Config"][0]["Gateway"]
        gateway_url = self._gateway_url or f"http://{gateway_ip}:{self._gateway_port}/v1"
        profile, res = spec.profile, spec.profile.resources
        tmpfs = {
            "/tmp": "rw,nosuid,nodev,size=256m",
            "/home/agent": f"rw,nosuid,nodev,size=512m,uid={_AGENT_UID},gid={_AGENT_UID}",
        }
        if profile.filesystem.workspace_writable:
            tmpfs["/workspace"] = f"rw,nosuid,nodev,size=1g,uid={_AGENT_UID},gid={_AGENT_UID}"
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            container = client.containers.create(
                spec.image,
                name=name,
                hostname="runner",
                labels=labels,
                environment={**spec.env, "PADDOCK_GATEWAY_URL": gateway_url},
                user=f"{_AGENT_UID}:{_AGENT_UID}",
                read_only=profile.filesystem.root_read_only,
                tmpfs=tmpfs,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                pids_limit=res.pids,
                mem_limit=f"{res.memory_mb}m",
                memswap_limit=f"{res.memory_mb}m",
                nano_cpus=int(res.cpus * 1e9),
                runtime=spec.sandbox.runtime,
                network=name,
                detach=True,
            )
        if container.status != "running":
            container.start()
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        return {
            "container_id": container.id,
            "container_name": name,
            "network_id": network.id,
            "address": address,
            "gateway_url": gateway_url,
        }

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
        state = container.attrs["State"]
        if state.get("Status") in ("exited", "dead"):
            tail = await anyio.to_thread.run_sync(_log_tail, container)
            return ProbeResult(
                "exited",
                tail,
                exit_code=state.get("ExitCode"),
                oom_killed=bool(state.get("OOMKilled")),
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

    async def stop(self, ref: dict[str, Any]) -> None:
        client = await self._docker()

        def _stop() -> None:
            try:
                client.containers.get(ref["container_id"]).stop(timeout=5)
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

    async def list_runners(self) -> list[ObservedRunner]:
        client = await self._docker()
        filters: dict[str, Any] = {"label": [f"{LABEL_MANAGED}=true"]}
        containers = await anyio.to_thread.run_sync(
            lambda: client.containers.list(all=True, filters=filters)
        )
        return [
            ObservedRunner(
                runner_id=c.labels.get(LABEL_RUNNER, ""),
                controlplane_id=c.labels.get(LABEL_CONTROLPLANE, ""),
                status=c.status,
            )
            for c in containers
        ]

    async def close(self) -> None:
        await self._http.aclose()
        if self._client is not None:
            await anyio.to_thread.run_sync(self._client.close)
            self._client = None


def _get_or_create_network(client: docker.DockerClient, name: str, labels: dict[str, str]) -> Any:
    try:
        network = client.networks.get(name)
    except docker.errors.NotFound:
        network = client.networks.create(
            name,
            driver="bridge",
            internal=True,
            labels=labels,
            options={"com.docker.network.bridge.enable_icc": "false"},
        )
    network.reload()
    return network


def _log_tail(container: Container) -> str:
    try:
        raw: bytes = container.logs(tail=8)
    except docker.errors.DockerException:
        return ""
    return raw.decode(errors="replace").strip()[-800:]
