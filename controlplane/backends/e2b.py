"""E2B backend: runners in Firecracker microVMs (E2B, managed), on the `e2b` SDK's async client.

One runner is one sandbox of the template made for its image (runner_images/e2b). Provision
creates it with the runner's metadata (labels below: `list_runners` re-adopts by them after a
restart), the network fence of `e2b_policy` and a lease (`lease_s`) for a timeout; root then
prepares the filesystem and the runner starts as a background command (no 60 s cut-off) with
the runner contract's environment. The agent answers at `https://18789-{sandbox}.{domain}`,
reached through `agent_transport()` (the sandbox's traffic token; with `sandbox_url`, E2B's
shared host and the `E2b-Sandbox-*` headers, as the SDK itself does for envd).

Leases: a sandbox lives `lease_s` past its last renewal; each `list_runners` (the control
plane's watch, about every second) renews those past half their lease, so runners of a plane
that died go away by themselves. Creates are paced (`creates_per_s`) and retried with backoff
on 429 (`create_attempts`); the SDK retries other calls itself. Stop kills (a stopped runner is
never resumed); `pause`/`resume` keep a runner's memory for later.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from e2b import (
    E2B,
    AsyncCommandHandle,
    AsyncSandbox,
    AuthenticationException,
    RateLimitException,
    SandboxInfo,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)
from e2b.connection_config import ApiParams
from e2b.exceptions import NotFoundException
from e2b.sandbox.sandbox_api import SandboxNetworkOpts, SandboxNetworkUpdate

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
from .e2b_policy import (
    MICROVM,
    RUNNER_COMMANDS,
    E2BConfinement,
    E2BTemplate,
    backend_error,
    runner_templates,
)
from .e2b_transport import AgentTransport

__all__ = ["AGENT_PORT", "RUNNER_COMMANDS", "E2BBackend", "E2BTemplate", "runner_templates"]

logger = logging.getLogger(__name__)

AGENT_PORT = 18789
_TAIL_LINES = 12
_MAX_PAGES = 50
_PREPARE_TIMEOUT_S = 60


@dataclass
class _Run:
    """The runner process this plane started: its handle and the tail of its output."""

    handle: AsyncCommandHandle[Any]
    tail: deque[str]


class E2BBackend:
    name = "e2b"

    def __init__(
        self,
        *,
        controlplane_id: str,
        gateway_url: str,
        templates: Mapping[str, E2BTemplate],
        api_key: str | None,
        api_url: str | None = None,
        domain: str | None = None,
        sandbox_url: str | None = None,
        egress_proxy_url: str | None = None,
        public_traffic: bool = False,
        inject_token: bool = True,
        dns_servers: list[str] | None = None,
        lease_s: int = 600,
        request_timeout_s: float = 30.0,
        creates_per_s: float = 5.0,
        create_attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 16.0,
    ) -> None:
        if not api_key:
            raise BackendError("the e2b backend needs an API key (PADDOCK_E2B_API_KEY)")
        self._controlplane_id = controlplane_id
        self._templates = dict(templates)
        self._policy = E2BConfinement(
            gateway_url=gateway_url,
            egress_proxy_url=egress_proxy_url,
            public_traffic=public_traffic,
            inject_token=inject_token,
            dns_servers=dns_servers,
        )
        # debug pinned off: E2B_DEBUG in the environment would make every create a no-op.
        params = ApiParams(api_key=api_key, request_timeout=request_timeout_s, debug=False)
        if api_url:
            params["api_url"] = api_url
        if domain:
            params["domain"] = domain
        if sandbox_url:
            params["sandbox_url"] = sandbox_url
        self._sdk = E2B(**params).AsyncSandbox
        self._domain = domain or "e2b.app"
        self._sandbox_url = sandbox_url
        self._lease_s = lease_s
        self._create_interval_s = 1.0 / creates_per_s
        self._create_attempts = create_attempts
        self._backoff = (backoff_s, backoff_max_s)
        self._last_create = 0.0
        self._create_lock = asyncio.Lock()
        self._runs: dict[str, _Run] = {}
        self._traffic: dict[str, str] = {}
        self._domains = {self._domain}
        self._http = httpx.AsyncClient(transport=self.agent_transport(), timeout=httpx.Timeout(5.0))

    @property
    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(
            sandboxes=frozenset({MICROVM}), pause=True, pool=True, networks=self._policy.networks
        )

    async def claim_env(self, spec: RunnerSpec, ref: dict[str, Any]) -> dict[str, str]:
        """A claimed pooled sandbox: E2B's network rules are replaced by the claimed runner's
        (its token in the gateway's header rule, its proxy credentials), then the agent is
        handed the same environment a runner created for it would have started with."""
        template = self._templates.get(spec.image)
        if template is None:
            raise BackendError(f"no E2B template for image {spec.image!r}", reason="image_missing")
        plan = self._policy.plan(spec.profile, spec.env, spec.runner_id, template.user)
        update = SandboxNetworkUpdate(
            allow_out=plan.network["allow_out"], deny_out=plan.network["deny_out"]
        )
        if "rules" in plan.network:
            update["rules"] = plan.network["rules"]
        try:
            await self._sdk.update_network(ref["sandbox_id"], update)
        except Exception as exc:
            raise backend_error(exc, "give the claimed runner its network rules") from exc
        return plan.env

    def _metadata(self, spec: RunnerSpec) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_RUNNER: spec.runner_id,
            LABEL_CONTROLPLANE: self._controlplane_id,
            LABEL_ORG: spec.org_id,
        }

    # --- provision --------------------------------------------------------------------------

    async def provision(self, spec: RunnerSpec) -> dict[str, Any]:
        """Create the sandbox, prepare it and start the runner in it."""
        refusal = self._policy.refusal(spec.profile, spec.sandbox)
        if refusal:
            raise BackendError(refusal, reason="unsupported_profile")
        template = self._templates.get(spec.image)
        if template is None:
            known = sorted(self._templates)
            raise BackendError(
                f"no E2B template for image {spec.image!r} (known: {known})",
                reason="image_missing",
            )
        plan = self._policy.plan(spec.profile, spec.env, spec.runner_id, template.user)
        sandbox = await self._create(spec, template, plan.network)
        sandbox_id = sandbox.sandbox_id
        if sandbox.traffic_access_token:
            self._traffic[sandbox_id] = sandbox.traffic_access_token
        try:
            info = await self._sdk.get_info(sandbox_id)
            too_big = self._policy.size_refusal(spec.profile, info.cpu_count, info.memory_mb)
            if too_big:
                raise BackendError(too_big, reason="unsupported_profile")
            await sandbox.commands.run(plan.prepare, user="root", timeout=_PREPARE_TIMEOUT_S)
            pid = await self._start(sandbox, template, plan.env)
        except BackendError:
            await self._kill(sandbox_id)
            raise
        except Exception as exc:
            await self._kill(sandbox_id)
            raise backend_error(exc, "start the runner in its sandbox") from exc
        return {
            "sandbox_id": sandbox_id,
            "domain": sandbox.sandbox_domain,
            "template": template.name,
            "traffic_token": sandbox.traffic_access_token,
            "pid": pid,
            "enforced": plan.enforced,
            # No fixed source address: the egress proxy knows this runner by its credentials.
            "egress_auth": "credentials",
        }

    async def _create(
        self, spec: RunnerSpec, template: E2BTemplate, network: SandboxNetworkOpts
    ) -> AsyncSandbox:
        """Create the sandbox, paced and retried on 429; idempotent per runner id."""
        key = "paddock-" + re.sub(r"[^a-z0-9-]", "-", spec.runner_id.lower())
        base, cap = self._backoff
        started = time.monotonic()
        for attempt in range(1, self._create_attempts + 1):
            await self._pace()
            try:
                return await self._sdk.create(
                    template=template.name,
                    timeout=self._lease_s,
                    metadata=self._metadata(spec),
                    network=network,
                    lifecycle={"on_timeout": "kill"},
                    idempotency_key=key,
                    retries=0,  # 429s are retried here, with backoff and a log line each
                )
            except RateLimitException as exc:
                if attempt == self._create_attempts:
                    waited = time.monotonic() - started
                    raise BackendError(
                        f"E2B kept refusing to create the sandbox after {attempt} attempts over "
                        f"{waited:.1f} s (creates per second or concurrent sandboxes): {exc}",
                        reason="e2b_rate_limited",
                    ) from exc
                delay = min(cap, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                logger.warning(
                    "E2B rate-limited the create of %s (attempt %d/%d); retrying in %.1f s: %s",
                    spec.runner_id,
                    attempt,
                    self._create_attempts,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
            except NotFoundException as exc:
                raise BackendError(
                    f"E2B has no template {template.name!r} (build runner_images/e2b): {exc}",
                    reason="image_missing",
                ) from exc
            except Exception as exc:
                raise backend_error(exc, "create the sandbox") from exc
        raise AssertionError("unreachable")

    async def _pace(self) -> None:
        async with self._create_lock:
            wait = self._last_create + self._create_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_create = time.monotonic()

    async def _start(
        self, sandbox: AsyncSandbox, template: E2BTemplate, env: dict[str, str]
    ) -> int:
        """Start the runner unless it runs already (a repeated provision); return its pid."""
        for proc in await sandbox.commands.list():
            if proc.cmd == "/bin/bash" and template.command in proc.args:
                return proc.pid
        tail: deque[str] = deque(maxlen=_TAIL_LINES)

        def keep(chunk: str) -> None:
            tail.extend(chunk.splitlines())

        handle = await sandbox.commands.run(
            template.command,
            background=True,
            envs=env,
            user=template.user,
            cwd="/workspace",
            timeout=0,  # the runner lives as long as its sandbox
            on_stdout=keep,
            on_stderr=keep,
            retain_output=False,
        )
        self._runs[sandbox.sandbox_id] = _Run(handle, tail)
        return int(handle.pid)

    # --- the rest of the port ------------------------------------------------------------------

    def agent_url(self, ref: dict[str, Any]) -> str:
        """E2B's URL of the agent's port. Remembers the sandbox's traffic token (no I/O) for
        `agent_transport`, so agents stay reachable after a restart of the control plane."""
        if ref.get("traffic_token"):
            self._traffic[ref["sandbox_id"]] = ref["traffic_token"]
        domain = ref.get("domain") or self._domain
        self._domains.add(domain)
        return f"https://{AGENT_PORT}-{ref['sandbox_id']}.{domain}"

    def agent_transport(self) -> httpx.AsyncBaseTransport:
        return AgentTransport(self._traffic, self._domains, self._sandbox_url)

    async def probe(self, ref: dict[str, Any]) -> ProbeResult:
        sandbox_id = ref["sandbox_id"]
        try:
            info = await self._sdk.get_info(sandbox_id)
        except SandboxNotFoundException:
            return ProbeResult("missing", f"sandbox {sandbox_id} is gone (killed or timed out)")
        except AuthenticationException as exc:  # will not pass by itself
            error = backend_error(exc, "inspect the sandbox")
            return ProbeResult("exited", error.message, reason="e2b_auth")
        except Exception as exc:  # a passing API error: the probe loop asks again
            return ProbeResult("starting", backend_error(exc, "inspect the sandbox").message)
        if info.state == SandboxState.PAUSED:
            return ProbeResult("exited", "the sandbox is paused", reason="sandbox_paused")
        run = self._runs.get(sandbox_id)
        if run is not None and run.handle.exit_code is not None:  # the VM runs, its runner not
            detail = "\n".join(run.tail) or "the runner process ended"
            return ProbeResult("exited", detail[-800:], exit_code=run.handle.exit_code)
        url = f"{self.agent_url(ref)}/readyz"
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            return ProbeResult("starting", f"readyz: {type(exc).__name__}")
        if response.status_code == 200:
            return ProbeResult("ready")
        if run is None and ref.get("pid") and not await self._process_alive(ref):
            return ProbeResult("exited", "the runner process is not running in its sandbox")
        return ProbeResult("starting", f"readyz answered {response.status_code}")

    async def _process_alive(self, ref: dict[str, Any]) -> bool:
        try:
            sandbox = await self._sdk.connect(ref["sandbox_id"])
            return any(p.pid == ref["pid"] for p in await sandbox.commands.list())
        except Exception:  # unknown: do not fail a runner on a passing error
            return True

    async def stop(self, ref: dict[str, Any]) -> None:
        await self._kill(ref["sandbox_id"])

    async def _kill(self, sandbox_id: str) -> None:
        run = self._runs.pop(sandbox_id, None)
        self._traffic.pop(sandbox_id, None)
        try:
            await self._sdk.kill(sandbox_id)  # False when it is gone already
        except Exception as exc:
            raise backend_error(exc, f"kill sandbox {sandbox_id}") from exc
        finally:
            if run is not None:
                await _disconnect(run)

    async def destroy(self, runner_id: str) -> None:
        for info in await self._list({LABEL_MANAGED: "true", LABEL_RUNNER: runner_id}):
            await self._kill(info.sandbox_id)

    async def list_runners(self) -> list[ObservedRunner]:
        """This plane's sandboxes, by metadata; renews the leases of those that run."""
        found = await self._list({LABEL_MANAGED: "true", LABEL_CONTROLPLANE: self._controlplane_id})
        now = time.time()
        observed = []
        for info in found:
            status = info.state.value
            run = self._runs.get(info.sandbox_id)
            if run is not None and run.handle.exit_code is not None:
                status = "exited"  # the VM runs, its runner does not
            elif status == "running" and info.end_at.timestamp() - now < self._lease_s / 2:
                await self._renew(info.sandbox_id)
            observed.append(
                ObservedRunner(
                    runner_id=info.metadata.get(LABEL_RUNNER, ""),
                    controlplane_id=info.metadata.get(LABEL_CONTROLPLANE, ""),
                    status=status,
                )
            )
        return observed

    async def _renew(self, sandbox_id: str) -> None:
        try:
            await self._sdk.set_timeout(sandbox_id, self._lease_s)
        except SandboxNotFoundException:
            pass
        except Exception as exc:  # the next listing tries again, well within the lease
            logger.warning("could not renew the lease of sandbox %s: %s", sandbox_id, exc)

    async def _list(self, metadata: dict[str, str]) -> list[SandboxInfo]:
        query = SandboxQuery(metadata=metadata, state=[SandboxState.RUNNING, SandboxState.PAUSED])
        try:
            paginator = self._sdk.list(query=query, limit=100)
            found: list[SandboxInfo] = []
            for _ in range(_MAX_PAGES):
                if not paginator.has_next:
                    break
                found.extend(await paginator.next_items())
            return found
        except Exception as exc:
            raise backend_error(exc, "list sandboxes") from exc

    async def pause(self, ref: dict[str, Any]) -> None:
        """Pause the runner's VM with its memory (E2B's snapshot); `resume` brings it back."""
        try:
            await self._sdk.pause(ref["sandbox_id"])
        except Exception as exc:
            raise backend_error(exc, "pause the sandbox") from exc

    async def resume(self, ref: dict[str, Any]) -> None:
        try:
            await self._sdk.connect(ref["sandbox_id"], timeout=self._lease_s)
        except Exception as exc:
            raise backend_error(exc, "resume the sandbox") from exc

    async def close(self) -> None:
        """Let go of the runner processes' streams; sandboxes outlive the plane (leases)."""
        runs, self._runs = list(self._runs.values()), {}
        for run in runs:
            await _disconnect(run)
        await self._http.aclose()


async def _disconnect(run: _Run) -> None:
    with anyio.move_on_after(5):
        try:
            await run.handle.disconnect()
        except Exception as exc:  # the stream may be broken already
            logger.debug("runner stream closed with %s", exc)
