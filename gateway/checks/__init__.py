"""The governance chain: a frozen `CallContext` in, one `Decision` out, per step, in the order
policies/chain.yaml gives; see `_base` for the port and `steps/` for the fifteen steps."""

from ._alerts import SIGNATURE_HEADER, AlertTarget, BudgetAlerts
from ._base import (
    ALLOW,
    Allow,
    CallContext,
    Decision,
    Deny,
    Hold,
    Outcome,
    PolicyCheck,
    Settlement,
    TokenPrice,
)
from ._chain import ChainResult, PolicyChain, settle_all
from ._config import ChainPolicy, Plan, PolicyConfigError, StepSettings, StepSpec, matches_any
from ._content import Text, extract_texts, rewrite_texts, with_max_output_tokens
from ._deps import ChainDeps, Classify, Verdict
from ._scan import ContentPolicies
from .steps import STEPS

__all__ = [
    "ALLOW",
    "SIGNATURE_HEADER",
    "STEPS",
    "AlertTarget",
    "BudgetAlerts",
    "Allow",
    "CallContext",
    "ChainDeps",
    "ChainPolicy",
    "ChainResult",
    "Classify",
    "ContentPolicies",
    "Decision",
    "Deny",
    "Hold",
    "Outcome",
    "Plan",
    "PolicyChain",
    "PolicyCheck",
    "PolicyConfigError",
    "Settlement",
    "StepSettings",
    "StepSpec",
    "Text",
    "TokenPrice",
    "Verdict",
    "extract_texts",
    "matches_any",
    "rewrite_texts",
    "settle_all",
    "with_max_output_tokens",
]
