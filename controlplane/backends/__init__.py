"""Runner backends behind one port. Import a concrete backend from its module."""

from .base import (
    LABEL_CONTROLPLANE,
    LABEL_EXPIRES,
    LABEL_MANAGED,
    LABEL_ORG,
    LABEL_POOL,
    LABEL_RUNNER,
    BackendCapabilities,
    ObservedRunner,
    ProbeResult,
    RunnerBackend,
    RunnerSpec,
    SupportsPause,
    SupportsPool,
)

__all__ = [
    "LABEL_CONTROLPLANE",
    "LABEL_EXPIRES",
    "LABEL_MANAGED",
    "LABEL_ORG",
    "LABEL_POOL",
    "LABEL_RUNNER",
    "BackendCapabilities",
    "ObservedRunner",
    "ProbeResult",
    "RunnerBackend",
    "RunnerSpec",
    "SupportsPause",
    "SupportsPool",
]
