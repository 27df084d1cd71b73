"""Audit ledger: durable chained appends per second, and chain verification speed.

    python -m bench.audit [--producers 128] [--appends 50000] [--verify-events 1000000]

Runs against the SQLite store in a temporary directory (synchronous=FULL: every commit is
fsynced) and nothing leaves the machine. Appends: `--producers` tasks each call
`store.apply([AppendAudit(...)])` one event at a time, so the group commit batches them; the
latency of one append is the time its `apply` took to return (the event durable and chained).
Verification: `--verify-events` events are written in large batches, then read back page by page
with `audit_rows` and fed to `ChainVerifier`, as `paddock audit verify` does. Every loop is
bounded by its count.

Each figure also gives the process's CPU time per event (both threads: the event loop and the
SQLite writer), which moves less than wall-clock rates when the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from paddock_core import AppendAudit, AuditEvent, ChainVerifier, SqliteStore

from ._harness import percentiles

_PAGE = 10_000
_SEED_BATCH = 5_000


def _event(org_id: str, i: int) -> AuditEvent:
    return AuditEvent(
        org_id=org_id,
        actor="pdk_bench0001",
        type="llm.call",
        runner_id="rn_bench",
        session_id="ss_bench",
        data={"i": i, "model": "gpt-4o-mini", "cost_usd": 0.000123, "status": 200},
    )


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def appends(store: SqliteStore, producers: int, total: int) -> tuple[float, list[float]]:
    """(seconds, per-append latencies in ms) for `total // producers * producers` batches."""
    per = total // producers
    latencies: list[float] = []

    async def producer(p: int) -> None:
        for i in range(per):
            event = _event("org_append", p * per + i)
            t0 = time.perf_counter()
            await store.apply([AppendAudit(event)])
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(producer(p) for p in range(producers)))
    return time.perf_counter() - t0, latencies


async def seed(store: SqliteStore, org_id: str, total: int) -> float:
    """Seconds to append `total` events in batches of `_SEED_BATCH`."""
    t0 = time.perf_counter()
    for start in range(0, total, _SEED_BATCH):
        n = min(_SEED_BATCH, total - start)
        await store.apply([AppendAudit(_event(org_id, start + i)) for i in range(n)])
    return time.perf_counter() - t0


async def verify(store: SqliteStore, org_id: str) -> tuple[int, float, float]:
    """(events checked, seconds in total, seconds in ChainVerifier alone)."""
    verifier = ChainVerifier()
    after, hashing = 0, 0.0
    t0 = time.perf_counter()
    while True:
        rows = await store.audit_rows(org_id, after_seq=after, limit=_PAGE)
        if not rows:
            break
        t1 = time.perf_counter()
        feed = verifier.feed
        for row in rows:
            if not feed(row):
                raise RuntimeError(f"chain broken: {verifier.report()}")
        hashing += time.perf_counter() - t1
        after = rows[-1].seq
    return verifier.checked, time.perf_counter() - t0, hashing


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        await store.open()
        try:
            await appends(store, args.producers, min(2_000, args.appends))  # warm-up
            cpu = time.process_time()
            elapsed, lat = await appends(store, args.producers, args.appends)
            cpu_us = (time.process_time() - cpu) / len(lat) * 1e6
            stats = percentiles(lat)
            print(
                f"durable chained appends: {len(lat) / elapsed:9.0f} events/s, "
                f"{cpu_us:.0f} µs CPU/event "
                f"({len(lat)} events, {args.producers} producers, one event per apply)"
            )
            print(
                f"  latency of one append: p50 {stats['p50']:.2f} ms  "
                f"p99 {_p99(lat):.2f} ms  max {stats['max']:.2f} ms"
            )
            cpu = time.process_time()
            seeded = await seed(store, "org_verify", args.verify_events)
            cpu_us = (time.process_time() - cpu) / args.verify_events * 1e6
            print(
                f"bulk appends ({_SEED_BATCH} per apply): "
                f"{args.verify_events / seeded:9.0f} events/s, {cpu_us:.0f} µs CPU/event "
                f"({args.verify_events} events)"
            )
            cpu = time.process_time()
            checked, total_s, hashing_s = await verify(store, "org_verify")
            cpu_us = (time.process_time() - cpu) / checked * 1e6
            print(
                f"verification, read and verified: {checked / total_s:9.0f} events/s, "
                f"{cpu_us:.1f} µs CPU/event ({checked} events, {total_s:.2f} s)"
            )
            print(f"verification, ChainVerifier alone: {checked / hashing_s:9.0f} events/s")
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--producers", type=int, default=128)
    parser.add_argument("--appends", type=int, default=50_000)
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
