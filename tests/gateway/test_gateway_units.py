"""Gateway parts without servers: the provider registry, routing, prices, breaker, backoff,
and the cache key."""

from __future__ import annotations

from decimal import Decimal

import genai_prices
import pytest
from pydantic import SecretStr

from gateway import GatewaySettings, OrgGateway
from gateway._cache import cache_key
from gateway._costs import Pricing
from gateway._resilience import Breaker, backoff_s
from gateway._routing import AliasTable, Router, load_aliases
from gateway._usage import Usage, anthropic_usage
from gateway.providers import adapter_for
from paddock_core import DEFAULT_POLICIES_DIR, InvalidRequestError, load_policies

POLICIES = load_policies(DEFAULT_POLICIES_DIR)
NAMED = [
    "openai", "anthropic", "google", "deepseek", "perplexity", "mistral", "groq", "xai",
    "together", "fireworks", "cohere", "openrouter", "cerebras", "moonshot", "qwen", "azure",
    "huggingface", "ollama", "vllm", "tgi", "deepinfra", "nvidia",
]  # fmt: skip


def test_the_registry_holds_every_named_provider_and_at_least_51() -> None:
    real = {n: s for n, s in POLICIES.providers.items() if not n.startswith("fake")}
    assert len(real) >= 51
    assert set(NAMED) <= set(real)
    for name, spec in real.items():
        assert spec.base_url.startswith(("https://", "http://127.0.0.1")), name
        assert spec.protocol in ("openai", "anthropic")
        assert spec.auth in ("bearer", "x-api-key", "api-key", "none")
        assert spec.auth == "none" or spec.key_env, name
        assert spec.title, name
        # Anthropic-family base URLs leave /v1 off; the gateway appends /v1/messages.
        assert spec.protocol == "openai" or not spec.base_url.endswith("/v1"), name


def _router(**settings: object) -> Router:
    gateway = GatewaySettings.model_validate(settings)
    aliases = load_aliases(DEFAULT_POLICIES_DIR, gateway)
    return Router.from_settings(POLICIES, gateway, environ={}, aliases=aliases)


def test_routing_explicit_provider_then_longest_prefix_then_alias() -> None:
    router, org = _router(), OrgGateway()
    assert router.provider_for("gpt-4o", org) == ("openai", "gpt-4o")
    assert router.provider_for("claude-sonnet-4-5", org) == ("anthropic", "claude-sonnet-4-5")
    assert router.provider_for("groq/llama-3.3-70b", org) == ("groq", "llama-3.3-70b")
    assert router.provider_for("fake-claude", org) == ("fake-anthropic", "fake-claude")  # longest
    assert router.provider_for("fake-gpt", org) == ("fake", "fake-gpt")
    assert router.provider_for("meta-llama/Llama-3.3-70B", org) == (
        "together",
        "meta-llama/Llama-3.3-70B",
    )
    assert router.provider_for("fast", org) == ("openai", "gpt-4o-mini")
    assert router.provider_for("smart", org) == ("anthropic", "claude-sonnet-4-5")
    with pytest.raises(InvalidRequestError) as caught:
        router.route("nobody-serves-this", org)
    assert caught.value.field == "model"


def test_orgs_override_aliases_keys_and_urls() -> None:
    router = _router(provider_keys={"openai": "sk-gateway"})
    org = OrgGateway(
        aliases={"fast": "fake/fake-mini"},
        provider_keys={"openai": SecretStr("sk-org")},
        provider_base_urls={"openai": "http://127.0.0.1:5/v1/"},
    )
    assert router.route("fast", org).model == "fake-mini"
    route = router.route("gpt-4o", org)
    assert route.upstream.auth_headers() == {"Authorization": "Bearer sk-org"}
    assert route.upstream.base_url == "http://127.0.0.1:5/v1"
    shared = router.route("gpt-4o", OrgGateway())
    assert shared.upstream.auth_headers() == {"Authorization": "Bearer sk-gateway"}
    assert shared.upstream.base_url == "https://api.openai.com/v1"


def test_auth_styles() -> None:
    keys = {"anthropic": "a", "azure": "z", "ollama": "o"}
    router = _router(provider_keys=keys)
    org = OrgGateway()
    assert router.upstream("anthropic", org).auth_headers() == {"x-api-key": "a"}
    assert router.upstream("azure", org).auth_headers() == {"api-key": "z"}
    assert router.upstream("ollama", org).auth_headers() == {}


def test_fallbacks_come_after_the_primary() -> None:
    router = _router(model_fallbacks={"gpt-4o": ["claude-sonnet-4-5", "nobody-serves-this"]})
    routes = router.routes("gpt-4o", OrgGateway())
    assert [(r.provider, r.model) for r in routes] == [
        ("openai", "gpt-4o"),
        ("anthropic", "claude-sonnet-4-5"),
    ]


