"""The chain's steps, one module each. `STEPS` is what policies/chain.yaml may name.

    1 plan             403   8 session_budget   403
    2 body_size        413   9 pii              400
    3 rate_limit       429  10 content_safety   400
    4 entitlement      403  11 security_scan    403
    5 reasoning_cap    400  12 classifier       403 (503 when it fails closed)
    6 cost_estimate    403  13 model_allowlist  403
    7 budget           403  14 skill_allowlist  403
                            15 approval         202
    and, after 8: loop_guard 403 (or held): an agent calling tools in a loop;
                  spend_velocity (held, or 403): USD per minute over a limit.
"""

from __future__ import annotations

from typing import Any

from .._config import StepSpec
from . import (
    approval,
    body_size,
    budget,
    classifier,
    content_safety,
    cost_estimate,
    entitlement,
    loop_guard,
    model_allowlist,
    pii,
    plan,
    rate_limit,
    reasoning_cap,
    security_scan,
    session_budget,
    skill_allowlist,
    spend_velocity,
)

__all__ = ["STEPS"]

STEPS: dict[str, StepSpec[Any]] = {
    m.SPEC.name: m.SPEC
    for m in (
        plan,
        body_size,
        rate_limit,
        entitlement,
        reasoning_cap,
        cost_estimate,
        budget,
        session_budget,
        loop_guard,
        spend_velocity,
        pii,
        content_safety,
        security_scan,
        classifier,
        model_allowlist,
        skill_allowlist,
        approval,
    )
}
