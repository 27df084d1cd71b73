"""The `paddock` command: run the servers, and drive a running control plane."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from ._approvals_cli import approvals
from ._audit_cli import audit
from ._client import Api as _Api
from ._client import admin_key_file as _admin_key_file
from ._client import print_json as _print
from ._client import url_option as _url_option

__all__ = ["main"]

def _ensure_admin_key(data_dir: Path) -> str:
    """PADDOCK_ADMIN_KEY, else the key generated at first start (kept 0600 in the data dir)."""
    key = os.environ.get("PADDOCK_ADMIN_KEY")
    if key:
        return key
    path = _admin_key_file(data_dir)
    if path.exists():
        return path.read_text().strip()
    key = f"pdk_{secrets.token_urlsafe(32)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    click.echo(f"Generated the bootstrap admin key (shown once, kept in {path}):\n  {key}")
    return key


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """Paddock: a control plane for sandboxed AI agents."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP request is noise at INFO (the CLI polls).
    for noisy in ("httpx", "transitions"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.command()
@click.option(
    "--fake-provider/--no-fake-provider",
    default=None,
    help="serve the shipped fake LLM provider on 127.0.0.1:8003 (default: when no provider key)",
)
@click.option(
    "--fake-provider-port", envvar="PADDOCK_FAKE_PROVIDER_PORT", default=8003, show_default=True
)
@click.option("--demo", is_flag=True, help="launch a demo runner once the servers are up")
@click.option("--demo-image", default="openclaw", show_default=True)
def serve(fake_provider: bool | None, fake_provider_port: int, demo: bool, demo_image: str) -> None:
    """Run the control plane (:8001), the gateway (:8002), the egress proxy (:8004) and
    optionally the fake provider."""
    from controlplane import ControlPlaneSettings, create_app
    from egress import EgressServer, EgressSettings
    from gateway import GatewaySettings, create_gateway
    from paddock_core import make_notifier

    from .fake_provider import create_fake_provider
    from .serve import AppServer, serve_apps

    cp_settings = ControlPlaneSettings()
    key = _ensure_admin_key(cp_settings.data_dir)
    os.environ["PADDOCK_ADMIN_KEY"] = key
    cp_settings = ControlPlaneSettings()
    if fake_provider is None:
        fake_provider = not any(os.environ.get(v) for v in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"))
    gw_settings = GatewaySettings()
    if fake_provider and "fake" not in gw_settings.provider_base_urls:
        fake_url = f"http://127.0.0.1:{fake_provider_port}/v1"
        gw_settings = gw_settings.model_copy(
            update={"provider_base_urls": {**gw_settings.provider_base_urls, "fake": fake_url}}
        )
    # One notifier for both apps: an event either commits (an LLM call, an approval decision)
    # wakes the other's followers and waiters at once, with or without Redis.
    notifier = make_notifier(cp_settings.redis_url)
    apps = [
        AppServer(
            "control plane",
            create_app(cp_settings, notifier=notifier),
            cp_settings.host,
            cp_settings.port,
        ),
        AppServer(
            "gateway",
            create_gateway(gw_settings, notifier=notifier),
            gw_settings.gateway_host,
            gw_settings.gateway_port,
        ),
    ]
    if fake_provider:
        apps.append(
            AppServer("fake provider", create_fake_provider(), "127.0.0.1", fake_provider_port)
        )

    base = f"http://{cp_settings.host}:{cp_settings.port}"
    demo_runners: list[str] = []

    async def _demo() -> None:
        runner = await _launch_demo(base, key, demo_image)
        demo_runners.append(runner["id"])
        click.echo(
            f"\nDemo runner {runner['id']} is {runner['state']} ({runner['profile']}, "
            f"{runner['sandbox']}).\nTry:\n"
            f"  export PADDOCK_ADMIN_KEY={key}\n"
            f"  paddock sessions open {runner['id']} --budget 0.25\n"
            f"  paddock sessions message <SESSION_ID> 'Say hello'\n"
        )

    async def _demo_cleanup() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            for runner_id in demo_runners:
                await client.delete(f"/v1/runners/{runner_id}")
                click.echo(f"deleted demo runner {runner_id}")

    # The gateway's provider hosts (the fake one included) are never egress destinations.
    egress_settings = EgressSettings(provider_base_urls=gw_settings.provider_base_urls)

    async def _serve() -> None:
        try:
            async with EgressServer(egress_settings):
                await serve_apps(
                    apps,
                    on_started=_demo if demo else None,
                    on_stopping=_demo_cleanup if demo else None,
                )
        finally:
            await notifier.close()

    asyncio.run(_serve())


async def _launch_demo(base: str, key: str, image: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        body = {"profile": "minimal", "sandbox": "hardened", "budget_usd": 1.0, "image": image}
        runner: dict[str, Any] = (
            (await client.post("/v1/runners", json=body)).raise_for_status().json()
        )
        deadline = time.monotonic() + 240
        while runner["state"] == "provisioning" and time.monotonic() < deadline:
            await asyncio.sleep(1)
            runner = (await client.get(f"/v1/runners/{runner['id']}")).raise_for_status().json()
        return runner


@main.command("controlplane")
def controlplane_cmd() -> None:
    """Run only the control plane."""
    import uvicorn

    from controlplane import ControlPlaneSettings, create_app

    settings = ControlPlaneSettings()
    os.environ["PADDOCK_ADMIN_KEY"] = _ensure_admin_key(settings.data_dir)
    settings = ControlPlaneSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


@main.command("gateway")
def gateway_cmd() -> None:
    """Run only the gateway."""
    import uvicorn

    from gateway import GatewaySettings, create_gateway

    settings = GatewaySettings()
    uvicorn.run(
        create_gateway(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        access_log=settings.access_log,
    )


@main.command("egress")
def egress_cmd() -> None:
    """Run only the egress proxy and its DNS stub (beside the gateway, on the same store)."""
    from egress import EgressServer, EgressSettings

    async def _run() -> None:
        async with EgressServer(EgressSettings()):
            await asyncio.Event().wait()

    asyncio.run(_run())


@main.command("fake-provider")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8003, show_default=True)
def fake_provider_cmd(host: str, port: int) -> None:
    """Run the shipped fake LLM provider (OpenAI protocol)."""
    import uvicorn

    from .fake_provider import create_fake_provider

    uvicorn.run(create_fake_provider(), host=host, port=port)


@main.command("fake-e2b")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
@click.option("--api-key", default="e2b_fake_key", show_default=True)
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    default=["gateway.paddock.test=http://127.0.0.1:8002"],
    show_default=True,
    help="NAME=URL: a host of the fake's internet that its VMs may reach (repeatable)",
)
@click.option("--egress-port", default=0, help="port of the VMs' egress (0: any free one)")
def fake_e2b_cmd(
    host: str, port: int, api_key: str, upstreams: tuple[str, ...], egress_port: int
) -> None:
    """Run the shipped fake E2B (REST API and sandboxes as local containers; needs Docker).

    Point Paddock at it with PADDOCK_E2B_API_URL and PADDOCK_E2B_SANDBOX_URL (this URL),
    PADDOCK_E2B_API_KEY, and PADDOCK_GATEWAY_PUBLIC_URL as GET /_fake/info tells."""
    import uvicorn

    from .fake_e2b import FakeE2BConfig, create_fake_e2b

    hosts = dict(item.split("=", 1) for item in upstreams)
    config = FakeE2BConfig(api_key=api_key, upstreams=hosts, egress_port=egress_port)
    uvicorn.run(create_fake_e2b(config), host=host, port=port)


# --- client commands ----------------------------------------------------------------------




@main.group()
def runners() -> None:
    """Create, inspect, stop and delete runners."""


@runners.command("create")
@click.option("--profile", default="minimal", show_default=True)
@click.option("--sandbox", default="hardened", show_default=True)
@click.option("--budget", type=float, default=None, help="lifetime budget, USD")
@click.option("--image", default=None, help="openclaw | probe")
@click.option("--wait/--no-wait", default=True, help="wait until it leaves provisioning")
@_url_option
def runners_create(
    profile: str, sandbox: str, budget: float | None, image: str | None, wait: bool, url: str
) -> None:
    api = _Api(url)
    body = {"profile": profile, "sandbox": sandbox, "budget_usd": budget, "image": image}
    runner = api.call("POST", "/v1/runners", {k: v for k, v in body.items() if v is not None})
    while wait and runner["state"] == "provisioning":
        time.sleep(1)
        runner = api.call("GET", f"/v1/runners/{runner['id']}")
    _print(runner)


@runners.command("list")
@_url_option
def runners_list(url: str) -> None:
    for r in _Api(url).call("GET", "/v1/runners")["runners"]:
        click.echo(
            f"{r['id']}  {r['state']:<12} {r['profile']:<9} {r['sandbox']:<9} ${r['spent_usd']:.4f}"
        )


@runners.command("get")
@click.argument("runner_id")
@_url_option
def runners_get(runner_id: str, url: str) -> None:
    _print(_Api(url).call("GET", f"/v1/runners/{runner_id}"))


@runners.command("stop")
@click.argument("runner_id")
@_url_option
def runners_stop(runner_id: str, url: str) -> None:
    _print(_Api(url).call("POST", f"/v1/runners/{runner_id}/stop"))


@runners.command("delete")
@click.argument("runner_id")
@_url_option
def runners_delete(runner_id: str, url: str) -> None:
    _Api(url).call("DELETE", f"/v1/runners/{runner_id}")
    click.echo(f"deleted {runner_id}")


@runners.command("events")
@click.argument("runner_id")
@_url_option
def runners_events(runner_id: str, url: str) -> None:
    for e in _Api(url).call("GET", f"/v1/runners/{runner_id}/events")["events"]:
        click.echo(
            f"{e['seq']:>6} {e['time']} {e['type']:<22} {e['actor']:<20} {json.dumps(e['data'])}"
        )


@runners.command("follow")
@click.argument("runner_id")
@click.option("--from-start/--from-now", default=True, help="replay the runner's history first")
@_url_option
def runners_follow(runner_id: str, from_start: bool, url: str) -> None:
    """Show a runner's audit events and LLM spend live (Ctrl-C to stop; resumes on drops)."""
    api = _Api(url)
    last = 0
    if not from_start:
        events = api.call("GET", f"/v1/runners/{runner_id}/events", None)["events"]
        last = events[-1]["seq"] if events else 0
    spent = 0.0
    while True:
        try:
            with api.client.stream(
                "GET",
                f"/v1/runners/{runner_id}/events/stream",
                headers={"Last-Event-ID": str(last)},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise click.ClickException(f"{response.status_code}: {response.text[:300]}")
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    last = event["seq"]
                    data = event["data"]
                    if event["type"] == "llm.call":
                        spent += float(data.get("cost_usd") or 0)
                        detail = (
                            f"{data.get('model')} {data.get('prompt_tokens')}+"
                            f"{data.get('completion_tokens')} tok ${data.get('cost_usd'):.6f}"
                            f"  (runner total ${spent:.6f})"
                        )
                    elif event["type"] == "runner.state_changed":
                        detail = f"{data.get('from')} -> {data.get('to')} ({data.get('reason')})"
                    else:
                        detail = json.dumps(data)
                    click.echo(
                        f"{event['seq']:>6} {event['time'][11:23]} {event['type']:<22} {detail}"
                    )
        except httpx.TransportError:
            time.sleep(1)  # dropped: reconnect from the last seq seen
        except KeyboardInterrupt:
            return


@main.group()
def sessions() -> None:
    """Open sessions on runners, send messages, follow spend."""


@sessions.command("open")
@click.argument("runner_id")
@click.option("--budget", type=float, default=None, help="session budget, USD")
@_url_option
def sessions_open(runner_id: str, budget: float | None, url: str) -> None:
    _print(_Api(url).call("POST", f"/v1/runners/{runner_id}/sessions", {"budget_usd": budget}))


@sessions.command("message")
@click.argument("session_id")
@click.argument("content")
@_url_option
def sessions_message(session_id: str, content: str, url: str) -> None:
    api = _Api(url)
    path = f"/v1/sessions/{session_id}/messages"
    with api.client.stream("POST", path, json={"content": content}) as response:
        if response.status_code >= 400:
            response.read()
            raise click.ClickException(f"{response.status_code}: {response.text[:300]}")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "delta":
                    click.echo(data["text"], nl=False)
                elif event == "done":
                    click.echo(f"\n[spent ${data['spent_usd']:.6f} of budget {data['budget_usd']}]")
                elif event == "error":
                    click.echo(f"\nerror: {data['error']['message']}", err=True)
                    sys.exit(1)


@sessions.command("spend")
@click.argument("session_id")
@_url_option
def sessions_spend(session_id: str, url: str) -> None:
    _print(_Api(url).call("GET", f"/v1/sessions/{session_id}/spend"))


@sessions.command("close")
@click.argument("session_id")
@_url_option
def sessions_close(session_id: str, url: str) -> None:
    _print(_Api(url).call("POST", f"/v1/sessions/{session_id}/close"))


# --- keys ----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """API keys: create (shown once), list, revoke."""


@keys.command("create")
@click.option("--name", required=True)
@click.option(
    "--role", type=click.Choice(["admin", "operator", "viewer", "gateway"]), required=True
)
@click.option("--team", "team_id", default=None)
@click.option("--user", "user_id", default=None)
@click.option("--expires-in", "expires_in_s", type=float, default=None, help="seconds")
@click.option("--org", "org_id", default=None, help="platform admin: a key for another org")
@_url_option
def keys_create(
    name: str,
    role: str,
    team_id: str | None,
    user_id: str | None,
    expires_in_s: float | None,
    org_id: str | None,
    url: str,
) -> None:
    body = {
        "name": name,
        "role": role,
        "team_id": team_id,
        "user_id": user_id,
        "expires_in_s": expires_in_s,
        "org_id": org_id,
    }
    _print(_Api(url).call("POST", "/v1/keys", {k: v for k, v in body.items() if v is not None}))


@keys.command("list")
@_url_option
def keys_list(url: str) -> None:
    for k in _Api(url).call("GET", "/v1/keys")["keys"]:
        state = "revoked" if k["revoked_at"] else "active"
        click.echo(f"{k['id']}  {k['role']:<9} {state:<8} {k['name']}")


@keys.command("revoke")
@click.argument("key_id")
@_url_option
def keys_revoke(key_id: str, url: str) -> None:
    _print(_Api(url).call("POST", f"/v1/keys/{key_id}/revoke"))


main.add_command(approvals)
main.add_command(audit)
