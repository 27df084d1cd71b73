"""The escape suite: from inside real runners, on both sandbox levels, every way out fails and
the audit trail shows the attempt.

Attempts through Paddock's components (the egress proxy, its DNS stub, the gateway) are audited
by them; attempts the host firewall refuses are audited from the kernel's log of the refusal
(NFLOG). What happens only inside a runner (writing a file, running a command) leaves the
session's audit record of the message that asked for it. All traffic stays on this machine:
the stand-ins live in containers on networks the suite creates.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import pytest

from tests.security.conftest import Runner, Sec

pytestmark = pytest.mark.docker

PROFILES = ["minimal", "standard", "full"]


def _opened(sec: Sec) -> list[str]:
    """The stand-ins' networks (private ranges), opened so only the rule under test decides."""
    return sorted(sec.world.subnets.values())


def _refused(result: dict[str, object]) -> bool:
    return result.get("ok") is False


# --- LLM providers -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_provider_only_through_the_gateway(sec: Sec, profile: str) -> None:
    provider = sec.world.hosts["provider"]
    rules = {} if profile == "minimal" else {"private_ranges": _opened(sec)}
    runner = sec.runner(profile, **rules)
    want = "profile:gateway_only" if profile == "minimal" else "provider_host"

    direct = sec.probe(runner, op="tcp", host=provider.address, port=8080)
    by_name = sec.via_proxy(runner, "provider.test", 8080, connect=True)
    by_address = sec.via_proxy(runner, provider.address, 8080)
    lookup = sec.probe(runner, op="resolve", name="provider.test")
    assert _refused(direct) and _refused(by_name) and _refused(by_address) and _refused(lookup)
    assert (by_name["proxy_status"], by_name["rule"]) == (403, want)
    assert (by_address["status"], by_address["rule"]) == (403, want)

    sec.decision(runner, via="network", host=provider.address, port=8080, verdict="deny")
    sec.decision(runner, via="proxy", host="provider.test", rule=want)
    sec.decision(runner, via="proxy", host=provider.address, rule=want)
    sec.decision(runner, via="dns", host="provider.test", verdict="deny")
    if profile != "minimal":  # nor can a runner's own rules name a provider
        put = sec.api.put(f"/v1/runners/{runner.id}/egress", json={"allow": ["provider.test"]})
        assert put.status_code == 422, put.text

    # The same model call, made through the gateway, works.
    reply = sec.message(runner, f"hello from {profile}")
    assert f"stand-in provider: hello from {profile}" in reply["reply"]
    sec.wait_event(runner.id, "llm.call")
    assert provider.requests_from(runner.address) == [], "the runner reached the provider"
    assert any("POST /v1/chat/completions" in line for line in provider.log())


# --- the host ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["minimal", "full"])
def test_host_ports_are_closed(sec: Sec, profile: str) -> None:
    runner = sec.runner(profile)
    # Another address of this host: its bridge on a stand-in network.
    host_elsewhere = sec.docker.networks.get(sec.world.hosts["outside"].network).attrs["IPAM"][
        "Config"
    ][0]["Gateway"]
    targets = [
        (runner.gateway_ip, sec.cp_port),  # the control-plane API (listening on all addresses)
        (runner.gateway_ip, 6379),  # Redis
        (runner.gateway_ip, sec.listener_port),  # any other service on all addresses
        (host_elsewhere, sec.listener_port),
        (host_elsewhere, sec.gateway_port),  # even the gateway, at another address
    ]
    for host, port in targets:
        result = sec.probe(runner, op="tcp", host=host, port=port)
        assert _refused(result), (host, port, result)
        sec.decision(runner, via="network", host=host, port=port, rule="firewall:host")
    assert runner.address not in sec.listener_seen

    # The proxy never connects to this host, whatever a runner's rules open.
    if profile == "full":
        sec.set_egress(runner, private_ranges=_opened(sec))
        result = sec.via_proxy(runner, host_elsewhere, sec.listener_port)
        assert (result["status"], result["rule"]) == (403, "host_address")
        sec.decision(runner, via="proxy", host=host_elsewhere, rule="host_address")
    # What a runner may reach on the host: the gateway, on its own bridge address.
    assert sec.probe(runner, op="tcp", host=runner.gateway_ip, port=sec.gateway_port)["ok"]


