"""Gateway benchmark: the latency a gateway adds, and how many streams it holds, Paddock's
gateway side by side with LiteLLM's proxy, both in front of the same fake provider.

    python -m bench.gateway               # everything (about 4 minutes on 2 cores)
    python -m bench.gateway --quick       # fewer requests, for a smoke run
    python -m bench.gateway --no-litellm  # Paddock only

Every server runs in its own process on 127.0.0.1 (the fake provider, then each gateway in
turn); the load comes from this process over raw keep-alive HTTP/1.1, so the client adds almost
nothing. Added latency = a percentile through the gateway minus the same percentile calling the
fake provider directly, measured back to back. Paddock runs with its policy chain on: the caller
is a runner (its token and session are read from the store on every call), the budget check
runs, and every call is written with its audit event before the answer ends. Every loop is
bounded in count and in time. LiteLLM is installed in its own venv (LITELLM_VENV, default
/tmp/litellm-venv) on first use, with telemetry off and its cost map local.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._harness import free_port

LITELLM_VENV = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv"))
FAKE_KEY = "fk_bench"
PROMPT = "Hello, benchmark. Please answer briefly."


# --- a minimal HTTP/1.1 client ------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    ttfb: float
    """Seconds from sending to the first byte of the body."""
    total: float
    headers: dict[str, str]
    gaps: list[float] = field(default_factory=list)
    """Seconds between body chunks that carried SSE data."""


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(body)}\r\n"
        head += "content-type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        started = time.perf_counter()
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        got: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            got[key.strip().lower()] = value.strip()
        reply = Reply(status, 0.0, 0.0, got)
        if "content-length" in got:
            await self.reader.readexactly(int(got["content-length"]))
            reply.ttfb = time.perf_counter() - started
        else:
            last = None
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                chunk = await self.reader.readexactly(size + 2)
                now = time.perf_counter()
                if not reply.ttfb:
                    reply.ttfb = now - started
                if b"data:" in chunk:
                    if last is not None:
                        reply.gaps.append(now - last)
                    last = now
        reply.total = time.perf_counter() - started
        if got.get("connection") == "close":
            await self.close()
        return reply

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    headers: dict[str, str]
    overhead_header: str | None


def _body(stream: bool, content: str = PROMPT) -> bytes:
    messages = [{"role": "user", "content": content}]
    return json.dumps({"model": "fake-gpt", "messages": messages, "stream": stream}).encode()


async def load(
    target: Target, *, stream: bool, concurrency: int, count: int, limit_s: float
) -> list[Reply]:
    body = _body(stream)
    replies: list[Reply] = []
    remaining = [count]
    deadline = time.monotonic() + limit_s

    async def worker() -> None:
        conn = Conn("127.0.0.1", target.port)
        try:
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                reply = await conn.request(target.path, body, target.headers)
                if reply.status != 200:
                    raise RuntimeError(f"{target.name} answered {reply.status}")
                replies.append(reply)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return replies


async def hold_streams(target: Target, streams: int, *, pause_ms: int) -> tuple[bool, str]:
    """Open `streams` slow streams at once; a stall is a failure or a silence > 10x the pace."""
    body = _body(True, f"{PROMPT} SLOW:{pause_ms}")
    conns = [Conn("127.0.0.1", target.port) for _ in range(streams)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(c.request(target.path, body, target.headers) for c in conns),
                return_exceptions=True,
            ),
            timeout=60,
        )
    except TimeoutError:
        return False, "timed out"
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    failed = [r for r in results if not isinstance(r, Reply) or r.status != 200]
    if failed:
        return False, f"{len(failed)} failed ({failed[0]!r:.80})"
    replies = [r for r in results if isinstance(r, Reply)]
    worst_gap = max(g for r in replies for g in r.gaps)
    ttfb = sorted(r.ttfb for r in replies)
    note = f"worst gap {worst_gap * 1000:.0f} ms, ttfb p99 {_pick(ttfb, 0.99) * 1000:.0f} ms"
    return worst_gap < 10 * pause_ms / 1000, note


# --- servers -------------------------------------------------------------------------------------


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not start:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(ready_url, proc, log)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _seed_runner(database_url: str) -> str:
    """A running runner in an open session with a budget: the policy chain has work to do."""
    from paddock_core import (
        InsertRunner,
        InsertSession,
        RunnerRecord,
        SessionRecord,
        hash_token,
        mint_token,
        new_id,
        open_store,
    )

    token, runner_id, session_id = mint_token("prt"), new_id("rn"), new_id("ses")
    runner = RunnerRecord(
        id=runner_id, org_id="bench", state="running", profile="minimal", sandbox="hardened",
        image="bench", model="fake-gpt", budget_usd=1e6, token_hash=hash_token(token),
        session_id=session_id, backend="fake",
    )  # fmt: skip
    session = SessionRecord(id=session_id, org_id="bench", runner_id=runner_id, budget_usd=1e6)

    async def seed() -> None:
        store = open_store(database_url)
        await store.open()
        try:
            await store.apply([InsertRunner(runner), InsertSession(session)])
        finally:
            await store.close()

    asyncio.run(seed())
    return token


@contextlib.contextmanager
def paddock(fake_port: int, data: Path, *, durable: bool = True) -> Iterator[Target]:
    """`durable`: each call's record is committed (fsync) before its answer ends (the default);
    else written behind, and the answer never waits on the disk."""
    port = free_port()
    database_url = f"sqlite:///{data / f'paddock-{durable}.db'}"
    token = _seed_runner(database_url)
    env = {
        **os.environ,
        "PADDOCK_DATABASE_URL": database_url,
        "PADDOCK_GATEWAY_HOST": "127.0.0.1",
        "PADDOCK_GATEWAY_PORT": str(port),
        "PADDOCK_PROVIDER_BASE_URLS": json.dumps({"fake": f"http://127.0.0.1:{fake_port}/v1"}),
        "PADDOCK_PROVIDER_KEYS": json.dumps({"fake": FAKE_KEY}),
        "PADDOCK_DURABLE_BEFORE_ANSWER": str(durable).lower(),
    }
    args = [sys.executable, "-m", "paddock", "gateway"]
    with _process(args, env, f"http://127.0.0.1:{port}/healthz", data / "paddock.log"):
        headers = {"authorization": f"Bearer {token}"}
        name = "paddock" if durable else "paddock-wb"
        yield Target(name, port, "/v1/chat/completions", headers, "x-paddock-overhead-ms")


@contextlib.contextmanager
def floor(fake_port: int, data: Path) -> Iterator[Target]:
    """The same server stack with nothing but a relay (see bench._floor)."""
    port = free_port()
    args = [sys.executable, "-m", "bench._floor", "--port", str(port),
            "--upstream", f"http://127.0.0.1:{fake_port}"]  # fmt: skip
    with _process(args, dict(os.environ), f"http://127.0.0.1:{port}/", data / "floor.log"):
        yield Target("floor", port, "/v1/chat/completions", {}, None)


def _ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print(f"installing LiteLLM's proxy into {LITELLM_VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"]
        subprocess.run(pip, check=True)
    return binary


@contextlib.contextmanager
def litellm(fake_port: int, data: Path) -> Iterator[Target]:
    binary = _ensure_litellm()
    port = free_port()
    master = f"sk-bench-{secrets.token_hex(6)}"
    config = data / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake-gpt\n"
        "    litellm_params:\n"
        "      model: openai/fake-gpt\n"
        f"      api_base: http://127.0.0.1:{fake_port}/v1\n"
        f"      api_key: {FAKE_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        f"general_settings:\n  master_key: {master}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and "PROXY" not in k}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
        # Anything LiteLLM would fetch from outside goes to a dead loopback port instead.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    args = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]  # fmt: skip
    with _process(args, env, f"http://127.0.0.1:{port}/health/liveliness", data / "litellm.log"):
        headers = {"authorization": f"Bearer {master}"}
        yield Target(
            "litellm", port, "/v1/chat/completions", headers, "x-litellm-overhead-duration-ms"
        )


# --- the run -----------------------------------------------------------------------------------


def _pick(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _times(replies: list[Reply], stream: bool) -> list[float]:
    """Milliseconds: time to first byte for streams, the whole answer otherwise."""
    return [(r.ttfb if stream else r.total) * 1000 for r in replies]


def _pcts(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return _pick(ordered, 0.5), _pick(ordered, 0.9), _pick(ordered, 0.99)


def _measure(target: Target, direct: Target, quick: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for stream in (False, True):
        asyncio.run(load(target, stream=stream, concurrency=8, count=200, limit_s=20))  # warm up
        for concurrency in (1, 16, 64):
            count = {1: 300, 16: 2000, 64: 3000}[concurrency] // (4 if quick else 1)
            run = functools.partial(
                load, stream=stream, concurrency=concurrency, count=count, limit_s=45
            )
            base, via = asyncio.run(run(direct)), asyncio.run(run(target))

            b, v = _pcts(_times(base, stream)), _pcts(_times(via, stream))
            reported = [
                float(r.headers[target.overhead_header])
                for r in via
                if target.overhead_header and target.overhead_header in r.headers
            ]
            rows.append(
                {
                    "gateway": target.name,
                    "mode": "stream ttfb" if stream else "non-stream",
                    "concurrency": concurrency,
                    "n": len(via),
                    "direct": b,
                    "via": v,
                    "added": tuple(x - y for x, y in zip(v, b, strict=True)),
                    "reported": _pcts(reported) if reported else None,
                }
            )
    return rows


def _max_streams(target: Target, quick: bool) -> tuple[int, list[str]]:
    held, notes = 0, []
    for streams in (64, 128, 256) if quick else (64, 128, 256, 512):
        ok, note = asyncio.run(hold_streams(target, streams, pause_ms=100))
        notes.append(f"{streams}: {'ok' if ok else 'STALL'} ({note})")
        if not ok:
            break
        held = streams
    return held, notes


def _print(rows: list[dict[str, object]], streams: dict[str, tuple[int, list[str]]]) -> None:
    def ms(values: object) -> str:
        if not isinstance(values, tuple):
            return "        -         "
        return " ".join(f"{v:6.2f}" for v in values)

    print("\nAdded latency, ms (p50 p90 p99): through the gateway minus direct to the fake")
    print(f"{'gateway':10} {'mode':12} {'conc':>4} {'n':>5}  {'direct':20} {'via gateway':20} "
          f"{'ADDED':20} {'self-reported':20}")  # fmt: skip
    for r in rows:
        print(
            f"{r['gateway']!s:10} {r['mode']!s:12} {r['concurrency']!s:>4} {r['n']!s:>5}  "
            f"{ms(r['direct']):20} {ms(r['via']):20} {ms(r['added']):20} {ms(r['reported']):20}"
        )
    print("\nConcurrent streams held without a stall (SLOW:100 streams, stall = gap > 1 s):")
    for name, (held, notes) in streams.items():
        print(f"  {name:10} {held:>4}   " + "; ".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--only",
        default="floor,paddock,paddock-wb,litellm",
        help="comma list of gateways to run",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    streams: dict[str, tuple[int, list[str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        fake_port = free_port()
        fake_args = [sys.executable, "-m", "paddock", "fake-provider", "--port", str(fake_port)]
        fake_ready = f"http://127.0.0.1:{fake_port}/_fake/stats"
        with _process(fake_args, dict(os.environ), fake_ready, data / "fake.log"):
            direct = Target("direct", fake_port, "/v1/chat/completions", {}, None)
            chosen = set(args.only.split(","))
            if args.no_litellm:
                chosen.discard("litellm")
            everything: dict[str, Callable[[int, Path], AbstractContextManager[Target]]] = {
                "floor": floor,
                "paddock": functools.partial(paddock, durable=True),
                "paddock-wb": functools.partial(paddock, durable=False),
                "litellm": litellm,
            }
            for name, gateway in everything.items():
                if name not in chosen:
                    continue
                with gateway(fake_port, data) as target:
                    print(f"measuring {target.name} ...", flush=True)
                    rows += _measure(target, direct, args.quick)
                    streams[target.name] = _max_streams(target, args.quick)
    _print(rows, streams)
    if args.json:
        args.json.write_text(json.dumps({"latency": rows, "streams": streams}, indent=1))


if __name__ == "__main__":
    main()
