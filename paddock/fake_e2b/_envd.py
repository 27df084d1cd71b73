"""The in-sandbox side: envd's process API (Connect RPC, the SDK's own generated service) and
the proxy in front of every sandbox port.

E2B routes sandbox traffic by host (`{port}-{sandbox id}.{domain}`) or, on its shared host, by
the `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers; both work here. Port 49983 is envd (its
`X-Access-Token` is checked); any other port is proxied to the VM, behind the traffic token
when the sandbox was created with `allowPublicTraffic: false`. Errors have E2B's shapes: 502
"... was not found" for a sandbox that is gone, 502 "... port is not open" for a closed port.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.process import process_connect, process_pb
from protobuf import Oneof
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ._state import FakeE2B, FakeSandbox
from ._vm import ProcessEvent, VMProcess

__all__ = ["ENVD_PORT", "SandboxRouter", "route_of"]

logger = logging.getLogger(__name__)

ENVD_PORT = 49983
_KEEPALIVE_S = 20.0
_HOST = re.compile(r"^(\d+)-([A-Za-z0-9]+)\.")
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}
_ROUTING = {"e2b-sandbox-id", "e2b-sandbox-port", "e2b-traffic-access-token", "x-access-token"}


def route_of(scope: Scope) -> tuple[str, int] | None:
    """(sandbox id, port) when the request is for a sandbox, else None (the REST API)."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if "e2b-sandbox-id" in headers:
        try:
            port = int(headers.get("e2b-sandbox-port", ENVD_PORT))
        except ValueError:
            port = -1
        return headers["e2b-sandbox-id"], port
    match = _HOST.match(headers.get("host", ""))
    return (match.group(2), int(match.group(1))) if match else None


def _event(kind: str, value: Any) -> process_pb.ProcessEvent:
    return process_pb.ProcessEvent(event=Oneof(kind, value))  # type: ignore[arg-type]


def _events_to_messages(event: ProcessEvent) -> process_pb.ProcessEvent:
    kind, value = event
    if kind == "end":
        code = int(value)
        end = process_pb.ProcessEvent.EndEvent(
            exit_code=code, exited=code >= 0, status=f"exit status {code}"
        )
        return _event("end", end)
    data = process_pb.ProcessEvent.DataEvent(output=Oneof(kind, bytes(value)))  # type: ignore[arg-type]
    return _event("data", data)


class ProcessService(process_connect.Process):
    """envd's `process.Process`: Start, Connect, List and SendSignal on `docker exec`s."""

    def __init__(self, fake: FakeE2B) -> None:
        self._fake = fake

    def _sandbox(self, ctx: RequestContext[Any, Any]) -> FakeSandbox:
        sandbox = self._fake.sandboxes.get(ctx.request_headers.get("e2b-sandbox-id", ""))
        if sandbox is None or sandbox.state != "running":
            raise ConnectError(Code.UNAVAILABLE, "The sandbox was not found")
        return sandbox

    def _user(self, sandbox: FakeSandbox, ctx: RequestContext[Any, Any]) -> str:
        auth = ctx.request_headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return sandbox.template.default_user
        try:
            user = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ConnectError(Code.UNAUTHENTICATED, "malformed user") from exc
        return user or sandbox.template.default_user

    async def list(
        self,
        request: process_pb.ListRequest,  # noqa: ARG002 (no fields)
        ctx: RequestContext[process_pb.ListRequest, process_pb.ListResponse],
    ) -> process_pb.ListResponse:
        sandbox = self._sandbox(ctx)
        infos = [
            process_pb.ProcessInfo(
                pid=p.pid,
                tag=p.tag or None,
                config=process_pb.ProcessConfig(cmd=p.cmd, args=p.args, envs={}, cwd=p.cwd),
            )
            for p in sandbox.processes.values()
            if p.exit_code is None
        ]
        return process_pb.ListResponse(processes=infos)

    async def start(
        self,
        request: process_pb.StartRequest,
        ctx: RequestContext[process_pb.StartRequest, process_pb.StartResponse],
    ) -> AsyncIterator[process_pb.StartResponse]:
        sandbox = self._sandbox(ctx)
        config = request.process or process_pb.ProcessConfig()
        proc = VMProcess(
            pid=sandbox.next_pid,
            cmd=config.cmd,
            args=list(config.args),
            envs={**sandbox.env_vars, **dict(config.envs)},
            cwd=config.cwd,
            tag=request.tag,
        )
        sandbox.next_pid += 1
        queue: asyncio.Queue[ProcessEvent] = asyncio.Queue()
        proc.subscribers.append(queue.put_nowait)
        sandbox.processes[proc.pid] = proc
        await self._fake.vms.run(sandbox.container_id, proc, self._user(sandbox, ctx))
        async for event in _stream(proc, queue):
            yield process_pb.StartResponse(event=event)

    async def connect(
        self,
        request: process_pb.ConnectRequest,
        ctx: RequestContext[process_pb.ConnectRequest, process_pb.ConnectResponse],
    ) -> AsyncIterator[process_pb.ConnectResponse]:
        proc = self._process(self._sandbox(ctx), request.process)
        queue: asyncio.Queue[ProcessEvent] = asyncio.Queue()
        proc.subscribers.append(queue.put_nowait)
        async for event in _stream(proc, queue):
            yield process_pb.ConnectResponse(event=event)

    async def send_signal(
        self,
        request: process_pb.SendSignalRequest,
        ctx: RequestContext[process_pb.SendSignalRequest, process_pb.SendSignalResponse],
    ) -> process_pb.SendSignalResponse:
        proc = self._process(self._sandbox(ctx), request.process)
        if not await self._fake.vms.signal(proc, int(request.signal.value) or 15):
            raise ConnectError(Code.NOT_FOUND, f"process {proc.pid} not found")
        return process_pb.SendSignalResponse()

    @staticmethod
    def _process(sandbox: FakeSandbox, selector: process_pb.ProcessSelector | None) -> VMProcess:
        chosen = selector.selector if selector is not None else None
        for proc in sandbox.processes.values():
            if proc.exit_code is None and chosen is not None:
                if (chosen.field == "pid" and proc.pid == chosen.value) or (
                    chosen.field == "tag" and proc.tag == chosen.value
                ):
                    return proc
        raise ConnectError(Code.NOT_FOUND, "process not found")


