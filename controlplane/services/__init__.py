"""Services: the control plane's behaviour, free of HTTP. Routes call these."""

from .runners import Principal, RunnerRequest, RunnerService
from .sessions import MessageEvent, SessionService, SpendReport

__all__ = [
    "MessageEvent",
    "Principal",
    "RunnerRequest",
    "RunnerService",
    "SessionService",
    "SpendReport",
]