def test_runners_cannot_reach_each_other(sec: Sec) -> None:
    a = sec.runner("full")
    b = sec.runner("full", key="full-b")
    for src, dst in ((a, b), (b, a)):
        result = sec.probe(src, op="tcp", host=dst.address, port=18789)
        assert _refused(result), result
        sec.decision(src, via="network", host=dst.address, port=18789, rule="firewall:forward")
    result = sec.via_proxy(a, b.address, 18789)
    assert (result["status"], result["rule"]) == (403, "private_address")
    sec.decision(a, via="proxy", host=b.address, rule="private_address")


# --- the outside world ---------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_outside_hosts(sec: Sec, profile: str) -> None:
    outside, other = sec.world.hosts["outside"], sec.world.hosts["other"]
    if profile == "minimal":
        runner = sec.runner(profile)
    else:
        allow = ["outside.test"] if profile == "standard" else []
        runner = sec.runner(profile, allow=allow, private_ranges=_opened(sec))

    # Directly: never, for any profile.
    for host in (outside, other):
        result = sec.probe(runner, op="tcp", host=host.address, port=8080)
        assert _refused(result), result
        sec.decision(runner, via="network", host=host.address, port=8080, rule="firewall:forward")

    allowed = sec.via_proxy(runner, "outside.test", 8080, connect=True)
    not_listed = sec.via_proxy(runner, "other.test", 8080)
    if profile == "minimal":
        for result in (allowed, not_listed):
            assert _refused(result) and result["rule"] == "profile:gateway_only"
        sec.decision(runner, via="proxy", host="outside.test", rule="profile:gateway_only")
    elif profile == "standard":
        assert allowed["status"] == 200 and "stand-in outside" in allowed["body"]
        assert (not_listed["status"], not_listed["rule"]) == (403, "no_allow_rule")
        sec.decision(runner, via="proxy", host="outside.test", verdict="allow")
        sec.decision(runner, via="proxy", host="other.test", rule="no_allow_rule")
    else:
        assert allowed["status"] == 200 and "stand-in outside" in allowed["body"]
        assert not_listed["status"] == 200 and "stand-in other" in not_listed["body"]
        sec.decision(runner, via="proxy", host="other.test", rule="profile:open_except_providers")
    for host in (outside, other):
        assert host.requests_from(runner.address) == [], "a stand-in heard from the runner itself"


def test_connect_cannot_front_another_host(sec: Sec) -> None:
    runner = sec.runner("standard", allow=["outside.test"], private_ranges=_opened(sec))
    by_address = sec.via_proxy(runner, sec.world.hosts["outside"].address, 8080, connect=True)
    assert (by_address["proxy_status"], by_address["rule"]) == (403, "no_allow_rule")
    wrong_port = sec.via_proxy(runner, "outside.test", 22, connect=True)
    assert _refused(wrong_port)
    sec.decision(runner, via="proxy", host=sec.world.hosts["outside"].address, verdict="deny")


def test_custom_profile_sets_every_layer(sec: Sec) -> None:
    """`research` exists only in this suite's policies: its allowlist is its profile's."""
    runner = sec.runner("research", private_ranges=_opened(sec))
    assert sec.via_proxy(runner, "outside.test", 8080)["status"] == 200
    other = sec.via_proxy(runner, "other.test", 8080)
    assert (other["status"], other["rule"]) == (403, "no_allow_rule")
    sec.decision(runner, via="proxy", host="outside.test", rule="allow outside.test:8080")
    sec.decision(runner, via="proxy", host="other.test", rule="no_allow_rule")
    assert _refused(sec.probe(runner, op="exec", argv=["ls"]))
    assert sec.probe(runner, op="write", path="/workspace/x")["ok"]
    host = sec.docker.containers.get(f"paddock-{runner.id}").attrs["HostConfig"]
    assert (host["Memory"], host["PidsLimit"], host["NanoCpus"]) == (512 << 20, 128, 5 * 10**8)


