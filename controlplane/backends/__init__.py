"""Runner backends behind one port. Import a concrete backend from its module."""

from .base import (
    LABEL_CONTROLPLANE,
    LABEL_MANAGED,
    LABEL_ORG,
    LABEL_RUNNER,
    BackendCapabilities,
    ObservedRunner,
    ProbeResult,
    RunnerBackend,
    RunnerSpec,
)

__all__ = [
    "LABEL_CONTROLPLANE",
    "LABEL_MANAGED",
    "LABEL_ORG",
    "LABEL_RUNNER",
    "BackendCapabilities",
    "ObservedRunner",
    "ProbeResult",
    "RunnerBackend",
    "RunnerSpec",
]
