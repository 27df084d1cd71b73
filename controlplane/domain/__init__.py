"""Domain: the runner lifecycle as data. No I/O."""

from .lifecycle import TRANSITIONS, Lifecycle, RunnerState

__all__ = ["TRANSITIONS", "Lifecycle", "RunnerState"]
