"""Runners never leak or stick (real Docker, in-process stack with a short reconcile period):
a container killed behind Paddock's back, orphans, TTL, idle suspend and resume, the warm
pool, concurrent calls."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import httpx

from controlplane.backends import (
    LABEL_CONTROLPLANE,
    LABEL_EXPIRES,
    LABEL_MANAGED,
    LABEL_POOL,
    LABEL_RUNNER,
)
from controlplane.backends.docker import AGENT_PORT
from tests.conftest import PROBE_IMAGE, labelled, require_image
from tests.e2e.conftest import Stack
from tests.e2e.helpers import container_of, runner_env, wait_ready

FAST = {"watch_interval_s": 0.3}
POOL = "probe/minimal/hardened"
SECRETS = ("PADDOCK_RUNNER_TOKEN", "OPENCLAW_GATEWAY_TOKEN", "PADDOCK_MODEL")

StackFactory = Callable[..., contextlib.AbstractContextManager[Stack]]


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(docker.errors.NotFound):  # listings race removals
            last = check()
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def state_of(api: httpx.Client, rid: str) -> str:
    return str(api.get(f"/v1/runners/{rid}").json().get("state"))


def probe_runner(api: httpx.Client, **body: Any) -> str:
    created = api.post("/v1/runners", json={"profile": "minimal", "image": "probe", **body})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def maybe_container(stack: Stack, rid: str) -> Any:
    with contextlib.suppress(docker.errors.NotFound):
        return container_of(stack, rid)
    return None


def events(api: httpx.Client, rid: str) -> list[dict[str, Any]]:
    return list(api.get(f"/v1/runners/{rid}/events").json()["events"])


def test_container_killed_behind_paddocks_back_fails_the_runner(make_stack: StackFactory) -> None:
    with make_stack(**FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        api = stack.api
        killed, removed = probe_runner(api), probe_runner(api)
        wait_ready(api, killed, 60)
        wait_ready(api, removed, 60)
        container_of(stack, killed).kill()
        container_of(stack, removed).remove(force=True)
        for rid, code in ((killed, "exited"), (removed, "container_vanished")):
            wait_for(lambda rid=rid: state_of(api, rid) == "failed", f"{rid} failed")
            runner = api.get(f"/v1/runners/{rid}").json()
            assert runner["failure"]["code"] == code, runner
            failed = [e for e in events(api, rid) if e["data"].get("to") == "failed"]
            assert failed and failed[0]["data"]["failure_code"] == code
            assert failed[0]["actor"] == "system"
        for rid in (killed, removed):
            assert api.delete(f"/v1/runners/{rid}").status_code == 204
        assert labelled(stack.docker, stack.controlplane_id) == ([], [])


def test_orphans_with_our_labels_are_removed(make_stack: StackFactory) -> None:
    with make_stack(**FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        labels = {
            LABEL_MANAGED: "true",
            LABEL_CONTROLPLANE: stack.controlplane_id,
            LABEL_RUNNER: "rn_orphan",
        }
        stack.docker.networks.create("paddock-rn_orphan-test", internal=True, labels=labels)
        stack.docker.containers.create(PROBE_IMAGE, name="paddock-rn_orphan-test", labels=labels)
        wait_for(
            lambda: labelled(stack.docker, stack.controlplane_id) == ([], []),
            "the orphan container and network removed",
        )


def test_ttl_stops_the_runner_and_labels_its_container(make_stack: StackFactory) -> None:
    with make_stack(**FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        api = stack.api
        rid = probe_runner(api, ttl_s=4)
        assert api.get(f"/v1/runners/{rid}").json()["expires_at"] is not None
        container = wait_for(lambda: maybe_container(stack, rid), "its container")
        label = float(container.labels[LABEL_EXPIRES])
        assert abs(label - time.time()) < 60  # the TTL, not the plane's default of a day
        wait_for(lambda: state_of(api, rid) == "stopped", "stopped by its TTL", 60)
        stop = [e for e in events(api, rid) if e["data"].get("to") == "stopping"]
        assert stop[0]["data"]["reason"] == "ttl_expired" and stop[0]["actor"] == "system"
        assert container_of(stack, rid).status == "exited"
        assert api.delete(f"/v1/runners/{rid}").status_code == 204


def test_idle_runner_is_paused_and_a_message_resumes_it(make_stack: StackFactory) -> None:
    with make_stack(idle_timeout_s=1.5, **FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        api = stack.api
        rid = probe_runner(api)
        wait_ready(api, rid, 60)
        sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
        wait_for(lambda: state_of(api, rid) == "suspended", "suspended when idle")
        container = container_of(stack, rid)
        container.reload()
        assert container.status == "paused"
        reply = api.post(f"/v1/sessions/{sid}/messages", json={"content": "ECHO:wake"})
        assert reply.status_code == 200 and "ECHO:wake" in reply.text
        container.reload()
        assert container.status == "running"
        moves = [
            (e["data"]["from"], e["data"]["to"], e["data"]["reason"])
            for e in events(api, rid)
            if e["type"] == "runner.state_changed"
        ]
        assert ("running", "suspended", "idle_timeout") in moves
        assert ("suspended", "running", "activity") in moves
        assert api.delete(f"/v1/runners/{rid}").status_code == 204
        assert labelled(stack.docker, stack.controlplane_id) == ([], [])


def pool_containers(client: docker.DockerClient, cp_id: str) -> list[Any]:
    filters = {"label": [f"{LABEL_CONTROLPLANE}={cp_id}", f"{LABEL_POOL}={POOL}"]}
    return list(client.containers.list(filters=filters))


def warm(stack: Stack, count: int) -> list[Any]:
    """Wait until `count` pooled containers answer /readyz as pooled."""

    def check() -> list[Any] | None:
        found = pool_containers(stack.docker, stack.controlplane_id)
        ready = []
        for c in found:
            ip = next(iter(c.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{ip}:18789/readyz", timeout=1).json()["status"] == "pooled":
                    ready.append(c)
        return ready if len(ready) >= count else None

    return list(wait_for(check, f"{count} warm pooled runners", 60))


@contextlib.contextmanager
def second_org(api: httpx.Client) -> Iterator[httpx.Client]:
    org = api.post("/v1/orgs", json={"name": "claimants"}).json()
    key = api.post("/v1/keys", json={"name": "op", "role": "operator", "org_id": org["id"]}).json()[
        "key"
    ]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=str(api.base_url), headers=headers, timeout=60) as client:
        yield client


def test_warm_pool_claim_binds_the_claimant_and_pooled_runners_hold_no_secret(
    make_stack: StackFactory,
) -> None:
    with make_stack(pools={POOL: 2}, **FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        pooled = warm(stack, 2)
        for c in pooled:
            env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
            assert not [name for name in SECRETS if name in env], env
            assert env["PADDOCK_AWAIT_CLAIM"] == "1"  # its config holds ${VAR} references only
        pooled_ids = {c.labels[LABEL_RUNNER] for c in pooled}
        # A claim must present the pooled runner's claim secret, even from the gateway address.
        [net] = pooled[0].attrs["NetworkSettings"]["Networks"].values()
        claim_url = f"http://{net['IPAddress']}:{AGENT_PORT}/paddock/claim"
        for headers in ({}, {"x-paddock-claim": "not-the-secret"}):
            refused = httpx.post(claim_url, json={"env": {}}, headers=headers, timeout=10)
            assert refused.status_code == 403, refused.text
        # Pooled runners belong to nobody: not listed, not reachable by id.
        assert stack.api.get("/v1/runners").json()["runners"] == []
        with second_org(stack.api) as api:
            created = api.post(
                "/v1/runners", json={"profile": "minimal", "image": "probe", "budget_usd": 1}
            )
            assert created.status_code == 201, created.text
            rid = created.json()["id"]
            assert rid in pooled_ids and created.json()["pool"] == POOL
            wait_ready(api, rid, 60)
            assert stack.api.get(f"/v1/runners/{rid}").status_code == 404  # not the pool's
            # Its container still holds no secret: the claim handed them to the process only.
            assert not [n for n in SECRETS if n in runner_env(stack, rid)]
            sid = api.post(f"/v1/runners/{rid}/sessions", json={}).json()["id"]
            reply = api.post(
                f"/v1/sessions/{sid}/messages", json={"content": "ECHO:claimed", "stream": False}
            )
            assert reply.status_code == 200 and "ECHO:claimed" in reply.json()["reply"], reply.text
            # The gateway took the claimant's token from the runner's own address.
            assert api.get(f"/v1/sessions/{sid}/spend").json()["totals"]["calls"] == 1
            first = events(api, rid)[0]
            assert first["type"] == "runner.created" and first["data"]["claimed_from"] == POOL
            assert api.get("/v1/audit/verify").json()["ok"] is True
            # The pool refills in the background.
            warm(stack, 2)
            assert api.delete(f"/v1/runners/{rid}").status_code == 204


def test_idempotency_key_replays_the_same_runner(make_stack: StackFactory) -> None:
    with make_stack(**FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        api = stack.api
        body = {"profile": "minimal", "image": "probe"}
        headers = {"Idempotency-Key": "create-once"}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda _: api.post("/v1/runners", json=body, headers=headers), range(4))
            )
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 3
        other = api.post("/v1/runners", json={**body, "profile": "full"}, headers=headers)
        assert other.status_code == 422 and other.json()["error"]["field"] == "Idempotency-Key"
        rid = answers[0].json()["id"]
        assert api.delete(f"/v1/runners/{rid}").status_code == 204
        assert labelled(stack.docker, stack.controlplane_id) == ([], [])


def test_concurrent_create_stop_delete_end_consistent(make_stack: StackFactory) -> None:
    """16 creates at once, then 48 stop/delete/stop calls at once on them (some while still
    provisioning): every answer is a success, a 404 or a 409, and nothing is left."""
    with make_stack(**FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        api = stack.api
        body = {"profile": "minimal", "image": "probe"}
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            created = list(pool.map(lambda _: api.post("/v1/runners", json=body), range(16)))
            assert {c.status_code for c in created} == {201}
            ids = [c.json()["id"] for c in created]
            calls: list[tuple[str, str]] = []
            for rid in ids:
                calls += [("POST", f"/v1/runners/{rid}/stop"), ("DELETE", f"/v1/runners/{rid}")]
                calls += [("POST", f"/v1/runners/{rid}/stop")]
            answers = list(pool.map(lambda c: api.request(*c), calls))
        codes = {a.status_code for a in answers}
        assert codes <= {200, 204, 404, 409}, [a.text for a in answers if a.status_code >= 500]
        for rid in ids:  # whatever won, a last delete leaves each runner gone
            assert api.delete(f"/v1/runners/{rid}").status_code in (204, 404)
            assert api.get(f"/v1/runners/{rid}").status_code == 404
        wait_for(
            lambda: labelled(stack.docker, stack.controlplane_id) == ([], []),
            "no container or network left",
        )
        assert api.get("/v1/audit/verify").json()["ok"] is True
    # Creations still under way at shutdown were waited for, and removed: nothing is left.
    assert labelled(stack.docker, stack.controlplane_id) == ([], [])


def test_graceful_shutdown_can_stop_runners(make_stack: StackFactory) -> None:
    with make_stack(shutdown_runners="stop", **FAST) as stack:
        require_image(stack.docker, PROBE_IMAGE)
        rid = probe_runner(stack.api)
        wait_ready(stack.api, rid, 60)
    container = stack.docker.containers.get(f"paddock-{rid}")
    assert container.status == "exited"
    with make_stack(**FAST) as again:  # the same data dir: the record says so too
        runner = again.api.get(f"/v1/runners/{rid}").json()
        assert runner["state"] == "stopped"
        moves = [e["data"].get("reason") for e in events(again.api, rid)]
        assert "controlplane_shutdown" in moves
        assert again.api.delete(f"/v1/runners/{rid}").status_code == 204
