"""One LLM call, whatever its API: route, check, answer from the cache or forward, record.

parse -> org settings -> routes (model, fallbacks) -> adapters -> policy chain
      -> cache (per org, off by default) -> forward (retries, breakers, fallbacks)
      -> answer (as is, or translated) -> record (call + audit event, before the end
         of the answer reaches the client)
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from starlette.responses import JSONResponse, Response

from paddock_core import (
    AppendAudit,
    AppendTranscript,
    ApprovalRecord,
    AuditEvent,
    InvalidRequestError,
    Operation,
    UpstreamError,
    new_id,
)

from ._approvals import hold_call, holds_for_approval
from ._auth import Caller, refresh_caller
from ._cache import CachedAnswer, cache_key
from ._calls import ClientCall
from ._costs import CallMeta
from ._errors import ProviderUnavailableError, error_response, policy_error, stream_error_event
from ._forward import Candidate, forward
from ._orgs import OrgGateway
from ._proxy import UpstreamReply, UpstreamStream
from ._routing import Route
from ._state import GatewayState
from ._streaming import SseRelay, StreamEnd
from ._transcripts import Part, reply_entries, reply_parts, request_entries, sse_reply_parts
from ._usage import Usage, estimate_tokens
from .checks import Allow, CallContext, ChainResult, Deny, Hold, Outcome, TokenPrice
from .providers import API_NAMES, adapter_for, client_protocol

__all__ = ["CACHE_HEADER", "CALL_ID_HEADER", "OVERHEAD_HEADER", "handle_call"]

CALL_ID_HEADER = "x-paddock-call-id"
CACHE_HEADER = "x-paddock-cache"
OVERHEAD_HEADER = "x-paddock-overhead-ms"

# Upstream refusals that are about the request itself (or its rate): the client should see them
# as they are. Anything else (5xx, the provider refusing *our* key) is the gateway's problem: 502.
_RELAYED_STATUSES = frozenset({400, 404, 409, 413, 422, 429})
_NO_USAGE = Usage(0, 0)
_NOTHING_SPENT = Outcome(0.0)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def _candidates(state: GatewayState, call: ClientCall, routes: list[Route]) -> list[Candidate]:
    max_tokens = state.settings.default_max_tokens
    out: list[Candidate] = []
    for route in routes:
        try:
            adapter = adapter_for(call.endpoint, route.upstream.spec, max_tokens)
        except InvalidRequestError:
            if not out:
                raise
            continue
        # The primary's body is built now: a field it cannot take is a 400 before anything.
        body = adapter.body(call.body, route.model) if not out else None
        out.append(Candidate(route, adapter, body))
    return out


def _local_count(call: ClientCall) -> Response:
    tools = json.dumps(call.body.get("tools") or [])
    return JSONResponse({"input_tokens": estimate_tokens(call.prompt_chars + len(tools))})


async def handle_call(
    state: GatewayState,
    caller: Caller,
    call: ClientCall,
    started: float,
    approval: ApprovalRecord | None = None,
) -> Response:
    """`started`: perf_counter() when the request arrived (for the overhead figure).
    `approval`: the claimed approval of a call that was held (step 15 then lets it through)."""
    org = await state.orgs.get(caller.org_id)
    routes = state.router.routes(call.model, org)
    primary = routes[0]
    offered = primary.upstream.spec.endpoints
    if call.endpoint == "count_tokens" and offered and "count_tokens" not in offered:
        return _local_count(call)
    if call.endpoint == "count_tokens" and primary.upstream.spec.protocol == "openai":
        return _local_count(call)
    chain = state.chains.chain_for(caller.org_id, org)
    price_in, price_out = state.pricing.token_price(primary.upstream.spec, primary.model)
    ctx = CallContext(
        org_id=caller.org_id,
        plan=chain.version.partition(":")[0],
        actor=caller.actor,
        runner=caller.runner,
        session=caller.session,
        key_id=caller.key_id,
        team_id=caller.team_id,
        user_id=caller.user_id,
        endpoint=call.endpoint,
        requested_model=call.model,
        provider=primary.provider,
        model=primary.model,
        stream=call.stream,
        body=call.body,
        body_bytes=call.size,
        estimated_prompt_tokens=estimate_tokens(call.prompt_chars),
        price=TokenPrice(price_in, price_out),
        now=time.time(),
        key_models=caller.key_models,
        key_skills=caller.key_skills,
        approved=approval is not None,
        runner_pending_usd=state.ledger.pending_usd(
            f"runner:{caller.runner.id}" if caller.runner else None
        ),
        session_pending_usd=state.ledger.pending_usd(
            f"session:{caller.session.id}" if caller.session else None
        ),
    )
    result = await chain.decide(ctx)
    decision = result.decision
    if isinstance(decision, Hold) and approval is None and holds_for_approval(decision):

        async def resume(approved: ApprovalRecord) -> Response:
            fresh = await refresh_caller(state, caller)
            return await handle_call(state, fresh, call, time.perf_counter(), approved)

        return await hold_call(state, ctx, call, result, resume)
    if not isinstance(decision, Allow):
        await _audit_refusal(state, ctx, result)
        raise policy_error(decision, result.headers)
    if approval is not None:
        result.notes.append(f"approval: {approval.id} by {approval.decided_by}")
    if result.body is not call.body:
        call = dataclasses.replace(call, body=dict(result.body))
    response: Response | None = None
    try:
        response = await _proceed(state, caller, call, routes, org, result, started)
        return response
    finally:
        # A stream settles when it ends (its `on_end`); every other path has settled by now,
        # or never reached a provider: release what the chain holds.
        if not isinstance(response, SseRelay):
            await result.settle(_NOTHING_SPENT)


async def _audit_refusal(state: GatewayState, ctx: CallContext, result: ChainResult) -> None:
    decision = result.decision
    assert isinstance(decision, Deny | Hold)
    data: dict[str, Any] = {
        "decision": "deny" if isinstance(decision, Deny) else "hold",
        "step": decision.step,
        "reason": decision.reason,
        "message": decision.message,
        "policy": result.version,
        "model": ctx.requested_model,
        "endpoint": ctx.endpoint,
    }
    if decision.data:
        data["details"] = dict(decision.data)
    event = AuditEvent(
        org_id=ctx.org_id,
        actor=ctx.actor,
        type="policy.denied" if isinstance(decision, Deny) else "policy.held",
        runner_id=ctx.runner.id if ctx.runner else None,
        session_id=ctx.session.id if ctx.session else None,
        data=data,
    )
    await state.store.apply([AppendAudit(event)])


async def _proceed(
    state: GatewayState,
    caller: Caller,
    call: ClientCall,
    routes: list[Route],
    org: OrgGateway,
    result: ChainResult,
    started: float,
) -> Response:
    primary = routes[0]
    candidates = _candidates(state, call, routes)
    headers = dict(result.headers)

    async def record(
        meta: CallMeta,
        usage: Usage,
        *,
        status: int,
        latency_ms: float,
        cache_hit: bool = False,
        reply: list[Part] | None = None,
        unseen_chars: int = 0,
    ) -> None:
        """Record the call (with its transcript entries, for a session) and settle the chain's
        holds with its cost."""
        extra = _transcript(state, caller, call, org, meta, reply or [], unseen_chars)
        recorded = await state.ledger.record(
            meta, usage, status=status, latency_ms=latency_ms, cache_hit=cache_hit, extra=extra
        )
        await result.settle(
            Outcome(recorded.cost_usd, usage.prompt_tokens, usage.completion_tokens)
        )

    call_id = new_id("llm")

    def meta_for(route: Route) -> CallMeta:
        return CallMeta(
            id=call_id,
            org_id=caller.org_id,
            actor=caller.actor,
            runner_id=caller.runner.id if caller.runner else None,
            session_id=caller.session.id if caller.session else None,
            endpoint=API_NAMES[call.endpoint],
            provider=route.upstream.spec,
            model=route.model,
            stream=call.stream,
            key_id=caller.key_id,
            team_id=caller.team_id,
            user_id=caller.user_id,
            policy_version=result.version,
            policy_notes=tuple(result.notes),
        )

    headers[CALL_ID_HEADER] = call_id
    key = None
    if call.endpoint != "count_tokens" and _cache_on(state, org):
        key = cache_key(caller.org_id, call.endpoint, primary.provider, primary.model, call.body)
        hit = await state.cache.get(key)
        state.metrics.cache.labels(caller.org_id, "hit" if hit else "miss").inc()
        if hit is not None:
            cached = (
                sse_reply_parts(call.endpoint, hit.body)
                if hit.content_type == "text/event-stream"
                else reply_parts(call.endpoint, _json_or_none(hit.body))
            )
            await record(
                meta_for(primary),
                hit.usage,
                status=200,
                latency_ms=0.0,
                cache_hit=True,
                reply=cached,
            )
            headers[CACHE_HEADER] = "HIT"
            _overhead(state, call, headers, _ms(started))
            return Response(hit.body, media_type=hit.content_type, headers=headers)
        headers[CACHE_HEADER] = "MISS"

    upstream_started = time.perf_counter()
    done = await forward(state, call, candidates)
    meta = meta_for(done.route)
    answer = done.answer
    if call.endpoint == "count_tokens":
        return _counted(call, meta, answer, headers)
    if isinstance(answer, UpstreamError):
        status = 503 if isinstance(answer, ProviderUnavailableError) else 502
        await record(meta, _NO_USAGE, status=status, latency_ms=_ms(upstream_started))
        raise answer
    if isinstance(answer, UpstreamReply) and not answer.ok:
        await record(
            meta, _NO_USAGE, status=answer.status, latency_ms=_ms(upstream_started)
        )
        return _refusal(call, meta, answer, headers)

    protocol = client_protocol(call.endpoint)
    if isinstance(answer, UpstreamReply):
        upstream_ms = _ms(upstream_started)
        data = answer.json()
        usage = done.adapter.usage(data) or Usage(
            estimate_tokens(call.prompt_chars),
            estimate_tokens(done.adapter.reply_chars(data)),
            estimated=True,
        )
        body = answer.body
        shown = data
        if done.adapter.translated and isinstance(data, dict):
            shown = done.adapter.reply(data, done.route.model, usage)
            body = json.dumps(shown, separators=(",", ":")).encode()
        parts = reply_parts(call.endpoint, shown)
        await record(meta, usage, status=answer.status, latency_ms=upstream_ms, reply=parts)
        if key is not None:
            await state.cache.put(key, CachedAnswer(body, "application/json", usage))
        _overhead(state, call, headers, _ms(started) - upstream_ms)
        return Response(
            body, status_code=answer.status, media_type="application/json", headers=headers
        )

    prompt_estimate = estimate_tokens(call.prompt_chars)

    async def on_end(end: StreamEnd) -> None:
        # No usage (upstream died, client left): bill what was streamed, never $0 -- the
        # provider bills the prompt as soon as it accepts the stream, and every token it sent.
        usage = end.usage or Usage(
            end.started.prompt_tokens if end.started else prompt_estimate,
            estimate_tokens(end.completion_chars),
            cached_tokens=end.started.cached_tokens if end.started else 0,
            cache_write_tokens=end.started.cache_write_tokens if end.started else 0,
            estimated=True,
        )
        parts = sse_reply_parts(call.endpoint, end.captured) if end.captured else []
        await record(
            meta,
            usage,
            status=end.status,
            latency_ms=_ms(upstream_started),
            reply=parts,
            unseen_chars=0 if end.captured else end.completion_chars,
        )
        if key is not None and end.captured is not None:
            await state.cache.put(key, CachedAnswer(end.captured, "text/event-stream", usage))

    _overhead(state, call, headers, (upstream_started - started) * 1000)

    def error_event(exc: UpstreamError) -> bytes:
        return stream_error_event(protocol, exc)

    return SseRelay(
        answer,
        handler=done.adapter.stream(done.route.model),
        on_end=on_end,
        error_event=error_event,
        headers=headers,
        keepalive_s=state.settings.stream_keepalive_s,
        capture_limit=state.settings.cache_max_entry_bytes
        if key is not None or (caller.session is not None and org.transcripts.content)
        else None,
        metrics=state.metrics,
    )


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _transcript(
    state: GatewayState,
    caller: Caller,
    call: ClientCall,
    org: OrgGateway,
    meta: CallMeta,
    reply: list[Part],
    unseen_chars: int = 0,
) -> list[Operation]:
    """A session's transcript entries for one call: the turn sent, and what came back."""
    session = caller.session
    if session is None or call.endpoint in ("embeddings", "count_tokens"):
        return []
    common: dict[str, Any] = {
        "org_id": caller.org_id,
        "session_id": session.id,
        "runner_id": meta.runner_id,
        "call_id": meta.id,
        "model": meta.model,
        "settings": org.transcripts,
        "redact": state.redact,
    }
    entries = request_entries(endpoint=call.endpoint, body=call.body, **common)
    entries += reply_entries(parts=reply, unseen_chars=unseen_chars, **common)
    return [AppendTranscript(tuple(entries))] if entries else []


