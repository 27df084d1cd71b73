"""Bad input answers a 4xx JSON error naming the problem, and creates nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.controlplane.helpers import wait_for_state


def assert_nothing_created(api: httpx.Client) -> None:
    assert api.get("/v1/runners").json()["runners"] == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"profile": "superuser"}, 422, "profile"),
        ({"profile": "minimal", "sandbox": "chroot"}, 422, "sandbox"),
        ({"profile": "minimal", "budget_usd": -1}, 422, "budget_usd"),
        ({"profile": "minimal", "budget_usd": "lots"}, 422, "budget_usd"),
        ({"profile": "minimal", "image": "ubuntu:latest"}, 422, "image"),
        ({"profile": "minimal", "model": "no-such-model"}, 422, "model"),
        ({"profile": "minimal", "privileged": True}, 422, "privileged"),
        ({"profile": "minimal", "api": "grpc"}, 422, "api"),
        ({"profile": "minimal", "image": "probe", "api": "anthropic-messages"}, 422, "api"),
        ({}, 422, "profile"),
        ([], 422, "body"),
    ],
)
def test_create_runner_rejects(api: httpx.Client, body: object, status: int, field: str) -> None:
    response = api.post("/v1/runners", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert field in error["message"] or error["message"]
    assert_nothing_created(api)


def test_malformed_json(api: httpx.Client) -> None:
    response = api.post(
        "/v1/runners",
        content=b'{"profile": "minimal",',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert "JSON" in response.json()["error"]["message"]
    assert_nothing_created(api)


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    for method, path in [
        ("GET", "/v1/runners/rn_nope"),
        ("POST", "/v1/runners/rn_nope/stop"),
        ("DELETE", "/v1/runners/rn_nope"),
        ("GET", "/v1/runners/rn_nope/events"),
        ("POST", "/v1/runners/rn_nope/sessions"),
        ("GET", "/v1/sessions/ses_nope"),
        ("GET", "/v1/sessions/ses_nope/spend"),
        ("POST", "/v1/sessions/ses_nope/close"),
    ]:
        response = api.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    response = api.post("/v1/sessions/ses_nope/messages", json={"content": "hi"})
    assert response.status_code == 404


def test_bad_session_and_message_bodies(api: httpx.Client) -> None:
    rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(api, rid, {"ready"})
    bad = api.post(f"/v1/runners/{rid}/sessions", json={"budget_usd": -0.5})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "budget_usd"
    assert api.get(f"/v1/runners/{rid}").json()["state"] == "ready"  # nothing half-done
    sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    empty = api.post(f"/v1/sessions/{sid}/messages", json={"content": ""})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "content"
    missing = api.post(f"/v1/sessions/{sid}/messages", json={"text": "hi"})
    assert missing.status_code == 422


def test_authentication_required(api: httpx.Client) -> None:
    anonymous = httpx.get(f"{api.base_url}/v1/runners")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    wrong = httpx.get(f"{api.base_url}/v1/runners", headers={"Authorization": "Bearer pdk_wrong"})
    assert wrong.status_code == 401
