"""Spend views equal what is recomputed from the ledger, for every grouping; runner spend is
attributed to the team and user of the key that created the runner."""

from __future__ import annotations

from collections import defaultdict

import httpx
import pytest

from tests.conftest import PROBE_IMAGE, require_image
from tests.e2e.conftest import Stack
from tests.e2e.helpers import wait_ready

pytestmark = pytest.mark.docker

GROUPS = ("call", "session", "runner", "org", "team", "key", "user", "model", "day")


def test_spend_views_match_the_ledger(stack: Stack) -> None:
    require_image(stack.docker, PROBE_IMAGE)
    admin = stack.api
    team = admin.post("/v1/teams", json={"name": "research"}).json()
    user = admin.post("/v1/users", json={"name": "ada", "team_id": team["id"]}).json()
    key = admin.post(
        "/v1/keys", json={"name": "ada", "role": "operator", "user_id": user["id"]}
    ).json()
    ada = httpx.Client(
        base_url=admin.base_url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=120
    )
    runners = []
    for who, model in ((admin, "fake-gpt"), (ada, "fake-mini")):
        rid = who.post(
            "/v1/runners", json={"profile": "minimal", "image": "probe", "model": model}
        ).json()["id"]
        wait_ready(who, rid, timeout_s=60)
        runners.append(rid)
        for _ in range(2):
            sid = who.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
            for text in ("ECHO:one", "a longer message ECHO:two"):
                reply = who.post(
                    f"/v1/sessions/{sid}/messages", json={"content": text, "stream": False}
                )
                assert reply.status_code == 200, reply.text
            who.post(f"/v1/sessions/{sid}/close")

    audit = admin.get("/v1/audit", params={"type": "llm.call", "limit": 5000}).json()
    ledger = audit["events"]
    assert len(ledger) == 8
    ledger_total = sum(e["data"]["cost_usd"] for e in ledger)
    assert ledger_total > 0
    for group in GROUPS:
        view = admin.get("/v1/spend", params={"group_by": group}).json()
        assert view["calls"] == 8, group
        assert view["total_usd"] == pytest.approx(ledger_total), group
        assert sum(r["cost_usd"] for r in view["rows"]) == pytest.approx(ledger_total), group

    by_runner: dict[str, float] = defaultdict(float)
    for e in ledger:
        by_runner[e["runner_id"]] += e["data"]["cost_usd"]
    view = {
        r["runner"]: r["cost_usd"]
        for r in admin.get("/v1/spend", params={"group_by": "runner"}).json()["rows"]
    }
    assert view == pytest.approx(dict(by_runner))

    by_model = {
        r["model"]: r for r in admin.get("/v1/spend", params={"group_by": "model"}).json()["rows"]
    }
    assert set(by_model) == {"fake-gpt", "fake-mini"}
    # Ada's runner is charged to her team and to her.
    by_team = {
        r["team"]: r["calls"]
        for r in admin.get("/v1/spend", params={"group_by": "team"}).json()["rows"]
    }
    assert by_team == {team["id"]: 4, "(none)": 4}
    by_user = {
        r["user"]: r["calls"]
        for r in admin.get("/v1/spend", params={"group_by": "user"}).json()["rows"]
    }
    assert by_user == {user["id"]: 4, "(none)": 4}

    for rid in runners:
        admin.delete(f"/v1/runners/{rid}")
    ada.close()
