"""Policy data (YAML under policies/) loaded and validated into frozen models.

Loaded once at startup; a malformed file fails the start with a message that names the file and
the field, never later at request time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import InvalidRequestError, PaddockError

__all__ = [
    "ModelPrice",
    "Policies",
    "Profile",
    "ProviderSpec",
    "SandboxLevel",
    "load_policies",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FilesystemPolicy(_Frozen):
    root_read_only: bool
    workspace_writable: bool


class OpenClawToolPolicy(_Frozen):
    tools_profile: Literal["minimal", "coding", "messaging", "full"]
    deny: tuple[str, ...] = ()


class Resources(_Frozen):
    memory_mb: int = Field(gt=0)
    pids: int = Field(gt=0)
    cpus: float = Field(gt=0)


class EgressDefaults(_Frozen):
    """A profile's egress rules (syntax and checks: the `egress` package)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


class Profile(_Frozen):
    name: str
    description: str
    filesystem: FilesystemPolicy
    network: Literal["gateway_only", "allowlist", "open_except_providers"]
    exec: Literal["deny", "allowlist", "full"]
    exec_allowlist: tuple[str, ...] = ()
    openclaw: OpenClawToolPolicy
    resources: Resources
    egress: EgressDefaults = EgressDefaults()


class SandboxLevel(_Frozen):
    name: str
    description: str
    runtime: str


class ProviderSpec(_Frozen):
    name: str
    base_url: str
    protocol: Literal["openai", "anthropic"]
    auth: Literal["bearer", "x-api-key", "api-key", "none"]
    model_prefixes: tuple[str, ...] = ()
    key_env: str | None = None
    title: str | None = None
    """Human name, e.g. `Google Gemini`."""
    endpoints: tuple[
        Literal["chat", "responses", "embeddings", "messages", "count_tokens"], ...
    ] = ()
    """APIs the provider serves; empty = its protocol's default (chat, or messages+count_tokens)."""
    price_provider: str | None = None
    """The provider's id in the `genai-prices` data, when it differs from `name`."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    headers: dict[str, str] = Field(default_factory=dict)
    """Static headers sent with every request (never secrets: keys come from settings or orgs)."""


class ModelPrice(_Frozen):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)
    cache_write_per_mtok: float | None = Field(None, ge=0)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class Policies(_Frozen):
    profiles: dict[str, Profile]
    sandbox_levels: dict[str, SandboxLevel]
    providers: dict[str, ProviderSpec]
    prices: dict[str, ModelPrice]

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise InvalidRequestError(
                f"unknown profile {name!r}; expected one of {sorted(self.profiles)}",
                field="profile",
            ) from None

    def sandbox_level(self, name: str) -> SandboxLevel:
        try:
            return self.sandbox_levels[name]
        except KeyError:
            raise InvalidRequestError(
                f"unknown sandbox {name!r}; expected one of {sorted(self.sandbox_levels)}",
                field="sandbox",
            ) from None

    def price(self, model: str) -> ModelPrice | None:
        return self.prices.get(model)


def _read(path: Path, key: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PaddockError(f"cannot read policy file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise PaddockError(f"policy file {path} must hold a mapping under {key!r}")
    section: dict[str, Any] = data[key]
    return section


def _named(path: Path, key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, body in _read(path, key).items():
        if not isinstance(body, dict):
            raise PaddockError(f"{path}: {key}.{name} must be a mapping")
        out[str(name)] = {"name": str(name), **body}
    return out


def load_policies(directory: Path) -> Policies:
    """Load and validate every policy file in `directory`."""
    files = {
        "profiles": (directory / "profiles.yaml", "profiles", True),
        "sandbox_levels": (directory / "sandbox_levels.yaml", "sandbox_levels", True),
        "providers": (directory / "providers.yaml", "providers", True),
        "prices": (directory / "prices.yaml", "models", False),
    }
    raw: dict[str, Any] = {}
    for attr, (path, key, named) in files.items():
        raw[attr] = _named(path, key) if named else _read(path, key)
        try:
            Policies.model_validate({**_EMPTY, attr: raw[attr]})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"][1:])
            raise PaddockError(f"{path}: {key}.{where}: {first['msg']}") from exc
    return Policies.model_validate(raw)


_EMPTY: dict[str, Any] = {"profiles": {}, "sandbox_levels": {}, "providers": {}, "prices": {}}
