"""The fake's "microVMs": one container per sandbox, and the processes envd runs in it.

All sandboxes of one fake share one `--internal` Docker network with inter-container traffic
off, so a "VM" reaches nothing but the fake's egress listener on the bridge address (and, as
RUNNERS.md warns, whatever else the host serves on that address). Everything is labelled
`io.paddock.fake-e2b=<instance>`; `close()` removes it all.

Processes are `docker exec`s. Each has a reader thread that drains its output into the
subscribers of its events (the envd streams) and survives them: as in E2B, a background
command keeps running when the client that started it goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import docker
import docker.errors

__all__ = ["FAKE_LABEL", "DockerVMs", "ProcessEvent", "VMProcess"]

logger = logging.getLogger(__name__)

FAKE_LABEL = "io.paddock.fake-e2b"

ProcessEvent = tuple[str, bytes | int]
"""("stdout" | "stderr", chunk) or ("end", exit code)."""


@dataclass
class VMProcess:
    """One envd process: `pid` is the fake's (per sandbox), not the host's."""

    pid: int
    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str
    tag: str
    exec_id: str = ""
    exit_code: int | None = None
    subscribers: list[Callable[[ProcessEvent], None]] = field(default_factory=list)

    def emit(self, event: ProcessEvent) -> None:
        if event[0] == "end":
            self.exit_code = int(event[1])
        for deliver in list(self.subscribers):
            deliver(event)


class DockerVMs:
    """Containers standing in for Firecracker microVMs. Blocking Docker calls run in threads."""

    def __init__(
        self, instance: str, client_factory: Callable[[], docker.DockerClient] = docker.from_env
    ) -> None:
        self._instance = instance
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        self.network_name = f"paddock-fake-e2b-{instance}"
        self.gateway_ip = ""

    @property
    def labels(self) -> dict[str, str]:
        return {FAKE_LABEL: self._instance}

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            raise RuntimeError("the fake's VMs are not open")
        return self._client

    async def open(self) -> str:
        """Create the fake's network; return the bridge address the VMs reach the host at."""
        self._client = await anyio.to_thread.run_sync(self._client_factory)
        network = await anyio.to_thread.run_sync(self._create_network)
        self.gateway_ip = str(network.attrs["IPAM"]["Config"][0]["Gateway"])
        return self.gateway_ip

    def _create_network(self) -> Any:
        client = self._docker()
        network = client.networks.create(
            self.network_name,
            driver="bridge",
            internal=True,
            labels=self.labels,
            options={"com.docker.network.bridge.enable_icc": "false"},
        )
        network.reload()
        return network

    async def close(self) -> None:
        if self._client is None:
            return
        await anyio.to_thread.run_sync(self._remove_all)
        await anyio.to_thread.run_sync(self._docker().close)
        self._client = None

    def _remove_all(self) -> None:
        client = self._docker()
        filters: dict[str, str | list[str] | bool] = {"label": f"{FAKE_LABEL}={self._instance}"}
        for container in client.containers.list(all=True, filters=filters):
            with contextlib.suppress(docker.errors.APIError):  # gone, or going (409)
                container.remove(force=True)
        for network in client.networks.list(filters=filters):
            for _ in range(20):  # a container still being removed keeps its endpoint a while
                try:
                    network.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    time.sleep(0.25)

    async def start(
        self,
        sandbox_id: str,
        image: str,
        *,
        memory_mb: int,
        cpu_count: int,
        hosts: dict[str, str],
    ) -> tuple[str, str]:
        """Create and start a VM; return (container id, its address)."""

        def _start() -> tuple[str, str]:
            client = self._docker()
            container = client.containers.run(
                image,
                entrypoint=["/usr/bin/tini", "--", "sleep", "infinity"],
                name=f"paddock-fake-e2b-{sandbox_id}",
                hostname="e2b",
                labels={**self.labels, "io.paddock.fake-e2b.sandbox": sandbox_id},
                network=self.network_name,
                extra_hosts=hosts,
                user="0:0",
                cap_drop=["ALL"],
                cap_add=["CHOWN", "FOWNER", "DAC_OVERRIDE", "SETUID", "SETGID"],
                security_opt=["no-new-privileges:true"],
                mem_limit=f"{memory_mb}m",
                nano_cpus=min(cpu_count, os.cpu_count() or 1) * 10**9,  # as declared, or all
                pids_limit=1024,
                detach=True,
            )
            container.reload()
            address = container.attrs["NetworkSettings"]["Networks"][self.network_name]
            return str(container.id), str(address["IPAddress"])

        return await anyio.to_thread.run_sync(_start)

    async def remove(self, container_id: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.APIError):  # gone, or going (409)
                self._docker().containers.get(container_id).remove(force=True)

        await anyio.to_thread.run_sync(_remove)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Remove a sandbox's container by name (one that failed to start has no id yet)."""

        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._docker().containers.get(f"paddock-fake-e2b-{sandbox_id}").remove(force=True)

        await anyio.to_thread.run_sync(_remove)

    async def pause(self, container_id: str, paused: bool) -> None:
        def _pause() -> None:
            container = self._docker().containers.get(container_id)
            for attempt in range(5):  # cgroup v1's freezer fails now and then under load
                try:
                    (container.pause if paused else container.unpause)()
                    return
                except docker.errors.APIError as exc:
                    if "freeze" not in str(exc) or attempt == 4:
                        raise
                    time.sleep(0.2)

        await anyio.to_thread.run_sync(_pause)

    async def run(self, container_id: str, proc: VMProcess, user: str) -> None:
        """Start `proc` in the VM; its events go to its subscribers from a reader thread."""
        api = self._docker().api
        loop = asyncio.get_running_loop()

        def _create() -> str:
            created = api.exec_create(
                container_id,
                [proc.cmd, *proc.args],
                stdout=True,
                stderr=True,
                environment=proc.envs,
                workdir=proc.cwd or None,
                user=user,
            )
            return str(created["Id"])

        proc.exec_id = await anyio.to_thread.run_sync(_create)
        started = threading.Event()

        def _read() -> None:
            code = -1
            try:
                stream = api.exec_start(proc.exec_id, stream=True, demux=True)
                started.set()
                for out, err in stream:
                    for name, chunk in (("stdout", out), ("stderr", err)):
                        if chunk:
                            loop.call_soon_threadsafe(proc.emit, (name, chunk))
                code = int(api.exec_inspect(proc.exec_id).get("ExitCode") or 0)
            except (docker.errors.DockerException, OSError) as exc:  # the VM went away
                logger.debug("fake e2b: process %s ended with %s", proc.pid, exc)
            finally:
                started.set()
                with contextlib.suppress(RuntimeError):  # the loop may be closed already
                    loop.call_soon_threadsafe(proc.emit, ("end", code))

        threading.Thread(target=_read, name=f"fake-e2b-exec-{proc.pid}", daemon=True).start()
        await anyio.to_thread.run_sync(started.wait, 10.0)

    async def signal(self, proc: VMProcess, signum: int) -> bool:
        """Send `signum` to the process (the host can signal a container's processes)."""

        def _signal() -> bool:
            pid = self._docker().api.exec_inspect(proc.exec_id).get("Pid") or 0
            if not pid:
                return False
            try:
                os.kill(int(pid), signum)
            except ProcessLookupError:
                return False
            return True

        return await anyio.to_thread.run_sync(_signal)
