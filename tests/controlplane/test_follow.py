"""Following live: SSE resumable with Last-Event-ID (nothing lost, nothing repeated), heartbeats,
and wake-ups across processes through a real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from controlplane import ControlPlaneSettings, create_app
from controlplane.backends.fake import FakeBackend
from tests.controlplane.conftest import ADMIN_KEY
from tests.controlplane.helpers import wait_for_state
from tests.support.servers import serve_app

REDIS_URL = os.environ.get("PADDOCK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def read_events(
    client: httpx.Client,
    path: str,
    *,
    count: int,
    last_id: int | None = None,
    timeout_s: float = 10,
) -> list[tuple[int, str]]:
    """Read `count` events (seq, type) from an SSE stream, then hang up."""
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    got: list[tuple[int, str]] = []
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(timeout_s)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        seq, kind = None, None
        for line in r.iter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("event: "):
                kind = line[7:]
            elif line == "" and seq is not None and kind is not None:
                got.append((seq, kind))
                seq, kind = None, None
                if len(got) >= count:
                    break
            assert time.monotonic() < deadline, f"only {len(got)} of {count} events arrived"
    return got


def churn(api: httpx.Client, rid: str, rounds: int, stop: threading.Event) -> None:
    for _ in range(rounds):
        if stop.is_set():
            return
        sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
        api.post(f"/v1/sessions/{sid}/close")


def test_reconnect_with_last_event_id_loses_and_repeats_nothing(api: httpx.Client) -> None:
    rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    wait_for_state(api, rid, {"ready"})
    stop = threading.Event()
    producer = threading.Thread(target=churn, args=(api, rid, 15, stop))
    producer.start()
    try:
        path = f"/v1/runners/{rid}/events/stream"
        received: list[tuple[int, str]] = []
        last: int | None = None
        for _ in range(4):  # hang up and come back three times while events flow
            chunk = read_events(api, path, count=9, last_id=last)
            received.extend(chunk)
            last = chunk[-1][0]
        producer.join(timeout=30)
        expected = [
            (e["seq"], e["type"])
            for e in api.get("/v1/audit", params={"runner_id": rid, "limit": 5000}).json()["events"]
        ]
        tail = read_events(api, path, count=len(expected) - len(received), last_id=last)
        received.extend(tail)
    finally:
        stop.set()
        producer.join(timeout=30)
    seqs = [s for s, _ in received]
    assert len(seqs) == len(set(seqs)), "an event was delivered twice"
    assert received == expected, "an event was lost or reordered"
    assert len(expected) == 2 + 15 * 4  # created, ready; then 4 per open/close round


def test_heartbeats_keep_an_idle_stream_alive(
    cp_settings: ControlPlaneSettings, fake_backend: FakeBackend
) -> None:
    settings = cp_settings.model_copy(update={"follow_heartbeat_s": 0.2})
    with serve_app(create_app(settings, backend=fake_backend)) as url:
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
        wait_for_state(api, rid, {"ready"})
        lines: list[str] = []
        with api.stream("GET", f"/v1/runners/{rid}/events/stream", params={"after": 10**6}) as r:
            started = time.monotonic()
            for line in r.iter_lines():
                lines.append(line)
                if lines.count(": keepalive") >= 2 or time.monotonic() - started > 5:
                    break
        assert lines.count(": keepalive") >= 2
        api.close()


def test_follow_refuses_bad_resume_point_and_other_orgs(api: httpx.Client) -> None:
    rid = api.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
    bad = api.get(f"/v1/runners/{rid}/events/stream", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"
    assert api.get("/v1/runners/rn_nope/events/stream").status_code == 404
    assert api.get("/v1/orgs/org_nope/spend/stream").status_code == 404
    assert api.get("/v1/sessions/ses_nope/spend/stream").status_code == 404


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required (run scripts/setup-host): {exc}")
    yield REDIS_URL
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
def test_an_event_from_one_process_wakes_followers_in_another(
    cp_settings: ControlPlaneSettings, redis_url: str, data_dir: Path
) -> None:
    """Process B polls only every 30 s: only a Redis wake-up can deliver within the deadline."""
    port = _free_port()
    env = {
        **os.environ,
        "PADDOCK_ADMIN_KEY": ADMIN_KEY,
        "PADDOCK_DATA_DIR": str(data_dir),
        "PADDOCK_PORT": str(port),
        "PADDOCK_BACKEND": "fake",
        "PADDOCK_REDIS_URL": redis_url,
        "PADDOCK_FOLLOW_POLL_S": "30",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "paddock", "controlplane"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    settings_a = cp_settings.model_copy(update={"redis_url": redis_url})
    try:
        with serve_app(create_app(settings_a, backend=FakeBackend())) as url_a:
            headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
            a = httpx.Client(base_url=url_a, headers=headers, timeout=10)
            b = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if b.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rid = a.post("/v1/runners", json={"profile": "minimal"}).json()["id"]
            wait_for_state(a, rid, {"ready"})
            head = a.get("/v1/audit", params={"runner_id": rid}).json()["events"][-1]["seq"]
            got: list[tuple[int, str]] = []
            delays: list[float] = []

            def follow() -> None:
                got.extend(
                    read_events(
                        b, f"/v1/runners/{rid}/events/stream", count=4, last_id=head, timeout_s=10
                    )
                )

            follower = threading.Thread(target=follow)
            follower.start()
            time.sleep(0.5)  # B is now waiting on its 30 s poll
            started = time.monotonic()
            sid = a.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
            a.post(f"/v1/sessions/{sid}/close")
            follower.join(timeout=15)
            delays.append(time.monotonic() - started)
            assert [t for _, t in got] == [
                "session.opened",
                "runner.state_changed",
                "session.closed",
                "runner.state_changed",
            ]
            assert delays[0] < 5, f"took {delays[0]:.1f} s: not woken through Redis"
            a.close()
            b.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, -15) and proc.stderr is not None:
            print(proc.stderr.read().decode()[-2000:])
