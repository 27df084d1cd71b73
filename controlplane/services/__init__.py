"""Services: the control plane's behaviour, free of HTTP. Routes call these."""

from .audit import SPEND_GROUPS, AuditService, SpendGroup, VerifyResult
from .follow import FollowService, SpendTotals
from .plan import RunnerRequest
from .runners import Principal, RunnerService
from .sessions import MessageEvent, SessionService, SpendReport
from .tenancy import TenancyService

__all__ = [
    "SPEND_GROUPS",
    "AuditService",
    "FollowService",
    "MessageEvent",
    "Principal",
    "RunnerRequest",
    "RunnerService",
    "SessionService",
    "SpendGroup",
    "SpendReport",
    "SpendTotals",
    "TenancyService",
    "VerifyResult",
]
