"""Prometheus metrics, on a registry of the app's own (never the library's global one).

paddock_gateway_requests_total{endpoint,provider,model,org,status}
paddock_gateway_request_seconds{endpoint,provider,model,org}          histogram, upstream time
paddock_gateway_overhead_seconds{endpoint}                            histogram, gateway time
paddock_gateway_tokens_total{provider,model,org,kind}                 kind: prompt, completion,
                                                                      cached, cache_write,
                                                                      reasoning, estimated
paddock_gateway_cost_usd_total{provider,model,org}
paddock_gateway_cache_total{org,result}                               result: hit, miss
paddock_gateway_retries_total{provider,reason}
paddock_gateway_fallbacks_total{provider}
paddock_gateway_breaker_state{provider}                               0 closed, 1 half-open,
                                                                      2 open
paddock_gateway_active_streams
paddock_gateway_unpriced_calls_total{provider,model}
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from paddock_core import LlmCallRecord

__all__ = ["BREAKER_STATES", "GatewayMetrics"]

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "paddock_gateway_requests",
            "LLM calls answered, by outcome",
            ["endpoint", "provider", "model", "org", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "paddock_gateway_request_seconds",
            "Upstream time of LLM calls (to the end of the answer), seconds",
            ["endpoint", "provider", "model", "org"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "paddock_gateway_overhead_seconds",
            "Time the gateway itself adds to a call (outside the upstream), seconds",
            ["endpoint"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "paddock_gateway_tokens",
            "Tokens by kind",
            ["provider", "model", "org", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "paddock_gateway_cost_usd", "Spend in USD", ["provider", "model", "org"], registry=r
        )
        self.cache = Counter(
            "paddock_gateway_cache", "Response cache lookups", ["org", "result"], registry=r
        )
        self.retries = Counter(
            "paddock_gateway_retries",
            "Upstream retries of transient failures",
            ["provider", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "paddock_gateway_fallbacks",
            "Calls handed to a fallback provider",
            ["provider"],
            registry=r,
        )
        self.breaker = Gauge(
            "paddock_gateway_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            ["provider"],
            registry=r,
        )
        self.active_streams = Gauge(
            "paddock_gateway_active_streams", "Streams being relayed now", registry=r
        )
        self.unpriced = Counter(
            "paddock_gateway_unpriced_calls",
            "Calls of models with no known price (recorded at $0)",
            ["provider", "model"],
            registry=r,
        )

    def call(self, call: LlmCallRecord, *, estimated: bool) -> None:
        labels = (call.provider, call.model, call.org_id)
        self.requests.labels(call.endpoint, *labels, str(call.status)).inc()
        self.latency.labels(call.endpoint, *labels).observe(call.latency_ms / 1000)
        kinds = {
            "prompt": call.prompt_tokens,
            "completion": call.completion_tokens,
            "cached": call.cached_tokens,
            "cache_write": call.cache_write_tokens,
            "reasoning": call.reasoning_tokens,
        }
        for kind, count in kinds.items():
            if count:
                self.tokens.labels(*labels, kind).inc(count)
        if estimated:
            estimate = call.prompt_tokens + call.completion_tokens
            self.tokens.labels(*labels, "estimated").inc(estimate)
        if call.cost_usd:
            self.cost.labels(*labels).inc(call.cost_usd)
        elif not call.cache_hit and (call.prompt_tokens or call.completion_tokens):
            self.unpriced.labels(call.provider, call.model).inc()

    def set_breaker(self, provider: str, state: str) -> None:
        self.breaker.labels(provider).set(BREAKER_STATES[state])

    def render(self) -> bytes:
        return generate_latest(self.registry)
