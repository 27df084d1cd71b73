"""The runner state machine, declared as data and checked with `transitions`.

The machine only answers "from this state, does this trigger lead somewhere, and where?".
Callbacks would be bookkeeping at most; the service does the I/O and persists each transition
with compare-and-set on (runner id, version), together with its audit record.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from transitions import Machine, MachineError

from paddock_core import ConflictError

__all__ = ["TRANSITIONS", "Lifecycle", "RunnerState"]


class RunnerState(StrEnum):
    PROVISIONING = "provisioning"
    POOLED = "pooled"
    READY = "ready"
    RUNNING = "running"
    SUSPENDED = "suspended"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


S = RunnerState
_LIVE = [S.PROVISIONING, S.POOLED, S.READY, S.RUNNING, S.SUSPENDED]
_SERVING = [S.READY, S.RUNNING]
# Intent states (`stopping`, `deleting`) are persisted before the backend is asked; the
# reconciler finishes them after a crash. Every state but `deleted` may be deleted.
_DELETABLE = [*_LIVE, S.STOPPING, S.STOPPED, S.FAILED]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "became_ready", "source": S.PROVISIONING, "dest": S.READY},
    {"trigger": "became_warm", "source": S.PROVISIONING, "dest": S.POOLED},
    {"trigger": "claim", "source": S.POOLED, "dest": S.PROVISIONING},
    {"trigger": "open_session", "source": S.READY, "dest": S.RUNNING},
    {"trigger": "close_session", "source": S.RUNNING, "dest": S.READY},
    {"trigger": "suspend", "source": _SERVING, "dest": S.SUSPENDED},
    {"trigger": "resume", "source": S.SUSPENDED, "dest": S.READY},
    {"trigger": "resume_session", "source": S.SUSPENDED, "dest": S.RUNNING},
    {"trigger": "stop", "source": _LIVE, "dest": S.STOPPING},
    {"trigger": "stopped", "source": S.STOPPING, "dest": S.STOPPED},
    {"trigger": "fail", "source": [*_LIVE, S.STOPPING], "dest": S.FAILED},
    {"trigger": "delete", "source": _DELETABLE, "dest": S.DELETING},
    {"trigger": "deleted", "source": S.DELETING, "dest": S.DELETED},
]

# Plain words for error messages: "cannot open a session on a runner that is stopped".
_VERBS = {
    "became_ready": "mark ready",
    "became_warm": "mark warm",
    "claim": "claim",
    "open_session": "open a session on",
    "close_session": "close the session of",
    "suspend": "suspend",
    "resume": "resume",
    "resume_session": "resume",
    "stop": "stop",
    "stopped": "finish stopping",
    "fail": "fail",
    "delete": "delete",
    "deleted": "finish deleting",
}


class _Subject:
    """A throwaway model carrying one runner's current state through the machine."""

    state: str


class Lifecycle:
    """Answers transition questions; holds no runner state of its own."""

    def __init__(self) -> None:
        self._machine = Machine(
            model=None,
            states=[s.value for s in RunnerState],
            transitions=[
                {**t, "source": _values(t["source"]), "dest": str(t["dest"])} for t in TRANSITIONS
            ],
            initial=RunnerState.PROVISIONING.value,
            auto_transitions=False,
        )

    def next_state(self, current: str, trigger: str) -> RunnerState:
        """The state `trigger` leads to from `current`; ConflictError (409) if it is illegal."""
        if trigger not in _VERBS:
            raise ValueError(f"unknown trigger {trigger!r}")
        subject = _Subject()
        self._machine.add_model(subject, initial=current)
        try:
            subject.trigger(trigger)  # type: ignore[attr-defined]
        except MachineError:
            raise ConflictError(
                f"cannot {_VERBS[trigger]} a runner that is {current}",
                state=current,
                allowed=self.triggers(current),
            ) from None
        finally:
            self._machine.remove_model(subject)
        return RunnerState(subject.state)

    def triggers(self, state: str) -> list[str]:
        return sorted(self._machine.get_triggers(state))

    def is_live(self, state: str) -> bool:
        """Its container should exist and run (or be paused, when suspended)."""
        return state in {s.value for s in _LIVE}


def _values(source: Any) -> Any:
    if isinstance(source, list):
        return [str(s) for s in source]
    return str(source)