def test_adapters_refuse_apis_a_provider_does_not_offer() -> None:
    spec = POLICIES.providers["anthropic"]
    assert adapter_for("chat", spec, 4096).translated
    assert not adapter_for("messages", spec, 4096).translated
    for endpoint in ("responses", "embeddings"):
        with pytest.raises(InvalidRequestError, match="does not offer"):
            adapter_for(endpoint, spec, 4096)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        adapter_for("embeddings", POLICIES.providers["deepseek"], 4096)


# --- prices -----------------------------------------------------------------------------------


def test_prices_come_from_genai_prices_with_cached_tokens() -> None:
    pricing = Pricing(POLICIES)
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200),
        "gpt-4o",
        provider_id="openai",
    ).total_price
    cost = pricing.cost_usd(POLICIES.providers["openai"], "gpt-4o", usage)
    assert Decimal(str(cost)) == pytest.approx(expected)
    assert cost > 0


def test_anthropic_cache_writes_are_priced() -> None:
    pricing = Pricing(POLICIES)
    spec = POLICIES.providers["anthropic"]
    plain = pricing.cost_usd(spec, "claude-sonnet-4-5", Usage(1000, 100))
    written = pricing.cost_usd(spec, "claude-sonnet-4-5", Usage(1000, 100, cache_write_tokens=800))
    read = pricing.cost_usd(spec, "claude-sonnet-4-5", Usage(1000, 100, cached_tokens=800))
    assert read < plain < written  # reads are cheaper than input, writes dearer


def test_the_local_table_wins_and_unknown_models_cost_zero() -> None:
    pricing = Pricing(POLICIES)
    fake = POLICIES.providers["fake"]
    assert pricing.cost_usd(fake, "fake-gpt", Usage(1_000_000, 0)) == pytest.approx(5.0)
    assert pricing.cost_usd(fake, "fake-gpt", Usage(1_000_000, 0, cached_tokens=1_000_000)) == (
        pytest.approx(2.5)
    )
    assert pricing.cost_usd(POLICIES.providers["vllm"], "my-own-model", Usage(10, 10)) == 0.0
    assert not pricing.known(POLICIES.providers["vllm"], "my-own-model")


def test_anthropic_usage_adds_cache_reads_and_writes_to_the_prompt() -> None:
    started = anthropic_usage(
        {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2}
    )
    assert started == Usage(17, 0, cached_tokens=5, cache_write_tokens=2)
    assert anthropic_usage({"output_tokens": 9}, base=started) == Usage(
        17, 9, cached_tokens=5, cache_write_tokens=2
    )


# --- breaker and backoff ----------------------------------------------------------------------


def test_breaker_opens_after_failures_probes_once_and_closes() -> None:
    now = [0.0]
    states: list[str] = []
    breaker = Breaker(3, 10.0, on_change=states.append, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.5
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.failure()
    assert breaker.state == "open"
    now[0] = 21.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()
    assert states == ["open", "half_open", "open", "half_open", "closed"]


def test_backoff_is_jittered_exponential_and_honours_retry_after() -> None:
    assert backoff_s(0, base_s=0.5, max_s=8, rng=lambda: 1.0) == 0.5
    assert backoff_s(3, base_s=0.5, max_s=8, rng=lambda: 1.0) == 4.0
    assert backoff_s(10, base_s=0.5, max_s=8, rng=lambda: 1.0) == 8.0
    assert backoff_s(2, base_s=0.5, max_s=8, rng=lambda: 0.25) == 0.5
    assert backoff_s(0, base_s=0.5, max_s=8, retry_after="3") == 3.0
    assert backoff_s(0, base_s=0.5, max_s=8, retry_after="120") == 8.0


# --- the cache key ----------------------------------------------------------------------------


def test_cache_key_separates_orgs_and_ignores_what_does_not_shape_the_answer() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    key = cache_key("org-a", "chat", "openai", "gpt-4o", body)
    assert key != cache_key("org-b", "chat", "openai", "gpt-4o", body)
    assert key != cache_key("org-a", "chat", "openai", "gpt-4o-mini", body)
    assert key != cache_key("org-a", "chat", "openai", "gpt-4o", {**body, "stream": True})
    reordered = {"temperature": 0, "messages": body["messages"], "user": "u", "model": "alias"}
    assert key == cache_key("org-a", "chat", "openai", "gpt-4o", reordered)
    assert len(key) == 64


def test_aliases_file_and_settings_merge() -> None:
    table = load_aliases(DEFAULT_POLICIES_DIR, GatewaySettings(model_aliases={"fast": "x"}))
    assert isinstance(table, AliasTable)
    assert table.aliases["fast"] == "x" and "smart" in table.aliases
