"""The chain as configuration: policies/chain.yaml (order, default step settings, per-org
settings) and policies/plans.yaml (plans, their entitlements and their step settings).

An org's step settings are the defaults, then its plan's, then its own (from chain.yaml or
from its `org_gateway` record, set through the control plane), merged key by key. Everything
is validated when the gateway starts (every plan, every org named in the files), so a typo is
a startup error that names the file and the setting, not a 500 on the first call.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paddock_core import InvalidRequestError

from ._base import PolicyCheck
from ._chain import PolicyChain

if TYPE_CHECKING:  # _deps needs this module's error (through _scan): no import cycle
    from ._deps import ChainDeps

__all__ = [
    "ChainPolicy",
    "Entitlements",
    "Plan",
    "PolicyConfigError",
    "StepSettings",
    "StepSpec",
    "matches_any",
]


class PolicyConfigError(InvalidRequestError):
    """A policy file (or an org's policy override) is invalid; the message names where (and
    `field` the setting, for overrides sent through the control plane)."""

    code = "invalid_policy"


class StepSettings(BaseModel):
    """Base of every step's settings. `enabled: false` switches the step off."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True


S = TypeVar("S", bound=StepSettings)


class Entitlements(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    streaming: bool = True
    tools: bool = True
    reasoning: bool = True


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    active: bool = True
    """False: the plan is closed (its orgs' calls are refused by step 1)."""
    endpoints: tuple[str, ...] = ("chat", "responses", "embeddings", "messages", "count_tokens")
    entitlements: Entitlements = Entitlements()
    models: tuple[str, ...] = ("*",)
    """Model names (globs) the plan may use: the requested name or `provider/model`."""
    skills: tuple[str, ...] = ("*",)
    """Tool names (globs) requests may offer."""
    profiles: tuple[str, ...] = ("*",)
    """Tool profiles (globs) the org's runners may use (checked when a runner is created)."""
    sandboxes: tuple[str, ...] = ("*",)
    """Sandbox levels (globs) the org's runners may use."""
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Step settings for the plan's orgs, over chain.yaml's defaults."""


def matches_any(names: Sequence[str], patterns: Sequence[str]) -> bool:
    """True when any of `names` matches any glob of `patterns` (`*`, `?`, `[...]`)."""
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


@dataclass(frozen=True)
class StepSpec(Generic[S]):
    """One step: its name, its settings model and how to build its check for one plan."""

    name: str
    settings: type[S]
    build: Callable[[S, Plan, ChainDeps], PolicyCheck]


class _OrgPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    plan: str | None = None
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)


class _ChainFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    order: tuple[str, ...]
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    orgs: dict[str, _OrgPolicy] = Field(default_factory=dict)


class _PlansFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default_plan: str
    plans: dict[str, Plan]


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyConfigError(f"cannot read policy file {path}: {exc}") from exc


def _where(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]) + f": {first['msg']}"


def _parse(path: Path, model: type[BaseModel], data: Any) -> Any:
    if isinstance(data, dict) and model is _PlansFile and isinstance(data.get("plans"), dict):
        data = {**data, "plans": {k: {"name": k, **(v or {})} for k, v in data["plans"].items()}}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PolicyConfigError(f"{path}: {_where(exc)}") from exc


class ChainPolicy:
    """The validated chain and plan files, and each org's chain built from them (kept per
    distinct (plan, override) so orgs that share a policy share one chain)."""

    def __init__(
        self,
        steps: Mapping[str, StepSpec[Any]],
        chain_file: _ChainFile,
        plans_file: _PlansFile,
        *,
        source: str = "policies",
    ) -> None:
        self._specs = dict(steps)
        self._file = chain_file
        self._plans = plans_file
        self._source = source
        self._built: dict[str, PolicyChain] = {}
        self._last: dict[tuple[str, str | None], tuple[object, PolicyChain]] = {}
        for name in chain_file.order:
            if name not in self._specs:
                raise PolicyConfigError(
                    f"{source}/chain.yaml: order: unknown step {name!r}; "
                    f"known steps: {sorted(self._specs)}"
                )
        if len(set(chain_file.order)) != len(chain_file.order):
            raise PolicyConfigError(f"{source}/chain.yaml: order: a step is listed twice")
        if plans_file.default_plan not in plans_file.plans:
            raise PolicyConfigError(
                f"{source}/plans.yaml: default_plan: unknown plan {plans_file.default_plan!r}"
            )
        # Validate now: the defaults alone, every plan as is, and every org the file names.
        for name, given in chain_file.steps.items():
            if name not in self._specs:
                raise PolicyConfigError(f"{source}/chain.yaml: steps: unknown step {name!r}")
            try:
                self._specs[name].settings.model_validate(given or {})
            except ValidationError as exc:
                raise PolicyConfigError(
                    f"{source}/chain.yaml: steps.{name}.{_where(exc)}"
                ) from exc
        for plan in plans_file.plans.values():
            self.resolve(None, plan.name, {}, where=f"{source}/plans.yaml: plans.{plan.name}")
        for org_id, org in chain_file.orgs.items():
            where = f"{source}/chain.yaml: orgs.{org_id}"
            self.resolve(org_id, org.plan, {}, where=where)

    @classmethod
    def load(cls, directory: Path, steps: Mapping[str, StepSpec[Any]]) -> ChainPolicy:
        chain_path, plans_path = directory / "chain.yaml", directory / "plans.yaml"
        chain_file = _parse(chain_path, _ChainFile, _read_yaml(chain_path))
        plans_file = _parse(plans_path, _PlansFile, _read_yaml(plans_path))
        return cls(steps, chain_file, plans_file, source=str(directory))

    @property
    def plans(self) -> Mapping[str, Plan]:
        return self._plans.plans

    def plan_of(self, org_id: str, chosen: str | None = None) -> Plan:
        name = chosen or self._file.orgs.get(org_id, _OrgPolicy()).plan
        return self._plans.plans[name or self._plans.default_plan]

    def resolve(
        self,
        org_id: str | None,
        plan_name: str | None,
        overrides: Mapping[str, Mapping[str, Any]],
        *,
        where: str = "org policy",
    ) -> tuple[Plan, list[tuple[StepSpec[Any], StepSettings]]]:
        """The plan and each enabled step's validated settings, in order, for one org.
        `overrides`: the org's own step settings (over the file's); a bad one raises
        `PolicyConfigError` naming `where` and the setting."""
        if plan_name is not None and plan_name not in self._plans.plans:
            raise PolicyConfigError(
                f"{where}: plan: unknown plan {plan_name!r}; known: {sorted(self._plans.plans)}",
                field="plan",
            )
        plan = self.plan_of(org_id or "", plan_name)
        in_file = self._file.orgs.get(org_id or "", _OrgPolicy()).steps
        for layer in (in_file, overrides):
            for name in layer:
                if name not in self._specs:
                    raise PolicyConfigError(
                        f"{where}: steps: unknown step {name!r}", field=f"steps.{name}"
                    )
        out: list[tuple[StepSpec[Any], StepSettings]] = []
        for name in self._file.order:
            spec = self._specs[name]
            merged: dict[str, Any] = {}
            for layer in (self._file.steps, plan.steps, in_file, overrides):
                merged.update(layer.get(name) or {})
            try:
                settings = spec.settings.model_validate(merged)
            except ValidationError as exc:
                raise PolicyConfigError(
                    f"{where}: steps.{name}.{_where(exc)}", field=f"steps.{name}"
                ) from exc
            if settings.enabled:
                out.append((spec, settings))
        return plan, out

    def chain_for(
        self,
        org_id: str,
        deps: ChainDeps,
        plan_name: str | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> PolicyChain:
        # The org's settings object is the same one on every call until it is read again
        # (gateway._orgs keeps it for a few seconds): the same object is the same chain,
        # found without encoding the overrides.
        scope = (org_id if org_id in self._file.orgs else "", plan_name)
        last = self._last.get(scope)
        if last is not None and last[0] is overrides:
            return last[1]
        key = json.dumps([scope, overrides or {}], sort_keys=True, default=str)
        chain = self._built.get(key)
        if chain is None:
            plan, steps = self.resolve(org_id, plan_name, overrides or {})
            described = [[spec.name, s.model_dump(mode="json")] for spec, s in steps]
            digest = hashlib.sha256(
                json.dumps([plan.name, described], sort_keys=True).encode()
            ).hexdigest()[:12]
            checks = [spec.build(settings, plan, deps) for spec, settings in steps]
            chain = PolicyChain(checks, version=f"{plan.name}:{digest}")
            self._built[key] = chain
        if len(self._last) >= 10_000:
            self._last.clear()
        self._last[scope] = (overrides, chain)  # held: its id cannot be reused meanwhile
        return chain
