"""The `paddock` CLI against a real control plane on loopback (fake backend)."""

from __future__ import annotations

import json

import httpx
from click.testing import CliRunner

from controlplane import ControlPlaneSettings
from paddock.cli import main
from tests.controlplane.conftest import ADMIN_KEY
from tests.controlplane.helpers import seed_approval


def run(api: httpx.Client, *args: str) -> str:
    env = {"PADDOCK_URL": str(api.base_url), "PADDOCK_ADMIN_KEY": ADMIN_KEY}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_runner_commands(api: httpx.Client) -> None:
    created = json.loads(run(api, "runners", "create", "--profile", "minimal", "--budget", "1.5"))
    rid = created["id"]
    assert created["state"] == "ready" and created["budget_usd"] == 1.5  # --wait is the default

    assert rid in run(api, "runners", "list")
    session = json.loads(run(api, "sessions", "open", rid, "--budget", "0.2"))
    assert session["state"] == "open"
    spend = json.loads(run(api, "sessions", "spend", session["id"]))
    assert spend["totals"]["calls"] == 0 and spend["totals"]["budget_usd"] == 0.2
    assert json.loads(run(api, "sessions", "close", session["id"]))["state"] == "closed"
    assert json.loads(run(api, "runners", "stop", rid))["state"] == "stopped"

    events = run(api, "runners", "events", rid)
    assert "runner.created" in events and "session.opened" in events
    assert f"deleted {rid}" in run(api, "runners", "delete", rid)


def test_cli_errors_are_readable(api: httpx.Client) -> None:
    env = {"PADDOCK_URL": str(api.base_url), "PADDOCK_ADMIN_KEY": ADMIN_KEY}
    result = CliRunner().invoke(main, ["runners", "get", "rn_missing"], env=env)
    assert result.exit_code == 1
    assert "404 not_found: runner rn_missing not found" in result.output

    bad = CliRunner().invoke(main, ["runners", "create", "--profile", "root"], env=env)
    assert bad.exit_code == 1 and "unknown profile 'root'" in bad.output


def test_approval_commands(api: httpx.Client, cp_settings: ControlPlaneSettings) -> None:
    database = cp_settings.resolved_database_url()
    first = seed_approval(database, cp_settings.org_id)
    second = seed_approval(database, cp_settings.org_id)
    listed = run(api, "approvals", "list")
    assert first in listed and second in listed and "pending" in listed
    approved = json.loads(run(api, "approvals", "approve", first, "--reason", "fine"))
    assert approved["status"] == "approved" and approved["reason"] == "fine"
    rejected = json.loads(run(api, "approvals", "reject", second, "--reason", "no"))
    assert rejected["status"] == "rejected"
    assert first not in run(api, "approvals", "list")
    assert first in run(api, "approvals", "list", "--status", "all")

    env = {"PADDOCK_URL": str(api.base_url), "PADDOCK_ADMIN_KEY": ADMIN_KEY}
    again = CliRunner().invoke(main, ["approvals", "approve", first, "--reason", "x"], env=env)
    assert again.exit_code == 1 and "409 conflict: approval" in again.output
    no_reason = CliRunner().invoke(main, ["approvals", "reject", first], env=env)
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
