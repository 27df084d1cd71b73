"""Tenancy: org B never sees org A's objects (404 everywhere), roles limit what keys may do,
revoked and expired keys are refused, keys are shown once and stored hashed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from tests.controlplane.conftest import ADMIN_KEY
from tests.controlplane.helpers import seed_approval, wait_for_state
from tests.support.servers import serve_app


@dataclass
class Org:
    id: str
    admin: httpx.Client


@pytest.fixture
def platform(cp_settings: ControlPlaneSettings, fake_backend: FakeBackend) -> Iterator[str]:
    app = create_app(cp_settings, backend=fake_backend)
    with serve_app(app) as url:
        yield url


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def new_org(url: str, name: str) -> Org:
    with client(url, ADMIN_KEY) as root:
        org = root.post("/v1/orgs", json={"name": name})
        assert org.status_code == 201, org.text
        key = root.post(
            "/v1/keys", json={"name": f"{name}-admin", "role": "admin", "org_id": org.json()["id"]}
        )
        assert key.status_code == 201, key.text
    return Org(org.json()["id"], client(url, key.json()["key"]))


def make_key(org: Org, role: str, **extra: object) -> str:
    response = org.admin.post("/v1/keys", json={"name": role, "role": role, **extra})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def populate(org: Org) -> dict[str, str]:
    """One of every object an org owns."""
    api = org.admin
    rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(api, rid, {"ready"})
    sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    team = api.post("/v1/teams", json={"name": "t"}).json()["id"]
    key_id = api.post("/v1/keys", json={"name": "k", "role": "viewer"}).json()["id"]
    return {
        "runner_id": rid,
        "session_id": sid,
        "team_id": team,
        "key_id": key_id,
        "org_id": org.id,
    }


def test_every_route_hides_other_orgs_objects(
    platform: str, cp_settings: ControlPlaneSettings
) -> None:
    a, b = new_org(platform, "a"), new_org(platform, "b")
    ids = populate(a)
    ids["approval_id"] = seed_approval(cp_settings.resolved_database_url(), a.id)
    bodies = {
        "/v1/runners/{runner_id}/sessions": {},
        "/v1/sessions/{session_id}/messages": {"content": "hi"},
        "/v1/runners/{runner_id}/egress": {},
        "/v1/orgs/{org_id}/policy": {},
        "/v1/orgs/{org_id}/transcripts": {"content": True},
        "/v1/approvals/{approval_id}/approve": {"reason": "x"},
        "/v1/approvals/{approval_id}/reject": {"reason": "x"},
    }
    schema = create_app(ControlPlaneSettings(admin_key="x"), backend=FakeBackend()).openapi()
    checked = 0
    for template, operations in schema["paths"].items():
        if "{" not in template:
            continue
        for method in operations:
            response = b.admin.request(method, template.format(**ids), json=bodies.get(template))
            assert response.status_code == 404, (method, template, response.text)
            checked += 1
    assert checked >= 11  # every route that takes an id (more as routes are added)
    # Lists show nothing of A; A's objects are untouched.
    assert b.admin.get("/v1/runners").json()["runners"] == []
    assert b.admin.get("/v1/teams").json()["teams"] == []
    assert ids["key_id"] not in str(b.admin.get("/v1/keys").json())
    assert all(
        e["runner_id"] != ids["runner_id"] for e in b.admin.get("/v1/audit").json()["events"]
    )
    assert b.admin.get("/v1/spend").json()["calls"] == 0
    assert b.admin.get("/v1/approvals").json()["approvals"] == []
    assert a.admin.get(f"/v1/approvals/{ids['approval_id']}").json()["status"] == "pending"
    assert a.admin.get(f"/v1/runners/{ids['runner_id']}").json()["state"] == "running"
    # B cannot create keys in A, nor create orgs.
    assert (
        b.admin.post("/v1/keys", json={"name": "x", "role": "admin", "org_id": a.id}).status_code
        == 404
    )
    assert b.admin.post("/v1/orgs", json={"name": "c"}).status_code == 403


def test_viewer_reads_but_cannot_change_anything(platform: str) -> None:
    a = new_org(platform, "a")
    ids = populate(a)
    with client(platform, make_key(a, "viewer")) as viewer:
        assert viewer.get(f"/v1/runners/{ids['runner_id']}").status_code == 200
        assert viewer.get("/v1/audit").status_code == 200
        for method, path, body in [
            ("POST", "/v1/runners", {"profile": "minimal"}),
            ("POST", f"/v1/runners/{ids['runner_id']}/stop", None),
            ("DELETE", f"/v1/runners/{ids['runner_id']}", None),
            ("POST", f"/v1/sessions/{ids['session_id']}/close", None),
            ("POST", f"/v1/sessions/{ids['session_id']}/messages", {"content": "hi"}),
            ("POST", "/v1/teams", {"name": "t2"}),
            ("POST", "/v1/keys", {"name": "k2", "role": "admin"}),
            ("POST", f"/v1/keys/{ids['key_id']}/revoke", None),
            ("POST", "/v1/audit/checkpoints", None),
        ]:
            response = viewer.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "permission_denied"
    assert a.admin.get(f"/v1/runners/{ids['runner_id']}").json()["state"] == "running"


def test_operator_runs_runners_but_does_not_administer(platform: str) -> None:
    a = new_org(platform, "a")
    with client(platform, make_key(a, "operator")) as operator:
        created = operator.post("/v1/runners", json={"profile": "minimal"})
        assert created.status_code == 201
        assert operator.post("/v1/keys", json={"name": "x", "role": "viewer"}).status_code == 403


def test_gateway_only_key_is_refused_by_the_control_plane(platform: str) -> None:
    a = new_org(platform, "a")
    with client(platform, make_key(a, "gateway")) as gw:
        response = gw.get("/v1/runners")
        assert response.status_code == 403
        assert "gateway" in response.json()["error"]["message"]


def test_revoked_and_expired_keys_get_401(platform: str) -> None:
    a = new_org(platform, "a")
    key = a.admin.post("/v1/keys", json={"name": "v", "role": "viewer"}).json()
    with client(platform, key["key"]) as viewer:
        assert viewer.get("/v1/runners").status_code == 200
        revoked = a.admin.post(f"/v1/keys/{key['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        response = viewer.get("/v1/runners")
        assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
    short = make_key(a, "viewer", expires_in_s=0.3)
    with client(platform, short) as viewer:
        assert viewer.get("/v1/runners").status_code == 200
        time.sleep(0.5)
        response = viewer.get("/v1/runners")
        assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


def test_keys_are_shown_once_and_stored_hashed(platform: str) -> None:
    a = new_org(platform, "a")
    created = a.admin.post("/v1/keys", json={"name": "ci", "role": "operator"}).json()
    assert created["key"].startswith(created["id"] + "_")
    listed = a.admin.get("/v1/keys").json()["keys"]
    assert [k for k in listed if k["id"] == created["id"]]
    assert created["key"] not in str(listed) and "key_hash" not in str(listed)
    events = a.admin.get("/v1/audit", params={"type": "key.created"}).json()["events"]
    assert events and created["key"] not in str(events)
    assert any(e["data"]["id"] == created["id"] for e in events)


def test_admin_changes_are_audited(platform: str) -> None:
    a = new_org(platform, "a")
    team = a.admin.post("/v1/teams", json={"name": "ml"}).json()
    user = a.admin.post("/v1/users", json={"name": "ada", "team_id": team["id"]}).json()
    key = a.admin.post("/v1/keys", json={"name": "ada", "role": "operator", "user_id": user["id"]})
    assert key.json()["team_id"] == team["id"]  # a user's key inherits the user's team
    a.admin.post(f"/v1/keys/{key.json()['id']}/revoke")
    types = [e["type"] for e in a.admin.get("/v1/audit").json()["events"]]
    assert types[-4:] == ["team.created", "user.created", "key.created", "key.revoked"]


def test_bad_tenancy_input(platform: str) -> None:
    a = new_org(platform, "a")
    bad_role = a.admin.post("/v1/keys", json={"name": "x", "role": "god"})
    assert bad_role.status_code == 422 and bad_role.json()["error"]["field"] == "role"
    bad_team = a.admin.post("/v1/users", json={"name": "x", "team_id": "team_nope"})
    assert bad_team.status_code == 404 and bad_team.json()["error"]["field"] == "team_id"
    empty = a.admin.post("/v1/teams", json={"name": ""})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "name"
