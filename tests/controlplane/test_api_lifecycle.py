"""Every legal and illegal transition through the REST API (fake backend: fast)."""

from __future__ import annotations

import httpx

from controlplane.backends.fake import FakeBackend
from tests.controlplane.helpers import event_types, transitions, wait_for_state


def create(api: httpx.Client, **body: object) -> dict[str, object]:
    response = api.post("/v1/runners", json={"profile": "minimal", **body})
    assert response.status_code == 201, response.text
    runner: dict[str, object] = response.json()
    assert runner["state"] == "provisioning"
    return runner


def test_full_lifecycle(api: httpx.Client, fake_backend: FakeBackend) -> None:
    runner = create(api, budget_usd=1.0)
    rid = str(runner["id"])
    wait_for_state(api, rid, {"ready"})

    session = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": 0.25})
    assert session.status_code == 201, session.text
    sid = session.json()["id"]
    assert api.get(f"/v1/runners/{rid}").json()["state"] == "running"
    assert api.get(f"/v1/runners/{rid}").json()["session_id"] == sid

    closed = api.post(f"/v1/sessions/{sid}/close")
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    assert api.get(f"/v1/runners/{rid}").json()["state"] == "ready"

    stopped = api.post(f"/v1/runners/{rid}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert api.delete(f"/v1/runners/{rid}").status_code == 204
    assert api.get(f"/v1/runners/{rid}").status_code == 404
    assert ("destroy", rid) in fake_backend.calls

    assert transitions(api, rid) == [
        ("provisioning", "ready"),
        ("ready", "running"),
        ("running", "ready"),
        ("ready", "stopping"),  # the intent, stored before the backend is asked
        ("stopping", "stopped"),  # what was observed
        ("stopped", "deleting"),
        ("deleting", "deleted"),
    ]
    assert event_types(api, rid) == [
        "runner.created",
        "runner.state_changed",  # provisioning -> ready
        "session.opened",
        "runner.state_changed",  # ready -> running
        "session.closed",
        "runner.state_changed",  # running -> ready
        "runner.state_changed",  # ready -> stopping
        "runner.state_changed",  # stopping -> stopped
        "runner.state_changed",  # stopped -> deleting
        "runner.state_changed",  # deleting -> deleted
        "runner.deleted",
    ]


def test_one_open_session_per_runner(api: httpx.Client) -> None:
    rid = str(create(api)["id"])
    wait_for_state(api, rid, {"ready"})
    first = api.post(f"/v1/runners/{rid}/sessions", json={})
    assert first.status_code == 201
    second = api.post(f"/v1/runners/{rid}/sessions", json={})
    assert second.status_code == 409
    assert second.json()["error"]["state"] == "running"
    assert second.json()["error"]["session_id"] == first.json()["id"]


def test_illegal_transitions_answer_409_with_state(
    api: httpx.Client, fake_backend: FakeBackend
) -> None:
    fake_backend.ready_after = None  # never ready: the runner stays provisioning
    rid = str(create(api)["id"])
    opened = api.post(f"/v1/runners/{rid}/sessions", json={})
    assert opened.status_code == 409
    error = opened.json()["error"]
    assert error["code"] == "conflict" and error["state"] == "provisioning"
    assert "provisioning" in error["message"]

    assert api.post(f"/v1/runners/{rid}/stop").json()["state"] == "stopped"
    for path in (f"/v1/runners/{rid}/sessions",):
        response = api.post(path, json={})
        assert response.status_code == 409 and response.json()["error"]["state"] == "stopped"
    # Stopping a stopped runner is idempotent, not an error.
    assert api.post(f"/v1/runners/{rid}/stop").status_code == 200
    assert transitions(api, rid) == [("provisioning", "stopping"), ("stopping", "stopped")]


def test_session_close_is_idempotent_and_closed_session_takes_no_message(api: httpx.Client) -> None:
    rid = str(create(api)["id"])
    wait_for_state(api, rid, {"ready"})
    sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    assert api.post(f"/v1/sessions/{sid}/close").status_code == 200
    again = api.post(f"/v1/sessions/{sid}/close")
    assert again.status_code == 200 and again.json()["close_reason"] == "requested"
    message = api.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
    assert message.status_code == 409
    assert "closed" in message.json()["error"]["message"]


def test_stop_while_running_closes_the_session(api: httpx.Client) -> None:
    rid = str(create(api)["id"])
    wait_for_state(api, rid, {"ready"})
    sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    assert api.post(f"/v1/runners/{rid}/stop").json()["state"] == "stopped"
    session = api.get(f"/v1/sessions/{sid}").json()
    assert session["state"] == "closed" and session["close_reason"] == "runner_stopped"
    assert api.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}).status_code == 409


def test_delete_of_a_live_runner_removes_it_through_deleting(
    api: httpx.Client, fake_backend: FakeBackend
) -> None:
    rid = str(create(api)["id"])
    wait_for_state(api, rid, {"ready"})
    sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    assert api.delete(f"/v1/runners/{rid}").status_code == 204
    assert [c for c in fake_backend.calls if c[1] == rid][-1] == ("destroy", rid)
    assert api.get("/v1/runners").json()["runners"] == []
    assert transitions(api, rid)[-2:] == [("running", "deleting"), ("deleting", "deleted")]
    assert api.get(f"/v1/sessions/{sid}").json()["close_reason"] == "runner_deleted"
    # A second delete of a deleted runner: 404, as for any unknown id.
    assert api.delete(f"/v1/runners/{rid}").status_code == 404


def test_provision_failure_moves_to_failed_with_reason(
    api: httpx.Client, fake_backend: FakeBackend
) -> None:
    fake_backend.fail_provision = "engine said no"
    rid = str(create(api)["id"])
    runner = wait_for_state(api, rid, {"failed"})
    assert runner["failure"] == {"code": "backend_error", "message": "engine said no"}
    assert transitions(api, rid) == [("provisioning", "failed")]
    assert api.post(f"/v1/runners/{rid}/stop").status_code == 409


def test_runner_that_exits_during_boot_fails_with_its_reason(
    api: httpx.Client, fake_backend: FakeBackend
) -> None:
    fake_backend.exit_on_probe = (3, "paddock gateway unreachable at http://x/v1")
    rid = str(create(api)["id"])
    runner = wait_for_state(api, rid, {"failed"})
    assert runner["failure"]["code"] == "gateway_unreachable"
    assert "unreachable" in runner["failure"]["message"]


def test_probe_timeout_fails_the_runner(api: httpx.Client, fake_backend: FakeBackend) -> None:
    fake_backend.ready_after = None
    rid = str(create(api)["id"])
    runner = wait_for_state(api, rid, {"failed"}, timeout_s=15)  # ready_timeout_s is 5
    assert runner["failure"]["code"] == "probe_timeout"
    assert ("stop", rid) in fake_backend.calls