async def _stream(
    proc: VMProcess, queue: asyncio.Queue[ProcessEvent]
) -> AsyncIterator[process_pb.ProcessEvent]:
    """Start, then output and keepalives until the end event. The process outlives the stream."""
    try:
        yield _event("start", process_pb.ProcessEvent.StartEvent(pid=proc.pid))
        if proc.exit_code is not None:
            yield _events_to_messages(("end", proc.exit_code))
            return
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), _KEEPALIVE_S)
            except TimeoutError:
                yield _event("keepalive", process_pb.ProcessEvent.KeepAlive())
                continue
            yield _events_to_messages(event)
            if event[0] == "end":
                return
    finally:
        if queue.put_nowait in proc.subscribers:
            proc.subscribers.remove(queue.put_nowait)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": status, "message": message, **extra}, status_code=status)


class SandboxRouter:
    """ASGI: envd for port 49983, a reverse proxy for every other port of a sandbox."""

    def __init__(self, fake: FakeE2B) -> None:
        self._fake = fake
        self._rpc = process_connect.ProcessASGIApplication(ProcessService(fake))
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=2.0))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = route_of(scope)
        assert route is not None
        sandbox_id, port = route
        request = Request(scope, receive)
        sandbox = self._fake.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.state != "running":
            state = "paused" if sandbox is not None else "not found"
            message = f"The sandbox {sandbox_id} was {state}"
            await _error(502, message, sandboxId=sandbox_id)(scope, receive, send)
            return
        if port == ENVD_PORT:
            if request.headers.get("x-access-token") != sandbox.envd_access_token:
                await _error(401, "invalid envd access token")(scope, receive, send)
            elif scope["path"] == "/health":
                await Response(status_code=204)(scope, receive, send)
            elif scope["path"].startswith("/process.Process/"):
                headers = [h for h in scope["headers"] if h[0].lower() != b"e2b-sandbox-id"]
                headers.append((b"e2b-sandbox-id", sandbox_id.encode()))
                await self._rpc({**scope, "headers": headers}, receive, send)
            else:
                await _error(404, f"the fake envd does not serve {scope['path']}")(
                    scope, receive, send
                )
            return
        token = sandbox.traffic_access_token
        if token is not None and request.headers.get("e2b-traffic-access-token") != token:
            message = (
                "Sandbox is secured with traffic access token. "
                "Token header 'e2b-traffic-access-token' is missing"
            )
            await _error(403, message, sandboxId=sandbox_id)(scope, receive, send)
            return
        response = await self._forward(request, sandbox, port)
        await response(scope, receive, send)

    async def _forward(self, request: Request, sandbox: FakeSandbox, port: int) -> Response:
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in _HOP and k.lower() not in _ROUTING
        ]
        url = f"http://{sandbox.address}:{port}{request.url.path}"
        if request.url.query:
            url += f"?{request.url.query}"
        upstream = self._http.build_request(
            request.method, url, headers=headers, content=request.stream()
        )
        try:
            response = await self._http.send(upstream, stream=True)
        except httpx.TransportError:
            return _error(
                502,
                "The sandbox is running but port is not open",
                sandboxId=sandbox.sandbox_id,
                port=port,
            )
        out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers=out,
            background=BackgroundTask(response.aclose),
        )
