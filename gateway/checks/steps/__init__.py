"""The chain's steps, one module each. `STEPS` is what policies/chain.yaml may name.

    1 plan             403   8 session_budget   403
    2 body_size        413   9 pii              400
    3 rate_limit       429  10 content_safety   400/403
    4 entitlement      403  11 security_scan    400/403
    5 reasoning_cap    400  12 classifier       403
    6 cost_estimate    403  13 model_allowlist  403
    7 budget           403  14 skill_allowlist  403
                            15 approval         202
"""

from __future__ import annotations

from typing import Any

from .._config import StepSpec
from . import (
    approval,
    body_size,
    cost_estimate,
    entitlement,
    model_allowlist,
    plan,
    session_budget,
    skill_allowlist,
)

__all__ = ["STEPS"]

STEPS: dict[str, StepSpec[Any]] = {
    m.SPEC.name: m.SPEC
    for m in (
        plan,
        body_size,
        entitlement,
        cost_estimate,
        session_budget,
        model_allowlist,
        skill_allowlist,
        approval,
    )
}
