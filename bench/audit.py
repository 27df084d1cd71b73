"""Audit ledger: durable chained appends per second, and chain verification speed.

    python -m bench.audit [--producers 128] [--appends 50000] [--verify-events 1000000]

Runs against the SQLite store in a temporary directory (synchronous=FULL: every commit is
fsynced) and nothing leaves the machine. Appends: `--producers` tasks each call
`store.apply([AppendAudit(...)])` one event at a time, so the group commit batches them; the
latency of one append is the time its `apply` took to return (the event durable and chained).
Verification: `--verify-events` events are written in large batches, then the whole chain is
read back from the store and verified by `verify_stored_chain`, the routine behind
`GET /v1/audit/verify` and `paddock audit verify`; then it is exported to a JSONL file (the
lines `GET /v1/audit/export` writes) and that file is verified as `paddock audit verify --file`
does. Every loop is bounded by its count.

Each figure also gives the process's CPU time per event (every thread: the event loop, the
SQLite writer, the chain readers), which moves less than wall-clock rates when the machine is
shared.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from paddock_core import (
    AppendAudit,
    AuditEvent,
    SqliteStore,
    export_line,
    verify_export,
    verify_stored_chain,
)

from ._harness import percentiles

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


async def verify(store: SqliteStore, org_id: str) -> tuple[int, float]:
    """(events checked, seconds): the whole chain read from the store and verified, by the
    routine `GET /v1/audit/verify` runs."""
    t0 = time.perf_counter()
    verifier, _ = await verify_stored_chain(store, org_id)
    if verifier.broken is not None:
        raise RuntimeError(f"chain broken: {verifier.report()}")
    return verifier.checked, time.perf_counter() - t0


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
            checked, total_s = await verify(store, "org_verify")
            cpu_us = (time.process_time() - cpu) / checked * 1e6
            print(
                f"verification, read from the store and verified: {checked / total_s:9.0f}"
                f" events/s, {cpu_us:.1f} µs CPU/event ({checked} events, {total_s:.2f} s)"
            )
            export = Path(tmp) / "audit.jsonl"
            with export.open("wb") as out:
                async for page in store.audit_chain("org_verify"):
                    out.write(b"".join([export_line(link) + b"\n" for link in page]))
            cpu, t0 = time.process_time(), time.perf_counter()
            with export.open("rb") as lines:
                found = verify_export(lines)
            total_s = time.perf_counter() - t0
            if not found.verifier.report().ok:
                raise RuntimeError(f"export broken: {found.verifier.report()}")
            checked = found.verifier.checked
            cpu_us = (time.process_time() - cpu) / checked * 1e6
            print(
                f"verification of the exported file (paddock audit verify --file): "
                f"{checked / total_s:9.0f} events/s, {cpu_us:.1f} µs CPU/event ({checked} events)"
            )
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
