"""The egress policy: `policies/egress.yaml` plus each profile's egress defaults.

    egress:
      provider_hosts: ["*.openai.com", ...]  # always denied; providers.yaml hosts are added
      orgs:                                  # what per-runner overrides may open, per org id
        "*": {allow: ["*"], private_ranges: []}

A runner's effective rules are its profile's (`profiles.yaml`: `network` and `egress`) plus its
overrides (`PUT /v1/runners/{id}/egress`), which must stay within its org's limits. Deny rules
may always be added. A profile with `network: gateway_only` takes no allow rule at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paddock_core import InvalidRequestError, PaddockError, PermissionDeniedError, Policies

from ._rules import (
    IPNetwork,
    ProviderHosts,
    RunnerRules,
    parse_network,
    parse_rules,
)

__all__ = ["EgressOverride", "EgressPolicy", "OrgLimits", "load_egress_policy"]

_MAX_RULES = 256


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrgLimits(_Frozen):
    allow: tuple[str, ...] = ("*",)
    """Host patterns a runner override may allow (an override rule must fall within one)."""
    private_ranges: tuple[str, ...] = ()
    """Non-global networks a runner override may open (e.g. an internal package mirror)."""


class EgressFile(_Frozen):
    provider_hosts: tuple[str, ...] = ()
    orgs: dict[str, OrgLimits] = Field(default_factory=lambda: {"*": OrgLimits()})


class EgressOverride(_Frozen):
    """A runner's own rules, on top of its profile's (stored on the runner record)."""

    allow: tuple[str, ...] = Field(default=(), max_length=_MAX_RULES)
    deny: tuple[str, ...] = Field(default=(), max_length=_MAX_RULES)
    private_ranges: tuple[str, ...] = Field(default=(), max_length=_MAX_RULES)


class EgressPolicy:
    """Effective rules per runner, and the check of overrides against org limits."""

    def __init__(
        self, policies: Policies, file: EgressFile, extra_provider_hosts: Iterable[str] = ()
    ) -> None:
        self._policies = policies
        self._file = file
        names = [*file.provider_hosts, *extra_provider_hosts]
        for spec in policies.providers.values():
            host = urlsplit(spec.base_url).hostname
            if host:
                names.append(host)
        self.provider_rules = tuple(dict.fromkeys(parse_rules(names, field_name="provider_hosts")))
        self._profiles = {
            name: (
                parse_rules(p.egress.allow, field_name=f"profiles.{name}.egress.allow"),
                parse_rules(p.egress.deny, field_name=f"profiles.{name}.egress.deny"),
            )
            for name, p in policies.profiles.items()
        }
        self._orgs = {
            org: (
                parse_rules(lim.allow, field_name=f"egress.orgs.{org}.allow"),
                tuple(parse_network(n) for n in lim.private_ranges),
            )
            for org, lim in file.orgs.items()
        }

    def providers(self, addresses: Iterable[Any] = ()) -> ProviderHosts:
        """Provider hosts with the addresses their names resolve to (found by the caller)."""
        return ProviderHosts(self.provider_rules, frozenset(addresses))

    def provider_names(self) -> list[str]:
        """Provider host names that can be resolved (exact names, not wildcards)."""
        return [r.name for r in self.provider_rules if r.kind == "exact"]

    def rules_for(self, profile_name: str, override: Mapping[str, Any] | None) -> RunnerRules:
        """The effective rules of a runner. An unknown profile gets no egress (fail closed)."""
        profile = self._policies.profiles.get(profile_name)
        if profile is None:
            return RunnerRules("gateway_only")
        allow, deny = self._profiles[profile_name]
        if profile.network == "gateway_only":
            return RunnerRules("gateway_only")
        extra = EgressOverride.model_validate(override or {})
        return RunnerRules(
            profile.network,
            allow=allow + parse_rules(extra.allow, field_name="allow"),
            deny=deny + parse_rules(extra.deny, field_name="deny"),
            private_ranges=tuple(parse_network(n) for n in extra.private_ranges),
        )

    def validate_override(
        self, org_id: str, profile_name: str, override: EgressOverride
    ) -> EgressOverride:
        """`override` normalised, if the profile and the org allow it; else 422/403."""
        profile = self._policies.profile(profile_name)
        allow = parse_rules(override.allow, field_name="allow")
        deny = parse_rules(override.deny, field_name="deny")
        ranges = tuple(parse_network(n) for n in override.private_ranges)
        if profile.network == "gateway_only" and (allow or ranges):
            raise PermissionDeniedError(
                f"profile {profile.name!r} allows no egress; only deny rules may be added",
                reason="profile_gateway_only",
            )
        for rule in allow:
            if rule.kind in ("exact", "suffix") and any(
                p.covers(rule) or (rule.kind == "exact" and p.matches_name(rule.name, 1))
                for p in self.provider_rules
                if p.kind != "network"
            ):
                raise InvalidRequestError(
                    f"{rule.text!r} is an LLM provider host: runners reach providers through "
                    "the gateway only",
                    field="allow",
                )
        limit_rules, limit_ranges = self._orgs.get(org_id) or self._orgs.get("*") or ((), ())
        for rule in allow:
            if not any(limit.covers(rule) for limit in limit_rules):
                raise PermissionDeniedError(
                    f"allow rule {rule.text!r} is outside what org {org_id} allows",
                    reason="outside_org_limits",
                )
        for net in ranges:
            if not any(_within(net, limit) for limit in limit_ranges):
                raise PermissionDeniedError(
                    f"private range {net} is outside what org {org_id} allows",
                    reason="outside_org_limits",
                )
        return EgressOverride(
            allow=tuple(r.text for r in allow),
            deny=tuple(r.text for r in deny),
            private_ranges=tuple(str(n) for n in ranges),
        )

    def describe(self, rules: RunnerRules) -> dict[str, Any]:
        """A runner's effective rules as plain data (for the API)."""
        return {
            "mode": rules.mode,
            "allow": [r.text for r in rules.allow],
            "deny": [r.text for r in rules.deny],
            "private_ranges": [str(n) for n in rules.private_ranges],
            "provider_hosts": [r.text for r in self.provider_rules],
        }


def _within(net: IPNetwork, limit: IPNetwork) -> bool:
    return net.version == limit.version and net.subnet_of(limit)  # type: ignore[arg-type]


def load_egress_policy(
    directory: Path, policies: Policies, *, extra_provider_hosts: Iterable[str] = ()
) -> EgressPolicy:
    """Load `egress.yaml` from the policies directory (absent: defaults) and check every rule."""
    path = directory / "egress.yaml"
    raw: Any = {}
    if path.exists():
        try:
            raw = (yaml.safe_load(path.read_text()) or {}).get("egress", {})
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise PaddockError(f"cannot read policy file {path}: {exc}") from exc
    try:
        file = EgressFile.model_validate(raw)
        return EgressPolicy(policies, file, extra_provider_hosts)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PaddockError(f"{path}: egress.{where}: {first['msg']}") from exc
    except InvalidRequestError as exc:
        raise PaddockError(f"{path} or profiles.yaml: {exc.field}: {exc.message}") from exc
