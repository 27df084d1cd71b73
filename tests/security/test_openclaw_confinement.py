"""OpenClaw runners get no provider key, and the tool policy their profile says (hardened only:
the container boundary is proven by the escape suite on both levels; this checks the second
layer OpenClaw adds, and what enters the OpenClaw runner)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from paddock_core import DEFAULT_POLICIES_DIR, load_policies
from tests.conftest import OPENCLAW_IMAGE, require_image
from tests.security.conftest import Sec, confined_stack

pytestmark = [pytest.mark.docker, pytest.mark.openclaw]

PROVIDER_KEY = f"sk-standin-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def oc(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sec]:
    require_image(docker_client, OPENCLAW_IMAGE)
    tmp = tmp_path_factory.mktemp("sec-openclaw")
    with confined_stack(
        "hardened", docker_client, tmp, provider_key=PROVIDER_KEY, ready_timeout_s=300
    ) as stack:
        yield stack


def _exec(container: docker.models.containers.Container, *argv: str) -> str:
    code, out = container.exec_run(list(argv))
    assert code == 0, out
    return out.decode(errors="replace")


def test_no_provider_key_and_the_profiles_tool_policy(oc: Sec) -> None:
    profiles = load_policies(DEFAULT_POLICIES_DIR).profiles
    for name in ("standard", "minimal", "full"):  # one OpenClaw boot at a time
        body = {"profile": name, "sandbox": "hardened", "image": "openclaw", "budget_usd": 1.0}
        created = oc.api.post("/v1/runners", json=body)
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        profile = profiles[name]
        container, config_text = _config_when_written(oc.docker, rid)
        env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])

        # No provider key: not by name, not by value, not in the config, not on disk.
        assert not [k for k in env if k.endswith(("_API_KEY", "_PROVIDER_KEY"))], sorted(env)
        assert PROVIDER_KEY not in json.dumps(env)
        assert PROVIDER_KEY not in _exec(container, "cat", "/proc/1/environ")
        assert PROVIDER_KEY not in config_text
        found = _exec(
            container, "sh", "-c", f"grep -rls {PROVIDER_KEY} /home /tmp /workspace || true"
        )
        assert found.strip() == ""

        # The model provider is the gateway, with the runner's own token.
        config = json.loads(config_text)
        providers = config["models"]["providers"]
        assert list(providers) == ["paddock"]
        assert providers["paddock"]["apiKey"] == "${PADDOCK_RUNNER_TOKEN}"
        assert providers["paddock"]["baseUrl"] == "${PADDOCK_GATEWAY_URL}"

        # OpenClaw's tool policy is the profile's.
        tools = config["tools"]
        assert tools["profile"] == profile.openclaw.tools_profile
        assert tools["exec"]["mode"] == profile.exec
        assert set(profile.openclaw.deny) <= set(tools.get("deny", []))
        assert env["PADDOCK_EXEC_MODE"] == profile.exec
        assert env["PADDOCK_EXEC_ALLOWLIST"] == ",".join(profile.exec_allowlist)
        if profile.network == "gateway_only":
            assert "HTTP_PROXY" not in env and "web" not in tools
            assert {"group:runtime", "group:web"} <= set(tools["deny"])
        else:  # web fetches go through the egress proxy, which resolves names
            assert env["HTTPS_PROXY"].startswith(f"http://{rid}:")
            assert env["NO_PROXY"] == env["PADDOCK_GATEWAY_URL"].split("//")[1].split(":")[0]
            assert tools["web"]["fetch"]["useTrustedEnvProxy"] is True
        assert oc.wait_event(rid, "runner.created")["profile"] == name
        if name == "full":
            # OpenClaw accepts a configuration with egress (standard's is the same, plus its
            # exec allowlist, which the image's entrypoint seeds; see its own tests).
            state = oc.wait_state(rid, {"ready", "failed"}, 300)
            assert state["state"] == "ready", state["failure"]
        assert oc.api.delete(f"/v1/runners/{rid}").status_code == 204


def _config_when_written(
    client: docker.DockerClient, rid: str
) -> tuple[docker.models.containers.Container, str]:
    """The runner's container and the config its entrypoint writes first thing (bounded)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:  # created, then started by the control plane's first probe
            container = client.containers.get(f"paddock-{rid}")
            code, out = container.exec_run(["cat", "/home/agent/.openclaw/openclaw.json"])
        except docker.errors.APIError:
            code, out = 1, b""
        if code == 0:
            return container, out.decode()
        time.sleep(0.3)
    raise AssertionError(f"runner {rid} wrote no OpenClaw config")