def _counted(
    call: ClientCall,
    meta: CallMeta,
    answer: UpstreamReply | UpstreamStream | UpstreamError,
    headers: dict[str, str],
) -> Response:
    """Counting tokens is free: answered, never recorded."""
    if isinstance(answer, UpstreamError):
        raise answer
    assert isinstance(answer, UpstreamReply)
    if not answer.ok:
        return _refusal(call, meta, answer, headers)
    return Response(answer.body, media_type="application/json", headers=headers)


def _cache_on(state: GatewayState, org: OrgGateway) -> bool:
    return state.settings.cache_enabled if org.cache_enabled is None else org.cache_enabled


def _overhead(state: GatewayState, call: ClientCall, headers: dict[str, str], ms: float) -> None:
    headers[OVERHEAD_HEADER] = f"{max(ms, 0.0):.3f}"
    state.metrics.overhead.labels(API_NAMES[call.endpoint]).observe(max(ms, 0.0) / 1000)


def _refusal(
    call: ClientCall, meta: CallMeta, reply: UpstreamReply, headers: dict[str, str]
) -> Response:
    """The answer to a non-2xx upstream reply (already recorded), in the client's protocol."""
    provider = meta.provider.name
    data = reply.json()
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if reply.retry_after is not None:
        headers["retry-after"] = reply.retry_after
    protocol = client_protocol(call.endpoint)
    if reply.status in _RELAYED_STATUSES:
        if isinstance(error, dict) and protocol == meta.provider.protocol:
            return Response(
                reply.body, status_code=reply.status, media_type="application/json", headers=headers
            )
        shown = message if isinstance(message, str) and message else None
        return error_response(
            reply.status,
            shown or f"provider {provider!r} answered {reply.status}",
            type_="rate_limit_error" if reply.status == 429 else "upstream_error",
            code="upstream_status",
            headers=headers,
            protocol=protocol,
        )
    if reply.status in (401, 403, 407):
        # Not the caller's fault and not theirs to see: the provider's message may quote our key.
        raise UpstreamError(
            f"provider {provider!r} refused the gateway's credentials ({reply.status})",
            reason="upstream_auth_failed",
        )
    detail = f": {message[:300]}" if isinstance(message, str) and message else ""
    raise UpstreamError(
        f"provider {provider!r} answered {reply.status}{detail}", reason="upstream_status"
    )
