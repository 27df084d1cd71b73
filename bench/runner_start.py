"""Runner start: Paddock POST→ready against a plain docker-SDK create+start+probe of the same image.

    python -m bench.runner_start [--runs 20] [--openclaw-runs 3] [--no-openclaw]

Everything runs on this machine: `paddock serve` on loopback with the fake provider, runners on
internal networks it creates. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import docker
import httpx

from ._harness import Paddock, fmt, paddock_serve, percentiles

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
                run_env = [e for e in env if not e.startswith("PADDOCK_GATEWAY_URL=")]
                run_env.append(f"PADDOCK_GATEWAY_URL=http://{gateway_ip}:{p.gateway_port}/v1")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--openclaw-runs", type=int, default=3)
    parser.add_argument("--no-openclaw", action="store_true")
    args = parser.parse_args()

    with paddock_serve() as p:
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
