"""The state machine as data: every (state, trigger) pair, legal or not."""

from __future__ import annotations

import pytest

from controlplane.domain import TRANSITIONS, Lifecycle, RunnerState
from paddock_core import ConflictError

LEGAL = {
    ("provisioning", "became_ready"): "ready",
    ("ready", "open_session"): "running",
    ("running", "close_session"): "ready",
    ("provisioning", "stop"): "stopped",
    ("ready", "stop"): "stopped",
    ("running", "stop"): "stopped",
    ("provisioning", "fail"): "failed",
    ("ready", "fail"): "failed",
    ("running", "fail"): "failed",
}
TRIGGERS = sorted({t["trigger"] for t in TRANSITIONS})


@pytest.mark.parametrize("state", [s.value for s in RunnerState])
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_pair(state: str, trigger: str) -> None:
    lifecycle = Lifecycle()
    expected = LEGAL.get((state, trigger))
    if expected is None:
        with pytest.raises(ConflictError) as info:
            lifecycle.next_state(state, trigger)
        assert info.value.details["state"] == state
        assert state in info.value.message
    else:
        assert lifecycle.next_state(state, trigger) == expected


def test_terminal_states_allow_nothing() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.triggers("stopped") == []
    assert lifecycle.triggers("failed") == []


def test_unknown_trigger_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown trigger"):
        Lifecycle().next_state("ready", "teleport")