# --- DNS -----------------------------------------------------------------------------------


def test_runner_resolves_nothing(sec: Sec) -> None:
    resolver = sec.world.hosts["resolver"]
    runner = sec.runner("standard", allow=["outside.test"], private_ranges=_opened(sec))
    for name in ("secret.test", "outside.test", "exfil.example"):
        result = sec.probe(runner, op="resolve", name=name)
        assert _refused(result), (name, result)
        sec.decision(runner, via="dns", host=name, rule="runner_dns")
    refused = sec.via_proxy(runner, "secret.test", 8080, connect=True)
    assert refused["rule"] == "no_allow_rule"
    assert sec.via_proxy(runner, "outside.test", 8080)["status"] == 200
    # The proxy resolved the allowed name after its check; the refused one was never asked,
    # and nothing the runner looked up reached the upstream resolver.
    assert resolver.queries_for("outside.test")
    assert resolver.queries_for("secret.test") == []
    assert resolver.queries_for("exfil.example") == []
    assert resolver.requests_from(runner.address) == []


# --- filesystem and commands ---------------------------------------------------------------


@pytest.mark.parametrize("profile", ["minimal", "standard"])
def test_root_filesystem_is_read_only(sec: Sec, profile: str) -> None:
    runner = sec.runner(profile)
    before = _messages(sec, runner.id)
    mounts = sec.probe(runner, op="read", path="/proc/self/mounts")["content"].splitlines()
    root = next(line.split() for line in mounts if line.split()[1] == "/")
    assert "ro" in root[3].split(","), root
    for path in ("/etc/escape", "/usr/bin/escape", "/opt/paddock/agent.py", "/escape"):
        assert _refused(sec.probe(runner, op="write", path=path)), path
    # /workspace belongs to the runner's user: only the read-only mount stops the write.
    workspace = sec.probe(runner, op="write", path="/workspace/notes.txt")
    if profile == "minimal":
        assert _refused(workspace) and "Read-only file system" in str(workspace["error"])
    else:
        assert workspace["ok"], workspace  # its own tmpfs
    assert sec.probe(runner, op="write", path="/tmp/scratch")["ok"]  # tmpfs, not the root
    assert _messages(sec, runner.id) >= before + 7  # each attempt is in the session's audit


def test_minimal_runs_no_command(sec: Sec) -> None:
    minimal, standard = sec.runner("minimal"), sec.runner("standard")
    before = _messages(sec, minimal.id)
    for argv in (["sh", "-c", "id"], ["ls", "/"], ["python3", "-c", "print(1)"]):
        result = sec.probe(minimal, op="exec", argv=argv)
        assert _refused(result) and "exec refused" in str(result["error"]), result
    assert _messages(sec, minimal.id) >= before + 3
    # standard: its allowlist only
    assert sec.probe(standard, op="exec", argv=["ls", "/"])["ok"]
    assert _refused(sec.probe(standard, op="exec", argv=["sh", "-c", "id"]))


def test_sandbox_hardening(sec: Sec) -> None:
    runtime = {"hardened": "runc", "gvisor": "runsc"}[sec.level]
    for profile in PROFILES:
        runner = sec.runner(profile)
        host = sec.docker.containers.get(f"paddock-{runner.id}").attrs["HostConfig"]
        assert host["Runtime"] == runtime
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert not any("unconfined" in opt for opt in host["SecurityOpt"])  # default seccomp
        assert host["PidsLimit"] > 0 and host["Memory"] > 0 and host["NanoCpus"] > 0
        assert host["Memory"] == host["MemorySwap"]
        assert host["ReadonlyRootfs"] is (profile != "full")
        assert "/tmp" in host["Tmpfs"] and not host["Privileged"]
        status = sec.probe(runner, op="read", path="/proc/self/status")["content"]
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["CapEff"].strip("0\n") == ""
        assert fields.get("NoNewPrivs", "1").strip() == "1"  # (gVisor does not show it)
        assert fields["Uid"].split()[0] == "10001"
        init = sec.probe(runner, op="read", path="/proc/1/cmdline")["content"]
        assert init.split("\0")[0].endswith("tini")
        created = sec.wait_event(runner.id, "runner.created")
        assert (created["profile"], created["sandbox"]) == (profile, sec.level)


