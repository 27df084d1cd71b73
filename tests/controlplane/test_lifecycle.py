"""The state machine as data: every (state, trigger) pair, legal or not."""

from __future__ import annotations

import pytest

from controlplane.domain import TRANSITIONS, Lifecycle, RunnerState
from paddock_core import ConflictError

LIVE = ("provisioning", "pooled", "ready", "running", "suspended")
LEGAL = {
    ("provisioning", "became_ready"): "ready",
    ("provisioning", "became_warm"): "pooled",
    ("pooled", "claim"): "provisioning",
    ("ready", "open_session"): "running",
    ("running", "close_session"): "ready",
    ("ready", "suspend"): "suspended",
    ("running", "suspend"): "suspended",
    ("suspended", "resume"): "ready",
    ("suspended", "resume_session"): "running",
    **{(s, "stop"): "stopping" for s in LIVE},
    ("stopping", "stopped"): "stopped",
    **{(s, "fail"): "failed" for s in (*LIVE, "stopping")},
    **{(s, "delete"): "deleting" for s in (*LIVE, "stopping", "stopped", "failed")},
    ("deleting", "deleted"): "deleted",
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


def test_terminal_states_allow_only_delete() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.triggers("stopped") == ["delete"]
    assert lifecycle.triggers("failed") == ["delete"]
    assert lifecycle.triggers("deleted") == []


def test_unknown_trigger_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown trigger"):
        Lifecycle().next_state("ready", "teleport")
