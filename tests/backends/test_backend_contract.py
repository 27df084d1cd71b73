"""The `RunnerBackend` contract: one suite, run against every implementation (see conftest.py).

A runner is provisioned, probed until ready, answers `/readyz` at `agent_url` (as the control
plane reaches it), stops (the probe then says exited or missing), and is destroyed, twice, after
which no listing shows it. Whatever a backend creates names the runner and the control plane,
so a new backend object (a restarted plane) finds its runners again.
"""

from __future__ import annotations

import pytest

from controlplane.backends import RunnerBackend
from tests.backends.conftest import Harness, agent_client, run, wait_ready

pytestmark = pytest.mark.docker


async def _listed(backend: RunnerBackend) -> dict[str, str]:
    return {o.runner_id: o.controlplane_id for o in await backend.list_runners()}


def test_provisioned_runner_becomes_ready_and_its_agent_answers(
    harness: Harness, controlplane_id: str
) -> None:
    async def body() -> None:
        async with harness.open(controlplane_id) as backend:
            spec = harness.spec()
            ref = await backend.provision(spec)
            await wait_ready(backend, ref)
            async with agent_client(backend) as http:
                response = await http.get(f"{backend.agent_url(ref)}/readyz")
            assert response.status_code == 200, response.text
            assert spec.runner_id in await _listed(backend)
            await backend.destroy(spec.runner_id)

    run(body())


def test_stopped_runner_probes_as_exited_or_missing(
    stoppable: Harness, controlplane_id: str
) -> None:
    async def body() -> None:
        async with stoppable.open(controlplane_id) as backend:
            spec = stoppable.spec()
            ref = await backend.provision(spec)
            await wait_ready(backend, ref)
            await backend.stop(ref)
            await backend.stop(ref)  # stopping twice is not an error
            assert (await backend.probe(ref)).state in ("exited", "missing")
            await backend.destroy(spec.runner_id)

    run(body())


def test_destroy_is_idempotent_and_the_runner_is_no_longer_listed(
    harness: Harness, controlplane_id: str
) -> None:
    async def body() -> None:
        async with harness.open(controlplane_id) as backend:
            spec = harness.spec()
            ref = await backend.provision(spec)
            await wait_ready(backend, ref)
            await backend.destroy(spec.runner_id)
            await backend.destroy(spec.runner_id)
            assert spec.runner_id not in await _listed(backend)
            assert (await backend.probe(ref)).state == "missing"

    run(body())


def test_destroy_of_an_unknown_runner_succeeds(harness: Harness, controlplane_id: str) -> None:
    async def body() -> None:
        async with harness.open(controlplane_id) as backend:
            await backend.destroy("rn_never_existed")

    run(body())


def test_labels_name_the_runner_and_the_control_plane(
    durable: Harness, controlplane_id: str
) -> None:
    async def body() -> None:
        async with durable.open(controlplane_id) as backend:
            spec = durable.spec()
            await backend.provision(spec)
            assert (await _listed(backend)).get(spec.runner_id) == controlplane_id
            async with durable.open(f"{controlplane_id}-other") as other:
                assert spec.runner_id not in await _listed(other)  # each plane sees its own
            await backend.destroy(spec.runner_id)

    run(body())


def test_a_new_backend_object_re_adopts_running_runners(
    durable: Harness, controlplane_id: str
) -> None:
    """A restarted control plane finds its runners by their labels and probes them by the
    reference it stored."""

    async def body() -> None:
        spec = durable.spec()
        async with durable.open(controlplane_id) as first:
            ref = await first.provision(spec)
            await wait_ready(first, ref)
        async with durable.open(controlplane_id) as second:
            assert (await _listed(second)).get(spec.runner_id) == controlplane_id
            await wait_ready(second, ref)
            async with agent_client(second) as http:
                response = await http.get(f"{second.agent_url(ref)}/readyz")
            assert response.status_code == 200
            await second.destroy(spec.runner_id)
            assert spec.runner_id not in await _listed(second)

    run(body())


def test_a_repeated_provision_is_the_same_runner(durable: Harness, controlplane_id: str) -> None:
    async def body() -> None:
        async with durable.open(controlplane_id) as backend:
            spec = durable.spec()
            first = await backend.provision(spec)
            second = await backend.provision(spec)
            assert first == second
            await wait_ready(backend, second)
            assert list((await _listed(backend)).keys()).count(spec.runner_id) == 1
            await backend.destroy(spec.runner_id)

    run(body())
