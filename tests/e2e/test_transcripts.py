"""Session transcripts end to end: a probe runner's session, messages through the control
plane, the model's side through the gateway; text (PII redacted) when the org opts in, sizes
only when it does not; the readable text form; another org gets 404."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PROBE_IMAGE, require_image
from tests.e2e.conftest import Stack
from tests.e2e.helpers import wait_ready

pytestmark = pytest.mark.docker


def test_transcript_follows_the_orgs_choice(stack: Stack) -> None:
    require_image(stack.docker, PROBE_IMAGE)
    admin = stack.api
    org_id = admin.get("/v1/me").json()["org_id"]
    assert admin.get(f"/v1/orgs/{org_id}/transcripts").json()["content"] is False
    opted = admin.put(f"/v1/orgs/{org_id}/transcripts", json={"content": True, "retention_days": 7})
    assert opted.status_code == 200, opted.text

    rid = admin.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()["id"]
    wait_ready(admin, rid, timeout_s=60)
    sid = admin.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
    said = "write to ada@example.com ECHO:first"
    reply = admin.post(f"/v1/sessions/{sid}/messages", json={"content": said, "stream": False})
    assert reply.status_code == 200, reply.text

    transcript = admin.get(f"/v1/sessions/{sid}/transcript").json()
    assert transcript["content_stored"] is True and transcript["retention_days"] == 7
    entries = transcript["entries"]
    assert [(e["kind"], e["source"]) for e in entries] == [
        ("user_message", "controlplane"),
        ("model_request", "gateway"),
        ("model_reply", "gateway"),
        ("agent_reply", "controlplane"),
    ]
    assert all("ada@example.com" not in (e["text"] or "") for e in entries)
    assert entries[0]["redacted"] == ["email"] and "[REDACTED" in entries[0]["text"]
    assert "ECHO:first" in entries[2]["text"] and "ECHO:first" in entries[3]["text"]
    text = admin.get(f"/v1/sessions/{sid}/transcript", params={"format": "text"})
    assert text.headers["content-type"].startswith("text/plain")
    assert "user - user_message" in text.text and "ada@example.com" not in text.text

    admin.put(f"/v1/orgs/{org_id}/transcripts", json={"content": False, "retention_days": 7})
    admin.post(f"/v1/sessions/{sid}/messages", json={"content": "ECHO:second", "stream": False})
    later = admin.get(f"/v1/sessions/{sid}/transcript").json()["entries"][4:]
    assert [e["kind"] for e in later] == [
        "user_message",
        "model_request",
        "model_reply",
        "agent_reply",
    ]
    assert all(e["text"] is None and e["chars"] > 0 for e in later), later
    types = [
        e["type"]
        for e in admin.get("/v1/audit", params={"type": "transcripts.set"}).json()["events"]
    ]
    assert types == ["transcripts.set", "transcripts.set"]
    bad = admin.put(f"/v1/orgs/{org_id}/transcripts", json={"content": True, "retention_days": 0})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "retention_days"

    # Another org sees nothing of it.
    other = admin.post("/v1/orgs", json={"name": "other"}).json()["id"]
    key = admin.post("/v1/keys", json={"name": "o", "role": "admin", "org_id": other}).json()["key"]
    with httpx.Client(base_url=admin.base_url, headers={"Authorization": f"Bearer {key}"}) as o:
        assert o.get(f"/v1/sessions/{sid}/transcript").status_code == 404
        assert o.get(f"/v1/orgs/{org_id}/transcripts").status_code == 404
    admin.delete(f"/v1/runners/{rid}")
