"""Held calls: what the gateway does when step 15 (`approval`) holds a call.

The call becomes an `approval` record (paddock_core._approvals), pending, with the client's
body kept until it can run, and an `approval.requested` event in the same batch. Then:

- **queue**: 202 at once, `{"approval": {...}}` with `Location: /v1/approvals/{id}`. The client
  fetches `GET /v1/approvals/{id}` (same org and same caller): 202 while pending; 403 in its
  protocol's error shape (step `approval`) once rejected or expired; once approved, the held
  call runs and that fetch answers with its result. The result is given once: a second fetch
  is 409 `approval_already_used`.
- **hold**: the connection stays open until a human decides or the deadline passes (then
  `approval_timeout`). The decision wakes the call through the notifier (in-process, or Redis
  across processes); the store is re-read every `approval_poll_s` as a fallback.
  - A stream's 200 and headers go out at once, then SSE comments (`: keepalive`) every
    `stream_keepalive_s`, so clients and proxies keep the connection. A rejection, or a
    refusal of the approved call, is then an error event in the stream (SDKs raise on it).
  - A non-streaming call waits silently: no byte can precede the status line without
    committing to a 200, and an SDK would take an error sent under a 200 for a completion.
    So the default `timeout_s` (300 s) stays below the OpenAI SDK's default read timeout
    (600 s); a client with a shorter read timeout needs queue mode.
  - A client that hangs up expires its approval (`client_disconnected`).

An approved call runs through the whole chain again with `approved=True` (budgets, rate
limits and allowlists apply as of now, against its caller as it is now) and is claimed first,
compare-and-set, so it runs exactly once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

import anyio
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from paddock_core import (
    ApprovalRecord,
    ConflictError,
    NotFoundError,
    PaddockError,
    Store,
    claim_approval,
    expire_approval,
    expire_overdue,
    get_approval,
    new_id,
    purge_decided,
    put_approval,
    utcnow,
)

from ._auth import Caller
from ._calls import ClientCall
from ._errors import (
    ClientProtocol,
    PolicyDeniedError,
    describe_error,
    error_body,
    sse_error_event,
)
from ._state import GatewayState
from ._streaming import KEEPALIVE
from .checks import CallContext, ChainResult, Hold
from .providers import client_protocol

__all__ = [
    "APPROVAL_HEADER",
    "HeldCall",
    "Resume",
    "approval_for",
    "hold_call",
    "holds_for_approval",
    "pending_answer",
    "rejection",
    "sweep_approvals",
    "wait_for_decision",
]

logger = logging.getLogger(__name__)

APPROVAL_HEADER = "x-paddock-approval-id"
Resume = Callable[[ApprovalRecord], Awaitable[Response]]
"""Runs an approved (and claimed) call through the pipeline; returns its answer."""

_MIN_GAP_S = 0.05
"""Least seconds between two reads of one held approval, however busy its org's trail is."""
_RETRY_AFTER_S = "5"


def holds_for_approval(decision: Hold) -> bool:
    """A hold this module can keep: one from the approval step, with its mode."""
    return decision.data.get("mode") in ("queue", "hold")


async def hold_call(
    state: GatewayState, ctx: CallContext, call: ClientCall, result: ChainResult, resume: Resume
) -> Response:
    """Keep a held call: record it (audited), then answer 202 (queue) or wait (hold)."""
    decision = result.decision
    assert isinstance(decision, Hold)
    data = dict(decision.data)
    now = utcnow()
    record = ApprovalRecord(
        id=new_id("apr"),
        org_id=ctx.org_id,
        mode=data["mode"],
        actor=ctx.actor,
        runner_id=ctx.runner.id if ctx.runner else None,
        session_id=ctx.session.id if ctx.session else None,
        key_id=ctx.key_id,
        team_id=ctx.team_id,
        user_id=ctx.user_id,
        endpoint=ctx.endpoint,
        model=ctx.requested_model,
        stream=ctx.stream,
        rule=str(data.get("rule", decision.reason)),
        message=decision.message,
        details={k: v for k, v in data.items() if k not in ("mode", "rule")},
        estimate_usd=float(data.get("estimate_usd", 0.0)),
        policy=result.version,
        created_at=now,
        expires_at=now + timedelta(seconds=float(data.get("timeout_s", 300.0))),
        result_ttl_s=float(data.get("result_ttl_s", 3600.0)),
        request=call.body,
        request_headers=dict(call.headers),
        request_bytes=call.size,
    )
    await put_approval(
        state.store,
        record,
        step=decision.step,
        reason=decision.reason,
        message=decision.message,
        policy=result.version,
        expires_at=record.expires_at.isoformat(),
    )
    logger.info("call held for approval %s (%s, org %s)", record.id, record.rule, record.org_id)
    headers = {**result.headers, APPROVAL_HEADER: record.id}
    if record.mode == "queue":
        return pending_answer(record, headers)
    return HeldCall(state, record, resume=resume, headers=headers)


