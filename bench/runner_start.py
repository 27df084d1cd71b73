"""Runner start: Paddock POST→ready against a plain docker-SDK create+start+probe of the same image.

    python -m bench.runner_start [--runs 20] [--openclaw-runs 3] [--no-openclaw]
        [--matrix-runs 10]   # POST→ready for each sandbox level × profile (0: skip)
        [--pool-runs 20] [--openclaw-pool-runs 0]   # warm-pool claim → ready (0: skip)
    python -m bench.runner_start --backend e2b-fake [--runs 20]   # on the shipped fake E2B

Everything runs on this machine: `paddock serve` on loopback with the fake provider, runners on
internal networks it creates. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx

from ._harness import Paddock, fmt, free_port, paddock_serve, percentiles

PROBE = "paddock/runner-probe:latest"
OPENCLAW = "paddock/runner-openclaw:latest"
_POLL_S = 0.01


def _until_ready(api: httpx.Client, runner_id: str, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        runner: dict[str, Any] = api.get(f"/v1/runners/{runner_id}").json()
        if runner["state"] != "provisioning":
            if runner["state"] != "ready":
                raise RuntimeError(f"runner {runner_id} is {runner['state']}: {runner['failure']}")
            return runner
        time.sleep(_POLL_S)
    raise RuntimeError(f"runner {runner_id} not ready within {limit_s} s")


def paddock_start(p: Paddock, image: str, runs: int, limit_s: float, **body: Any) -> list[float]:
    samples = []
    with p.client() as api:
        for _ in range(runs):
            t0 = time.perf_counter()
            created = api.post(
                "/v1/runners", json={"profile": "minimal", "image": image, **body}
            ).raise_for_status()
            _until_ready(api, created.json()["id"], limit_s)
            samples.append((time.perf_counter() - t0) * 1000)
            api.delete(f"/v1/runners/{created.json()['id']}").raise_for_status()
    return samples


def plain_docker_start(p: Paddock, runs: int) -> list[float]:
    """The floor: the same image, network and environment, started with the docker SDK alone."""
    client = docker.from_env()
    with p.client() as api:
        donor = api.post("/v1/runners", json={"profile": "minimal", "image": "probe"}).json()
        _until_ready(api, donor["id"], 60)
        env = client.containers.get(f"paddock-{donor['id']}").attrs["Config"]["Env"]
        samples = []
        try:
            for i in range(runs):
                name = f"paddock-bench-plain-{i}"
                labels = {"io.paddock.bench": "1"}
                t0 = time.perf_counter()
                net = client.networks.create(name, internal=True, labels=labels)
                net.reload()
                gateway_ip = net.attrs["IPAM"]["Config"][0]["Gateway"]
                # A runner token works only from its runner's address: this plain container
                # passes the gateway check with the admin key instead.
                run_env = [
                    e
                    for e in env
                    if not e.startswith(("PADDOCK_GATEWAY_URL=", "PADDOCK_RUNNER_TOKEN="))
                ]
                run_env.append(f"PADDOCK_GATEWAY_URL=http://{gateway_ip}:{p.gateway_port}/v1")
                run_env.append(f"PADDOCK_RUNNER_TOKEN={p.key}")
                container = client.containers.run(
                    PROBE,
                    name=name,
                    network=name,
                    environment=run_env,
                    labels=labels,
                    user="10001:10001",
                    detach=True,
                )
                container.reload()
                ip = container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"http://{ip}:18789/readyz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(_POLL_S)
                samples.append((time.perf_counter() - t0) * 1000)
                container.remove(force=True)
                net.remove()
        finally:
            api.delete(f"/v1/runners/{donor['id']}")
            for c in client.containers.list(all=True, filters={"label": "io.paddock.bench=1"}):
                c.remove(force=True)
            for n in client.networks.list(filters={"label": "io.paddock.bench=1"}):
                n.remove()
            client.close()
    return samples


def openclaw_turns(p: Paddock) -> dict[str, float]:
    """Time of a first (cold) and a second (warm) message in one OpenClaw session."""
    with p.client() as api:
        runner = api.post("/v1/runners", json={"profile": "minimal", "image": "openclaw"}).json()
        _until_ready(api, runner["id"], 300)
        sid = api.post(f"/v1/runners/{runner['id']}/sessions", json={}).json()["id"]
        out = {}
        for label in ("first_message_ms", "second_message_ms"):
            t0 = time.perf_counter()
            reply = api.post(
                f"/v1/sessions/{sid}/messages",
                json={"content": "Reply with one word. ECHO:bench", "stream": False},
                timeout=600,
            )
            reply.raise_for_status()
            out[label] = (time.perf_counter() - t0) * 1000
        api.delete(f"/v1/runners/{runner['id']}")
    return out


def _until_warm(api: httpx.Client, pool: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = {p["pool"]: p for p in api.get("/v1/pools").json()["pools"]}
        if status[pool]["warm"] >= 1:
            return
        time.sleep(0.05)
    raise RuntimeError(f"pool {pool} has no warm runner within {limit_s} s")


def pool_claim_start(image: str, runs: int, limit_s: float, size: int = 2) -> list[float]:
    """POST→ready when a warm runner is there to claim (the pool is given time to refill
    between runs: this measures a claim, not an empty pool)."""
    pool = f"{image}/minimal/hardened"
    env = {**serve_env(), "PADDOCK_POOLS": f'{{"{pool}": {size}}}'}
    samples = []
    with paddock_serve(**env) as p, p.client() as api:
        for _ in range(runs):
            _until_warm(api, pool, limit_s)
            t0 = time.perf_counter()
            created = api.post("/v1/runners", json={"profile": "minimal", "image": image})
            created.raise_for_status()
            if created.json().get("pool") != pool:
                raise RuntimeError(f"not claimed from the pool: {created.json()}")
            if created.json()["state"] != "ready":
                _until_ready(api, created.json()["id"], limit_s)
            samples.append((time.perf_counter() - t0) * 1000)
            api.delete(f"/v1/runners/{created.json()['id']}").raise_for_status()
    return samples


def serve_env() -> dict[str, str]:
    """`paddock serve` on free ports; no lookups of real provider names (nothing leaves here)."""
    return {
        "PADDOCK_EGRESS_PORT": str(free_port()),
        "PADDOCK_EGRESS_DNS_PORT": str(free_port()),
        "PADDOCK_EGRESS_NFLOG_GROUP": str(random.randrange(20000, 60000)),
        "PADDOCK_EGRESS_RESOLVE_PROVIDER_HOSTS": "false",
    }


@contextlib.contextmanager
def fake_e2b(gateway_port: int) -> Iterator[dict[str, str]]:
    """`paddock fake-e2b` on loopback (its VMs are containers); yields `paddock serve`'s env."""
    port, egress, key = free_port(), free_port(), "e2b_bench_key"
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "paddock", "fake-e2b", "--port", str(port)]
    command += ["--api-key", key, "--egress-port", str(egress)]
    command += ["--upstream", f"gateway.paddock.test=http://127.0.0.1:{gateway_port}"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/_fake/info", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            else:
                log.seek(0)
                raise RuntimeError(f"paddock fake-e2b did not start:\n{log.read().decode()}")
            yield {
                "PADDOCK_BACKEND": "e2b",
                "PADDOCK_GATEWAY_PORT": str(gateway_port),
                "PADDOCK_GATEWAY_PUBLIC_URL": f"http://gateway.paddock.test:{egress}/v1",
                "PADDOCK_E2B_API_KEY": key,
                "PADDOCK_E2B_API_URL": url,
                "PADDOCK_E2B_SANDBOX_URL": url,
                "PADDOCK_E2B_DOMAIN": "fake-e2b.test",
            }
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def bare_sandbox_start(env: dict[str, str], runs: int) -> list[float]:
    """The fake's floor: SDK create of the probe template and a first command, no Paddock."""
    from e2b import Sandbox

    opts: dict[str, Any] = {
        "api_key": env["PADDOCK_E2B_API_KEY"],
        "api_url": env["PADDOCK_E2B_API_URL"],
        "sandbox_url": env["PADDOCK_E2B_SANDBOX_URL"],
        "domain": env["PADDOCK_E2B_DOMAIN"],
    }
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sandbox = Sandbox.create(template="paddock-probe", timeout=60, **opts)
        sandbox.commands.run("true", user="agent")
        samples.append((time.perf_counter() - t0) * 1000)
        sandbox.kill()
    return samples


def e2b_fake_main(runs: int) -> None:
    """POST→ready on the e2b backend against the fake: the control plane's own overhead there.
    Real E2B start times must be measured against E2B itself (see the README)."""
    gateway_port = free_port()
    with fake_e2b(gateway_port) as env, paddock_serve(**serve_env(), **env) as p:
        paddock = percentiles(paddock_start(p, "probe", runs, 60, sandbox="microvm"))
        bare = percentiles(bare_sandbox_start(env, runs))
        print(f"probe, e2b backend on the fake E2B, Paddock POST→ready  {fmt(paddock)}")
        print(f"probe, fake E2B alone, SDK create + first command        {fmt(bare)}")
        print(f"  Paddock on top, p50 {paddock['p50'] - bare['p50']:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--openclaw-runs", type=int, default=3)
    parser.add_argument("--no-openclaw", action="store_true")
    parser.add_argument("--matrix-runs", type=int, default=10)
    parser.add_argument("--backend", choices=["docker", "e2b-fake"], default="docker")
    parser.add_argument("--pool-runs", type=int, default=20)
    parser.add_argument("--openclaw-pool-runs", type=int, default=0)
    args = parser.parse_args()
    if args.backend == "e2b-fake":
        e2b_fake_main(args.runs)
        return
    if args.pool_runs:
        claim = percentiles(pool_claim_start("probe", args.pool_runs, 60))
        print(f"probe image, hardened   warm-pool claim→ready {fmt(claim)}")
    if args.openclaw_pool_runs:
        claim = percentiles(pool_claim_start("openclaw", args.openclaw_pool_runs, 300))
        print(f"openclaw image, hardened warm-pool claim→ready {fmt(claim)}")

    with paddock_serve(**serve_env()) as p:
        if args.matrix_runs:
            for sandbox in ("hardened", "gvisor"):
                for profile in ("minimal", "standard", "full"):
                    samples = paddock_start(
                        p, "probe", args.matrix_runs, 120, sandbox=sandbox, profile=profile
                    )
                    stats = fmt(percentiles(samples))
                    print(f"probe image, {sandbox:<8} {profile:<8} POST→ready {stats}")
        if args.runs:
            paddock_probe = percentiles(paddock_start(p, "probe", args.runs, 60))
            plain = percentiles(plain_docker_start(p, args.runs))
            print(f"probe image, hardened   Paddock POST→ready  {fmt(paddock_probe)}")
            print(f"probe image, plain docker create+start+probe {fmt(plain)}")
            print(
                f"  ratio p50 {paddock_probe['p50'] / plain['p50']:.2f}x  "
                f"p95 {paddock_probe['p95'] / plain['p95']:.2f}x"
            )
        if not args.no_openclaw:
            oc = percentiles(paddock_start(p, "openclaw", args.openclaw_runs, 300))
            print(f"openclaw image, hardened Paddock POST→ready {fmt(oc)}")
            turns = openclaw_turns(p)
            print(
                f"openclaw session: first message {turns['first_message_ms']:.0f} ms, "
                f"second (warm) message {turns['second_message_ms']:.0f} ms"
            )


if __name__ == "__main__":
    main()
