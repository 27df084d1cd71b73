"""Runner density: how many idle runners of each sandbox level fit here, and what each costs.

    python -m bench.runner_density [--max 60] [--levels hardened,gvisor] [--profile minimal]

For each level, starts idle probe runners one after another through Paddock (up to `--max`,
or until the host has less than `--reserve-mb` available), then reads:

- host memory per runner: the drop in MemAvailable divided by the runners started (everything
  a runner costs the host: its container, its shim, its gVisor sandbox, its network);
- container memory per runner: the mean of the runners' memory cgroups (what `docker stats`
  shows; for gVisor, the sandbox's own usage);
- how many would fit: the memory available before the first runner, divided by the host memory
  per runner (memory is the binding limit for idle runners; the runner subnet pool allows
  4096 runners of /28).

Everything runs on this machine (`paddock serve` on loopback, runners on internal networks);
every loop is bounded in count and time, and every runner is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from ._harness import fmt, paddock_serve, percentiles
from .runner_start import serve_env

_POLL_S = 0.05


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cgroup_memory_mb(container_id: str) -> float | None:
    for path in (
        f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current",
        f"/sys/fs/cgroup/docker/{container_id}/memory.current",
    ):
        with contextlib.suppress(OSError, ValueError):
            return int(Path(path).read_text()) / 2**20
    return None


def wait_ready(api: httpx.Client, runner_id: str, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    runner: dict[str, Any] = {}
    while time.monotonic() < deadline:
        runner = api.get(f"/v1/runners/{runner_id}").json()
        if runner["state"] != "provisioning":
            break
        time.sleep(_POLL_S)
    return runner


def fill(
    api: httpx.Client, level: str, profile: str, limit: int, reserve_mb: float
) -> dict[str, Any]:
    """Start idle runners until `limit` or the reserve; measure; delete them all."""
    import docker

    client = docker.from_env()
    before = mem_available_mb()
    started: list[str] = []
    starts: list[float] = []
    stop_reason = f"reached --max {limit}"
    try:
        while len(started) < limit:
            if mem_available_mb() < reserve_mb:
                stop_reason = f"host memory reserve ({reserve_mb:.0f} MiB) reached"
                break
            t0 = time.perf_counter()
            body = {"profile": profile, "sandbox": level, "image": "probe"}
            created = api.post("/v1/runners", json=body)
            if created.status_code != 201:
                stop_reason = f"create refused: {created.text[:200]}"
                break
            runner = wait_ready(api, created.json()["id"], 120)
            if runner.get("state") != "ready":
                stop_reason = (
                    f"runner {runner.get('id')} is {runner.get('state')}: {runner.get('failure')}"
                )
                api.delete(f"/v1/runners/{created.json()['id']}")
                break
            starts.append((time.perf_counter() - t0) * 1000)
            started.append(runner["id"])
        time.sleep(5)  # let the last ones settle (Python imports, gVisor's first page faults)
        after = mem_available_mb()
        per_cgroup = [
            m
            for rid in started
            if (m := cgroup_memory_mb(client.containers.get(f"paddock-{rid}").id or "")) is not None
        ]
    finally:
        for rid in started:
            api.delete(f"/v1/runners/{rid}")
        client.close()
    n = len(started)
    host_per_runner = (before - after) / n if n else float("nan")
    return {
        "level": level,
        "runners": n,
        "stopped_because": stop_reason,
        "available_before_mb": before,
        "host_mb_per_runner": host_per_runner,
        "cgroup_mb_per_runner": statistics.fmean(per_cgroup) if per_cgroup else float("nan"),
        "would_fit": int(before / host_per_runner) if n and host_per_runner > 0 else 0,
        "start_ms": percentiles(starts) if starts else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max", type=int, default=60, help="runners per level, at most")
    parser.add_argument("--levels", default="hardened,gvisor")
    parser.add_argument("--profile", default="minimal")
    parser.add_argument("--reserve-mb", type=float, default=4096)
    args = parser.parse_args()

    with paddock_serve(**serve_env()) as p, p.client() as api:
        for level in args.levels.split(","):
            r = fill(api, level, args.profile, args.max, args.reserve_mb)
            print(
                f"{level:<9} {r['runners']:>4} idle {args.profile} runners "
                f"({r['stopped_because']}): host memory {r['host_mb_per_runner']:.1f} MiB/runner, "
                f"container cgroup {r['cgroup_mb_per_runner']:.1f} MiB/runner; "
                f"{r['available_before_mb']:.0f} MiB available → about {r['would_fit']} would fit"
            )
            if r["start_ms"]:
                print(f"{'':<9} start while filling: {fmt(r['start_ms'])}")


if __name__ == "__main__":
    main()
