"""Which provider serves a model, at which URL, with which key. Pure data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from paddock_core import InvalidRequestError, Policies, ProviderSpec

from ._settings import GatewaySettings

__all__ = ["Route", "Router", "Upstream"]

# Providers whose wire format the gateway relays today; the others need a translating adapter.
_SUPPORTED_PROTOCOLS = frozenset({"openai"})


@dataclass(frozen=True)
class Upstream:
    """A provider as this gateway reaches it: settings override the policy file's base URL."""

    spec: ProviderSpec
    base_url: str
    key: SecretStr | None

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate the gateway (never the caller) to the provider."""
        if self.key is None or self.spec.auth == "none":
            return {}
        secret = self.key.get_secret_value()
        if self.spec.auth == "x-api-key":
            return {"x-api-key": secret}
        return {"Authorization": f"Bearer {secret}"}


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    model: str
    """The model name as the provider knows it (without any `provider/` prefix)."""


class Router:
    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        # Dict order is the policy file's order, which decides between overlapping prefixes.
        self._upstreams = dict(upstreams)

    @classmethod
    def from_settings(
        cls, policies: Policies, settings: GatewaySettings, environ: Mapping[str, str]
    ) -> Router:
        upstreams: dict[str, Upstream] = {}
        for name, spec in policies.providers.items():
            key = settings.provider_keys.get(name)
            if key is None and spec.key_env and environ.get(spec.key_env):
                key = SecretStr(environ[spec.key_env])
            base_url = settings.provider_base_urls.get(name, spec.base_url)
            upstreams[name] = Upstream(spec=spec, base_url=base_url.rstrip("/"), key=key)
        return cls(upstreams)

    def provider_for(self, model: str) -> tuple[Upstream, str] | None:
        """The provider of `model` and the model's name there, or None if no provider claims it."""
        head, sep, rest = model.partition("/")
        if sep and rest and head in self._upstreams:
            return self._upstreams[head], rest
        for upstream in self._upstreams.values():
            if any(model.startswith(p) for p in upstream.spec.model_prefixes):
                return upstream, model
        return None

    def resolve(self, model: str) -> Route:
        found = self.provider_for(model)
        if found is None:
            raise InvalidRequestError(
                f"unknown model {model!r}: no provider serves it",
                field="model",
                reason="model_not_found",
            )
        upstream, upstream_model = found
        if upstream.spec.protocol not in _SUPPORTED_PROTOCOLS:
            raise InvalidRequestError(
                f"provider protocol not supported yet: model {model!r} goes to provider "
                f"{upstream.spec.name!r}, which speaks {upstream.spec.protocol!r}",
                field="model",
                reason="provider_protocol_not_supported",
            )
        return Route(upstream=upstream, model=upstream_model)
