"""The audit trail: append-only, hash-chained, verifiable online and offline, signed checkpoints.

Tampering is done the way an attacker with the database file would: a second SQLite connection
drops the append-only triggers and rewrites rows behind the server's back.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from controlplane import ControlPlaneSettings
from paddock.cli import main
from tests.controlplane.conftest import ADMIN_KEY
from tests.controlplane.helpers import wait_for_state


def make_history(api: httpx.Client, runners: int = 2) -> None:
    for _ in range(runners):
        rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
        wait_for_state(api, rid, {"ready"})
        sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
        api.post(f"/v1/sessions/{sid}/close")
        api.post(f"/v1/runners/{rid}/stop")


def db(settings: ControlPlaneSettings) -> sqlite3.Connection:
    conn = sqlite3.connect(settings.data_dir / "paddock.db", isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    return conn


def verify(api: httpx.Client) -> dict[str, object]:
    report: dict[str, object] = api.get("/v1/audit/verify").json()
    return report


def test_intact_chain_verifies(api: httpx.Client) -> None:
    make_history(api)
    report = verify(api)
    assert report["ok"] is True and report["first_broken_seq"] is None
    events = api.get("/v1/audit").json()["events"]
    assert report["checked"] == len(events) == report["head_seq"]
    assert report["head_hash"] == events[-1]["hash"]


def test_store_refuses_update_and_delete(
    api: httpx.Client, cp_settings: ControlPlaneSettings
) -> None:
    make_history(api, runners=1)
    conn = sqlite3.connect(cp_settings.data_dir / "paddock.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_events SET actor = 'me' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_events WHERE seq = 2")
    conn.close()
    assert verify(api)["ok"] is True


def _edit(conn: sqlite3.Connection) -> None:
    conn.execute("""UPDATE audit_events SET data = '{"budget_usd":999}' WHERE seq = 5""")


def _delete(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit_events WHERE seq = 5")


def _swap(conn: sqlite3.Connection) -> None:
    cols = "time, actor, type, runner_id, session_id, data, prev_hash, hash"
    five = conn.execute(f"SELECT {cols} FROM audit_events WHERE seq = 5").fetchone()
    six = conn.execute(f"SELECT {cols} FROM audit_events WHERE seq = 6").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE audit_events SET {sets} WHERE seq = 5", six)
    conn.execute(f"UPDATE audit_events SET {sets} WHERE seq = 6", five)


def _insert(conn: sqlite3.Connection) -> None:
    # Make room at seq 5 and forge a record there that links correctly to seq 4.
    top = conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    for seq in range(top, 4, -1):
        conn.execute("UPDATE audit_events SET seq = seq + 1 WHERE seq = ?", (seq,))
    org, prev = conn.execute("SELECT org_id, hash FROM audit_events WHERE seq = 4").fetchone()
    time, data = "2026-01-01T00:00:00.000000Z", '{"forged":true}'
    body = (
        f'{{"actor":"key:evil","data":{data},"org_id":"{org}","prev_hash":"{prev}",'
        f'"runner_id":null,"seq":5,"session_id":null,"time":"{time}","type":"key.created"}}'
    )
    digest = hashlib.sha256(body.encode()).hexdigest()
    conn.execute(
        "INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?)",
        (org, 5, time, "key:evil", "key.created", None, None, data, prev, digest),
    )


@pytest.mark.parametrize(
    ("tamper", "seq", "problem"),
    [
        (_edit, 5, "hash_mismatch"),
        (_delete, 5, "missing_record"),
        (_swap, 5, "broken_link"),
        (_insert, 6, "broken_link"),  # the forged record links; the one after it cannot
    ],
    ids=["edit", "delete", "swap", "insert"],
)
def test_tampering_is_pinpointed(
    api: httpx.Client,
    cp_settings: ControlPlaneSettings,
    tamper: Callable[[sqlite3.Connection], None],
    seq: int,
    problem: str,
) -> None:
    make_history(api)
    conn = db(cp_settings)
    tamper(conn)
    conn.close()
    report = verify(api)
    assert report["ok"] is False
    assert (report["first_broken_seq"], report["problem"]) == (seq, problem)
    assert report["checked"] == seq - 1


def test_wholesale_rewrite_is_caught_by_a_signed_checkpoint(
    api: httpx.Client, cp_settings: ControlPlaneSettings
) -> None:
    make_history(api)
    cp = api.post("/v1/audit/checkpoints")
    assert cp.status_code == 201
    signed_seq = cp.json()["seq"]
    # Rewrite history and re-chain every hash, as someone who knows the algorithm would.
    conn = db(cp_settings)
    conn.execute("""UPDATE audit_events SET data = '{"rewritten":true}' WHERE seq = 3""")
    rows = conn.execute(
        "SELECT org_id, seq, time, actor, type, runner_id, session_id, data FROM audit_events"
        " ORDER BY seq"
    ).fetchall()
    prev = "0" * 64

    def q(value: str | None) -> str:
        return json.dumps(value, ensure_ascii=False)

    for org, s, time, actor, type_, runner, session, data in rows:
        body = (
            f'{{"actor":{q(actor)},"data":{data},"org_id":{q(org)},"prev_hash":"{prev}",'
            f'"runner_id":{q(runner)},"seq":{s},"session_id":{q(session)},"time":"{time}",'
            f'"type":{q(type_)}}}'
        )
        digest = hashlib.sha256(body.encode()).hexdigest()
        conn.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, s)
        )
        prev = digest
    conn.close()
    report = verify(api)
    assert report["ok"] is False
    assert report["problem"] == "checkpoint_mismatch"
    assert f"seq {signed_seq}" in str(report["detail"])
    assert report["first_broken_seq"] is None  # the chain itself is consistent again


def test_checkpoints_are_signed_and_idempotent(api: httpx.Client) -> None:
    make_history(api, runners=1)
    first = api.post("/v1/audit/checkpoints").json()
    again = api.post("/v1/audit/checkpoints")
    # The checkpoint event itself moved the head, so a second one is allowed once...
    assert again.status_code == 201
    # ...but not a third with nothing new in between (except the checkpoint event).
    listing = api.get("/v1/audit/checkpoints").json()
    assert [c["seq"] for c in listing["checkpoints"]] == [first["seq"], again.json()["seq"]]
    assert listing["algorithm"] == "ed25519" and listing["public_key"]
    assert verify(api)["checkpoints_checked"] == 2


def test_export_and_offline_verify(
    api: httpx.Client, cp_settings: ControlPlaneSettings, tmp_path: Path
) -> None:
    make_history(api)
    api.post("/v1/audit/checkpoints")
    env = {"PADDOCK_URL": str(api.base_url), "PADDOCK_ADMIN_KEY": ADMIN_KEY}
    runner = CliRunner()
    events_file, cps_file = tmp_path / "audit.jsonl", tmp_path / "checkpoints.json"
    out = runner.invoke(main, ["audit", "export", "-o", str(events_file)], env=env)
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["audit", "checkpoints", "-o", str(cps_file)], env=env)
    assert out.exit_code == 0, out.output
    lines = events_file.read_text().splitlines()
    assert len(lines) == verify(api)["checked"]

    ok = runner.invoke(
        main, ["audit", "verify", "--file", str(events_file), "--checkpoints", str(cps_file)]
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True and json.loads(ok.output)["checkpoints_checked"] == 1

    tampered = json.loads(lines[6])
    tampered["actor"] = "key:someone-else"
    lines[6] = json.dumps(tampered)
    events_file.write_text("\n".join(lines) + "\n")
    bad = runner.invoke(main, ["audit", "verify", "--file", str(events_file)])
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    assert (report["first_broken_seq"], report["problem"]) == (7, "hash_mismatch")


def test_query_filters_and_cursor(api: httpx.Client) -> None:
    make_history(api, runners=3)
    everything = api.get("/v1/audit", params={"limit": 5000}).json()["events"]
    page, seen, after = 4, [], 0
    while True:
        body = api.get("/v1/audit", params={"limit": page, "after": after}).json()
        seen.extend(body["events"])
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert [e["seq"] for e in seen] == [e["seq"] for e in everything]
    opened = api.get("/v1/audit", params={"type": "session.opened"}).json()["events"]
    assert len(opened) == 3 and {e["type"] for e in opened} == {"session.opened"}
    two = api.get("/v1/audit", params=[("type", "session.opened"), ("type", "session.closed")])
    assert len(two.json()["events"]) == 6
    rid = opened[0]["runner_id"]
    mine = api.get("/v1/audit", params={"runner_id": rid}).json()["events"]
    assert mine and all(e["runner_id"] == rid for e in mine)
    since = api.get("/v1/audit", params={"since": opened[1]["time"]}).json()["events"]
    assert since[0]["seq"] == opened[1]["seq"]
    bad = api.get("/v1/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"