def pending_answer(record: ApprovalRecord, headers: Mapping[str, str] | None = None) -> Response:
    """202: the call waits for a human; fetch `Location` later (after `Retry-After` seconds)."""
    return JSONResponse(
        {"approval": record.public()},
        status_code=202,
        headers={
            **(headers or {}),
            "location": f"/v1/approvals/{record.id}",
            "retry-after": _RETRY_AFTER_S,
        },
    )


def rejection(record: ApprovalRecord) -> PolicyDeniedError:
    """The 403 of a rejected or expired approval (step `approval`, who decided and why)."""
    expired = record.status == "expired"
    reason = (record.reason or "approval_expired") if expired else "approval_rejected"
    if expired:
        message = f"approval {record.id} expired ({record.reason}); the call was not made"
    else:
        message = f"approval {record.id} was rejected by {record.decided_by}: {record.reason}"
    return PolicyDeniedError(
        message,
        status=403,
        step="approval",
        reason=reason,
        data={
            "approval_id": record.id,
            "status": record.status,
            "decided_by": record.decided_by,
            "reason": record.reason,
        },
        headers={APPROVAL_HEADER: record.id},
    )


async def approval_for(state: GatewayState, caller: Caller, approval_id: str) -> ApprovalRecord:
    """The caller's own approval, as it stands now (an overdue one expired first); 404 for
    anyone else's, in any org."""
    record = await get_approval(state.store, approval_id)
    if record is None or record.org_id != caller.org_id or record.actor != caller.actor:
        raise NotFoundError(f"approval {approval_id} not found", reason="approval_not_found")
    return await expire_overdue(state.store, record)


async def wait_for_decision(
    state: GatewayState,
    record: ApprovalRecord,
    *,
    tick: Callable[[], Awaitable[None]] | None = None,
    tick_s: float = math.inf,
) -> ApprovalRecord:
    """Wait until `record` is decided, or expire it at its deadline (`approval_timeout`).
    `tick` runs every `tick_s` seconds meanwhile (stream keepalives).

    Bounded in time by the deadline, and in reads by `_MIN_GAP_S` between two of them."""
    deadline = record.expires_at.timestamp()
    next_tick = time.monotonic() + tick_s
    async with state.notifier.listen(record.org_id) as woken:
        while True:
            woken.clear()  # before reading: a decision committed after this read still wakes us
            current = await get_approval(state.store, record.id)
            if current is None:
                raise NotFoundError(f"approval {record.id} vanished")
            if current.status != "pending":
                return current
            left = deadline - time.time()
            if left <= 0:
                try:
                    return await expire_approval(state.store, current, "approval_timeout")
                except ConflictError:
                    continue  # decided just now: read it
            wait_s = min(state.settings.approval_poll_s, left, next_tick - time.monotonic())
            with anyio.move_on_after(max(wait_s, 0.0)):
                await woken.wait()
            if tick is not None and time.monotonic() >= next_tick:
                await tick()
                next_tick = time.monotonic() + tick_s
            await anyio.sleep(_MIN_GAP_S)


