"""What a runner is made from: a checked request, before any record or container exists.

`plan()` refuses a bad request with a 4xx naming the field; `RunnerPlan.env()` is the runner
contract's environment (see runner_images/README.md). A pooled runner starts with the part of
it that holds no per-runner secret and is handed the rest at claim.
"""

from __future__ import annotations

from dataclasses import dataclass

from paddock_core import InvalidRequestError, Policies, Profile, SandboxLevel

from ..backends import RunnerBackend
from ..settings import ControlPlaneSettings
from .agent_config import AGENT_APIS, DEFAULT_API, encode_config, render_openclaw_config

__all__ = ["CLAIM_HEADER", "POOLED_MODEL", "RunnerPlan", "RunnerRequest", "plan"]

CLAIM_HEADER = "x-paddock-claim"
"""The header a claim presents its secret in (see `RunnerService.claim_secret`)."""

POOLED_MODEL = "paddock-pooled"
"""The model id in a pooled runner's config; the runner's relay swaps in the claimed model."""


@dataclass(frozen=True)
class RunnerRequest:
    profile: str
    sandbox: str
    budget_usd: float | None
    image: str | None = None
    model: str | None = None
    ttl_s: float | None = None
    """Maximum lifetime in seconds; the plane's `runner_ttl_s` caps it."""
    api: str = DEFAULT_API
    """The API the agent speaks to the gateway (`AGENT_APIS`)."""


@dataclass(frozen=True)
class RunnerPlan:
    profile: Profile
    sandbox: SandboxLevel
    image_kind: str
    image: str
    model: str
    budget_usd: float | None
    ttl_s: float | None
    api: str = DEFAULT_API

    @property
    def pool_key(self) -> str:
        """The warm pool that can serve this plan: `image/profile/sandbox`."""
        return f"{self.image_kind}/{self.profile.name}/{self.sandbox.name}"

    def base_env(self, runner_id: str) -> dict[str, str]:
        """The environment without any per-runner secret (what a pooled container holds)."""
        return {
            "PADDOCK_RUNNER_ID": runner_id,
            "PADDOCK_EXEC_MODE": self.profile.exec,
            "PADDOCK_EXEC_ALLOWLIST": ",".join(self.profile.exec_allowlist),
            "OPENCLAW_NO_AUTO_UPDATE": "1",
        }

    def pooled_env(self, runner_id: str, *, claim_secret: str) -> dict[str, str]:
        """A warm-pool runner's: no runner secret, only the one its claim must present; the
        config names a placeholder model."""
        config = render_openclaw_config(self.profile, model=POOLED_MODEL)
        return {
            **self.base_env(runner_id),
            "PADDOCK_AWAIT_CLAIM": "1",
            "PADDOCK_CLAIM_SECRET": claim_secret,
            "PADDOCK_AGENT_CONFIG": encode_config(config),
        }

    def env(self, runner_id: str, *, token: str, agent_token: str) -> dict[str, str]:
        config = render_openclaw_config(self.profile, model=self.model, api=self.api)
        return {
            **self.base_env(runner_id),
            "PADDOCK_RUNNER_TOKEN": token,
            "PADDOCK_MODEL": self.model,
            "OPENCLAW_GATEWAY_TOKEN": agent_token,
            "PADDOCK_AGENT_CONFIG": encode_config(config),
        }


def plan(
    req: RunnerRequest,
    *,
    settings: ControlPlaneSettings,
    policies: Policies,
    backend: RunnerBackend,
) -> RunnerPlan:
    """Check a request against policies, images and the backend; 4xx naming the field."""
    profile = policies.profile(req.profile)
    sandbox = policies.sandbox_level(req.sandbox)
    if req.sandbox not in backend.capabilities.sandboxes:
        raise InvalidRequestError(
            f"sandbox {req.sandbox!r} is not available on the {backend.name} backend",
            field="sandbox",
        )
    if (refusal := backend.capabilities.refusal(profile, req.sandbox)) is not None:
        # Refused before anything exists, rather than silently weakened on this backend.
        raise InvalidRequestError(f"{refusal} ({backend.name} backend)", field="profile")
    image_kind = req.image or settings.default_image
    if image_kind not in settings.images:
        raise InvalidRequestError(
            f"unknown image {image_kind!r}; expected one of {sorted(settings.images)}",
            field="image",
        )
    if req.api not in AGENT_APIS:
        raise InvalidRequestError(
            f"unknown api {req.api!r}; expected one of {list(AGENT_APIS)}", field="api"
        )
    if req.api != DEFAULT_API and image_kind != "openclaw":
        # The probe image speaks one API; refused rather than silently ignored.
        raise InvalidRequestError(
            f"the {image_kind!r} image speaks {DEFAULT_API} only", field="api"
        )
    model = req.model or settings.default_model
    if model not in policies.prices and not any(
        model.startswith(p) for spec in policies.providers.values() for p in spec.model_prefixes
    ):
        raise InvalidRequestError(f"unknown model {model!r}", field="model")
    ttl = req.ttl_s
    if settings.runner_ttl_s is not None:
        ttl = settings.runner_ttl_s if ttl is None else min(ttl, settings.runner_ttl_s)
    return RunnerPlan(
        profile=profile,
        sandbox=sandbox,
        image_kind=image_kind,
        image=settings.images[image_kind],
        model=model,
        budget_usd=req.budget_usd,
        ttl_s=ttl,
        api=req.api,
    )
