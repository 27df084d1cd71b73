"""An org's plan and chain settings through the control plane: the platform admin sets them,
they are validated like the policy files (422 naming the setting), audited as `policy.set`, and
the gateway sharing the store applies them on the next call."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from gateway import GatewaySettings, create_gateway
from tests.controlplane.conftest import ADMIN_KEY
from tests.controlplane.test_tenancy import client, make_key, new_org
from tests.support.servers import serve_app


@pytest.fixture
def urls(cp_settings: ControlPlaneSettings, fake_backend: FakeBackend) -> Iterator[tuple[str, str]]:
    """The control plane and a gateway over its store (no provider needed: refusals only)."""
    gateway_settings = GatewaySettings(
        data_dir=cp_settings.data_dir,
        admin_key=cp_settings.admin_key,
        org_id=cp_settings.org_id,
        org_settings_ttl_s=0,
    )
    with (
        serve_app(create_app(cp_settings, backend=fake_backend)) as cp,
        serve_app(create_gateway(gateway_settings)) as gw,
    ):
        yield cp, gw


def test_platform_admin_sets_an_orgs_plan_and_steps(urls: tuple[str, str]) -> None:
    cp, gw = urls
    org = new_org(cp, "policy")
    assert org.admin.get(f"/v1/orgs/{org.id}/policy").json() == {
        "org_id": org.id,
        "plan": "team",
        "chosen_plan": None,
        "steps": {},
        "version": None,
    }
    key = make_key(org, "gateway", models=["fake-mini"])
    wanted = {"plan": "free", "steps": {"body_size": {"max_bytes": 100}}}
    # The org's own admin may read but not change it: plans are the operator's to grant.
    refused = org.admin.put(f"/v1/orgs/{org.id}/policy", json=wanted)
    assert refused.status_code == 403, refused.text
    with client(cp, ADMIN_KEY) as root:
        done = root.put(f"/v1/orgs/{org.id}/policy", json=wanted)
        assert done.status_code == 200, done.text
        assert (done.json()["plan"], done.json()["steps"]) == ("free", wanted["steps"])
        [event] = [
            e for e in org.admin.get("/v1/audit").json()["events"] if e["type"] == "policy.set"
        ]
        assert event["data"]["plan"] == "free" and event["data"]["previous_plan"] is None
        assert "body_size" in event["data"]["enabled_steps"]
        assert event["actor"].startswith("key:")

    with OpenAI(base_url=f"{gw}/v1", api_key=key, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(
                model="fake-mini", messages=[{"role": "user", "content": "x" * 200}]
            )
        assert caught.value.status_code == 413
        with pytest.raises(openai.PermissionDeniedError) as denied:
            sdk.chat.completions.create(
                model="fake-gpt", messages=[{"role": "user", "content": "x"}], max_tokens=5
            )
        body = denied.value.body
        assert isinstance(body, dict) and body["step"] == "model_allowlist"
        assert body["details"]["level"] in ("plan", "key")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"plan": "gold"}, "plan"),
        ({"steps": {"nope": {}}}, "steps.nope"),
        ({"steps": {"body_size": {"max_bytes": -5}}}, "steps.body_size"),
        ({"steps": {"skill_allowlist": {"mode": "maybe"}}}, "steps.skill_allowlist"),
        ({"steps": {"body_size": 5}}, "steps.body_size"),
        ({"plan": "free", "extra": 1}, "extra"),
    ],
)
def test_a_bad_policy_is_422_naming_the_setting_and_changes_nothing(
    urls: tuple[str, str], body: dict[str, object], field: str
) -> None:
    cp, _ = urls
    org = new_org(cp, "bad-policy")
    with client(cp, ADMIN_KEY) as root:
        response = root.put(f"/v1/orgs/{org.id}/policy", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
        assert root.get(f"/v1/orgs/{org.id}/policy").json()["chosen_plan"] is None
        assert not [
            e
            for e in root.get("/v1/audit", params={"type": "policy.set"}).json()["events"]
            if e["org_id"] == org.id
        ]


def test_unknown_org_is_404(urls: tuple[str, str]) -> None:
    cp, _ = urls
    with client(cp, ADMIN_KEY) as root:
        response = root.put("/v1/orgs/org_missing/policy", json={"plan": "free"})
        assert response.status_code == 404
        assert response.json()["error"]["field"] == "org_id"


def test_key_allowlists_are_shown_and_audited(urls: tuple[str, str]) -> None:
    cp, _ = urls
    org = new_org(cp, "keys")
    created = org.admin.post(
        "/v1/keys", json={"name": "k", "role": "gateway", "models": ["fake-*"], "skills": []}
    )
    assert created.status_code == 201
    assert (created.json()["models"], created.json()["skills"]) == (["fake-*"], [])
    bad = org.admin.post("/v1/keys", json={"name": "k", "role": "gateway", "models": "fake-*"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "models"
    listed = httpx.get(
        f"{cp}/v1/audit", headers=org.admin.headers, params={"type": "key.created"}
    ).json()["events"]
    assert any(e["data"].get("models") == ["fake-*"] for e in listed)


def test_a_plan_bounds_the_profiles_sandboxes_and_models_of_runners(urls: tuple[str, str]) -> None:
    cp, _ = urls
    org = new_org(cp, "bounded")
    with client(cp, ADMIN_KEY) as root:
        assert root.put(f"/v1/orgs/{org.id}/policy", json={"plan": "free"}).status_code == 200
    for body, field in (
        ({"profile": "full", "model": "fake-mini"}, "profile"),
        ({"profile": "minimal", "model": "fake-gpt"}, "model"),
    ):
        refused = org.admin.post("/v1/runners", json=body)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == ("permission_denied", field)
        assert "plan 'free' does not include" in error["message"]
    assert org.admin.get("/v1/runners").json()["runners"] == []  # nothing was created
    made = org.admin.post("/v1/runners", json={"profile": "standard", "model": "fake-mini"})
    assert made.status_code == 201, made.text