class HeldCall(Response):
    """The answer to a call held in `hold` mode: waits for the decision, then runs the call
    (or refuses it) on the same connection. See the module docstring for what is sent."""

    def __init__(
        self,
        state: GatewayState,
        record: ApprovalRecord,
        *,
        resume: Resume,
        headers: Mapping[str, str],
    ) -> None:
        # Not Response.__init__: nothing is rendered up front.
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **headers})
        self._state = state
        self._record = record
        self._resume = resume
        self._protocol: ClientProtocol = client_protocol(record.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._record.stream:
            decided = await self._wait(receive, None)
            if decided is not None:
                # Nothing was sent yet: an error raised here becomes the usual error answer.
                answer = await self._run(decided)
                answer.headers[APPROVAL_HEADER] = self._record.id
                await answer(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def keepalive() -> None:
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

        decided = await self._wait(receive, keepalive)
        if decided is None:
            return
        try:
            answer = await self._run(decided)
        except PaddockError as exc:
            await self._fail(send, describe_error(exc, self._protocol)[1])
            return
        except Exception:
            logger.exception("approved call %s failed", self._record.id)
            await self._fail(send, self._internal_error())
            return
        await answer(scope, receive, _AfterStart(send, self._protocol))

    async def _run(self, decided: ApprovalRecord) -> Response:
        if decided.status != "approved":
            raise rejection(decided)
        claimed = await claim_approval(self._state.store, decided, by=self._record.actor)
        return await self._resume(claimed)

    async def _wait(
        self, receive: Receive, keepalive: Callable[[], Awaitable[None]] | None
    ) -> ApprovalRecord | None:
        """The decided record, or None when the client left (the approval then expires)."""
        gone = False
        decided: ApprovalRecord | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:

            async def watch() -> None:
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                tasks.cancel_scope.cancel()

            tasks.start_soon(watch)
            try:
                decided = await wait_for_decision(
                    self._state,
                    self._record,
                    tick=keepalive,
                    tick_s=self._state.settings.stream_keepalive_s,
                )
            except OSError:  # sending a keepalive found the client gone (ASGI spec 2.4)
                gone = True
            except Exception as exc:  # raised after the task group, unwrapped
                failure = exc
            tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if gone:
            with anyio.CancelScope(shield=True):
                await self._client_left()
            return None
        return decided

    async def _client_left(self) -> None:
        current = await get_approval(self._state.store, self._record.id)
        if current is not None and current.status == "pending":
            try:
                await expire_approval(self._state.store, current, "client_disconnected")
            except ConflictError:
                pass  # decided meanwhile; an approval never claimed is swept at its deadline

    async def _fail(self, send: Send, body: Mapping[str, object]) -> None:
        event = sse_error_event(self._protocol, body)
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _internal_error(self) -> dict[str, object]:
        return error_body(
            self._protocol, 500, "internal gateway error", type_="api_error", code="internal_error"
        )


class _AfterStart:
    """`send` for an answer produced after a held stream's 200 went out: its own start is
    dropped; a refusal (4xx/5xx JSON) becomes an error event in the stream."""

    def __init__(self, send: Send, protocol: ClientProtocol) -> None:
        self._send = send
        self._protocol = protocol
        self._refused: bytearray | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] >= 400:
                self._refused = bytearray()
            return
        if message["type"] != "http.response.body" or self._refused is None:
            await self._send(message)
            return
        self._refused += message.get("body", b"")
        if message.get("more_body", False):
            return
        try:
            body: Any = json.loads(bytes(self._refused))
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = bytes(self._refused[:300]).decode(errors="replace")
            body = error_body(self._protocol, 502, text, type_="upstream_error")
        event = sse_error_event(self._protocol, body)
        await self._send({"type": "http.response.body", "body": event, "more_body": True})
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


async def sweep_approvals(store: Store, interval_s: float, retention_s: float) -> None:
    """Every `interval_s` seconds, expire overdue approvals (their held bodies go with them):
    pending ones nobody decided, approved ones nobody fetched, ones whose waiter died. And
    remove those finished more than `retention_s` ago (the audit trail keeps their story)."""
    while True:
        await anyio.sleep(interval_s)
        try:
            for doc in await store.list_objects("approval", None):
                record = ApprovalRecord.model_validate(doc)
                if record.overdue(utcnow()):
                    await expire_overdue(store, record)
            await purge_decided(store, before=utcnow() - timedelta(seconds=retention_s))
        except PaddockError:
            logger.exception("sweeping approvals failed")