# --- the runner's token --------------------------------------------------------------------


def test_token_works_only_for_its_runner_while_it_lives(sec: Sec) -> None:
    a = sec.runner("minimal", key="token-a")
    b = sec.runner("minimal", key="token-b")

    def models(caller: Runner, token: str) -> dict[str, Any]:
        url = f"http://{caller.gateway_ip}:{sec.gateway_port}/v1/models"
        return sec.probe(caller, op="http", url=url, headers={"Authorization": f"Bearer {token}"})

    assert models(a, a.token)["status"] == 200  # its own token, from its own address
    assert models(b, a.token)["status"] == 401  # from another runner
    sec.wait_event(a.id, "gateway.token_refused", reason="wrong_source", source=b.address)
    stolen = sec.via_proxy(b, "outside.test", 8080, credentials=f"{a.id}:{a.token}")
    assert (stolen["status"], stolen["rule"]) == (407, "auth:wrong_source")
    sec.decision(b, via="proxy", rule="auth:wrong_source")

    assert sec.api.post(f"/v1/runners/{a.id}/stop").json()["state"] == "stopped"
    assert models(b, a.token)["status"] == 401  # its runner stopped: dead everywhere
    sec.wait_event(a.id, "gateway.token_refused", reason="runner_not_live")
    from_host = httpx.get(
        f"http://127.0.0.1:{sec.gateway_port}/v1/models",
        headers={"Authorization": f"Bearer {b.token}"},
    )
    assert from_host.status_code == 401  # b is alive, but this is not b's address
    sec.wait_event(b.id, "gateway.token_refused", reason="wrong_source", source="127.0.0.1")
    del sec.runners["token-a"]


# --- resources -----------------------------------------------------------------------------

_DAEMON = """
import os, sys, time
if os.fork():
    sys.exit(0)
os.setsid()
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
end = time.time() + 60
"""
FORK_BOMB = (
    _DAEMON
    + """
while time.time() < end:
    try:
        os.fork()
    except OSError:
        time.sleep(0.1)
"""
)
BIG_ALLOCATION = (
    _DAEMON
    + """
blocks = []
for _ in range(64):  # up to 8 GiB, 128 MiB at a time
    blocks.append(bytearray(b"x") * (128 << 20))
time.sleep(max(0.0, end - time.time()))
"""
)


@pytest.mark.parametrize(("script", "reason"), [(FORK_BOMB, "pids_exhausted"),
                                                (BIG_ALLOCATION, "oom_killed")])  # fmt: skip
def test_exhaustion_is_contained(sec: Sec, script: str, reason: str) -> None:
    neighbour = sec.runner("minimal")
    victim = sec.runner("full", key=f"exhaust-{reason}")
    spec = {"op": "exec", "argv": ["python3", "-c", script], "timeout": 10}
    # The agent may not live to answer (its runner is stopped as soon as it is noticed).
    sec.api.post(
        f"/v1/sessions/{victim.session_id}/messages",
        json={"content": "!probe " + json.dumps(spec), "stream": False},
        timeout=120,
    )
    failed = sec.wait_state(victim.id, {"failed"}, 150)  # gVisor faults pages in slowly
    assert failed["failure"]["code"] == reason, failed
    sec.wait_event(victim.id, "runner.state_changed", to="failed", failure_code=reason)
    del sec.runners[f"exhaust-{reason}"]
    # The host and the other runners carry on.
    assert sec.probe(neighbour, op="env")["ok"]
    assert sec.api.get("/healthz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{sec.gateway_port}/healthz").status_code == 200
    assert subprocess.run(["true"], check=False).returncode == 0


def _messages(sec: Sec, runner_id: str) -> int:
    return sum(1 for e in sec.events(runner_id) if e["type"] == "session.message")
