"""Which provider serves a model, at which URL, with which key, and what to try when it fails.
Pure data, no I/O (the aliases file is read once, at startup).

Resolution of a requested model, in order:
1. an alias (the org's, else the gateway's) is replaced by its target, once;
2. `provider/model` names the provider outright when `provider` is one;
3. else the provider with the LONGEST matching model prefix serves it, as named.
Keys: the org's own key for that provider, else the gateway's (settings, then `key_env`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from paddock_core import InvalidRequestError, PaddockError, Policies, ProviderSpec

from ._orgs import OrgGateway
from ._settings import GatewaySettings

__all__ = ["AliasTable", "Route", "Router", "Upstream", "load_aliases"]


@dataclass(frozen=True)
class Upstream:
    """A provider as this gateway reaches it for one org."""

    spec: ProviderSpec
    base_url: str
    key: SecretStr | None
    configured: bool
    """A key is set, none is needed, or its URL was set on purpose: calls can succeed."""

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate the gateway (never the caller) to the provider."""
        if self.key is None or self.spec.auth == "none":
            return {}
        secret = self.key.get_secret_value()
        if self.spec.auth == "x-api-key":
            return {"x-api-key": secret}
        if self.spec.auth == "api-key":
            return {"api-key": secret}
        return {"Authorization": f"Bearer {secret}"}


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    model: str
    """The model name as the provider knows it (without any `provider/` prefix)."""
    requested: str
    """The model as the client named it (an alias, `provider/model`, or the model itself)."""

    @property
    def provider(self) -> str:
        return self.upstream.spec.name


@dataclass(frozen=True)
class AliasTable:
    aliases: Mapping[str, str]
    fallbacks: Mapping[str, tuple[str, ...]]


def load_aliases(directory: Path, settings: GatewaySettings) -> AliasTable:
    """policies/aliases.yaml (optional), with the settings' entries over it."""
    path = directory / "aliases.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PaddockError(f"cannot read policy file {path}: {exc}") from exc
    aliases, fallbacks = data.get("aliases") or {}, data.get("fallbacks") or {}
    if not isinstance(aliases, dict) or not isinstance(fallbacks, dict):
        raise PaddockError(f"{path}: `aliases` and `fallbacks` must be mappings")
    merged_aliases = {str(k): str(v) for k, v in {**aliases, **settings.model_aliases}.items()}
    merged_fallbacks: dict[str, tuple[str, ...]] = {}
    for model, targets in {**fallbacks, **settings.model_fallbacks}.items():
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise PaddockError(f"{path}: fallbacks.{model} must be a list of model names")
        merged_fallbacks[str(model)] = tuple(targets)
    return AliasTable(merged_aliases, merged_fallbacks)


class Router:
    def __init__(
        self,
        specs: Mapping[str, ProviderSpec],
        *,
        base_urls: Mapping[str, str],
        keys: Mapping[str, SecretStr],
        aliases: AliasTable,
    ) -> None:
        self._specs = dict(specs)
        self._base_urls = {name: url.rstrip("/") for name, url in base_urls.items()}
        self._keys = dict(keys)
        self.aliases = aliases
        self._prefixes = sorted(
            ((prefix, name) for name, spec in specs.items() for prefix in spec.model_prefixes),
            key=lambda pair: -len(pair[0]),
        )
        self._shared = {name: self._upstream(name, OrgGateway()) for name in specs}

    @classmethod
    def from_settings(
        cls,
        policies: Policies,
        settings: GatewaySettings,
        environ: Mapping[str, str],
        aliases: AliasTable | None = None,
    ) -> Router:
        keys: dict[str, SecretStr] = {}
        for name, spec in policies.providers.items():
            key = settings.provider_keys.get(name)
            if key is None and spec.key_env and environ.get(spec.key_env):
                key = SecretStr(environ[spec.key_env])
            if key is not None:
                keys[name] = key
        return cls(
            policies.providers,
            base_urls=settings.provider_base_urls,
            keys=keys,
            aliases=aliases or AliasTable({}, {}),
        )

    @property
    def providers(self) -> Mapping[str, ProviderSpec]:
        return self._specs

    def _upstream(self, name: str, org: OrgGateway) -> Upstream:
        spec = self._specs[name]
        key = org.provider_keys.get(name) or self._keys.get(name)
        url = org.provider_base_urls.get(name) or self._base_urls.get(name)
        configured = key is not None or spec.auth == "none" or url is not None
        return Upstream(spec, (url or spec.base_url).rstrip("/"), key, configured)

    def upstream(self, name: str, org: OrgGateway) -> Upstream:
        if not org.provider_keys and not org.provider_base_urls:
            return self._shared[name]
        return self._upstream(name, org)

    def _target(self, model: str, org: OrgGateway) -> str:
        return org.aliases.get(model) or self.aliases.aliases.get(model) or model

    def provider_for(self, model: str, org: OrgGateway | None = None) -> tuple[str, str] | None:
        """(provider name, model name there) for a model or alias; None if nobody serves it."""
        target = self._target(model, org or OrgGateway())
        head, sep, rest = target.partition("/")
        if sep and rest and head in self._specs:
            return head, rest
        for prefix, name in self._prefixes:
            if target.startswith(prefix):
                return name, target
        return None

    def route(self, model: str, org: OrgGateway) -> Route:
        found = self.provider_for(model, org)
        if found is None:
            raise InvalidRequestError(
                f"unknown model {model!r}: no provider serves it (name one as `provider/model`,"
                " or use an alias)",
                field="model",
                reason="model_not_found",
            )
        return Route(self.upstream(found[0], org), found[1], model)

    def routes(self, model: str, org: OrgGateway) -> list[Route]:
        """The route for `model`, then those of its fallbacks (unknown fallbacks are skipped)."""
        primary = self.route(model, org)
        out = [primary]
        chain = self.aliases.fallbacks.get(model) or self.aliases.fallbacks.get(
            self._target(model, org), ()
        )
        for fallback in chain:
            found = self.provider_for(fallback, org)
            if found is not None and found != (primary.provider, primary.model):
                out.append(Route(self.upstream(found[0], org), found[1], model))
        return out

    def configured_models(self, org: OrgGateway) -> dict[str, str]:
        """Aliases whose target a configured provider serves: alias -> provider name."""
        out: dict[str, str] = {}
        for alias in {**self.aliases.aliases, **org.aliases}:
            found = self.provider_for(alias, org)
            if found is not None and self.upstream(found[0], org).configured:
                out[alias] = found[0]
        return out
