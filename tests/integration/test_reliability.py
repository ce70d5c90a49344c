"""Failures of processes and of the broker, on the real stack."""

import asyncio
import time

import httpx
import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, Policy

from fusion_testing.stack import KAFKA_PORT, Services, run_infra

pytestmark = [pytest.mark.kafka]


async def test_a_panel_worker_killed_mid_call_leaves_its_task_to_another(
    client: FusionClient, services: Services, standin: str
) -> None:
    request = FusionRequest(
        messages=[ChatMessage(role="user", content="survive a crash")],
        panel=[ModelSpec(model="slow3")],
        judge=ModelSpec(model="fast"),
        policy=Policy(deadline_s=60),
    )
    async with httpx.AsyncClient() as http:
        before = (await http.get(f"{standin}/v1/stats")).json()["requests"].get("sleep-3000", 0)
        future = await client.submit(request)
        await asyncio.sleep(1.5)  # the 3 s call is under way
        services.kill("panel-worker")
        started = time.monotonic()
        services.start("panel-worker")
        result = await asyncio.wait_for(future, timeout=60)
        after = (await http.get(f"{standin}/v1/stats")).json()["requests"].get("sleep-3000", 0)

    took = time.monotonic() - started
    print(f"\nworker killed mid-call: result {result.status} {took:.1f} s after the restart")
    assert result.status == "complete"
    assert result.members[0].status == "ok"
    assert after - before == 2  # the killed worker's call, and the new worker's


async def test_the_services_carry_on_after_a_broker_restart(client: FusionClient) -> None:
    run_infra("kafka.sh", "stop", KAFKA_PORT=str(KAFKA_PORT))
    run_infra("kafka.sh", "start", KAFKA_PORT=str(KAFKA_PORT))
    started = time.monotonic()

    result = await client.fuse(
        FusionRequest(messages=[ChatMessage(role="user", content="after a restart")], preset="standin"),
        timeout_s=90,
    )

    print(f"\nbroker restarted: a request completed {time.monotonic() - started:.1f} s later")
    assert result.status == "complete"


async def test_a_judge_killed_mid_request_still_gives_exactly_one_result(
    client: FusionClient, services: Services
) -> None:
    slow = FusionRequest(
        messages=[ChatMessage(role="user", content="judge crash")],
        panel=[ModelSpec(model="fast"), ModelSpec(model="slow3")],
        judge=ModelSpec(model="fast"),
        policy=Policy(deadline_s=60),
    )
    done = [
        FusionRequest(messages=[ChatMessage(role="user", content=f"before {i}")], preset="standin")
        for i in range(5)
    ]
    finished = await asyncio.gather(*(client.fuse(request) for request in done))
    future = await client.submit(slow)
    await asyncio.sleep(1.0)  # the plan and one answer are in the judge's memory, not yet released

    services.kill("judge")
    services.start("judge")  # reads the open request's messages again; finds the others released
    result = await asyncio.wait_for(future, timeout=60)
    await asyncio.sleep(3.0)  # room for a duplicate to show up

    assert all(r.status == "complete" for r in finished)
    assert result.status == "complete"
    assert [client.results.seen[r.request_id] for r in [*done, slow]] == [1] * 6


async def test_a_judge_stopped_with_sigterm_hands_its_open_requests_over(
    client: FusionClient, services: Services
) -> None:
    request = FusionRequest(
        messages=[ChatMessage(role="user", content="graceful")],
        panel=[ModelSpec(model="fast"), ModelSpec(model="slow3")],
        judge=ModelSpec(model="fast"),
        policy=Policy(deadline_s=60),
    )
    future = await client.submit(request)
    await asyncio.sleep(1.0)

    services.stop("judge")  # SIGTERM: the open request is not released, its offsets not committed
    services.start("judge")
    result = await asyncio.wait_for(future, timeout=60)
    await asyncio.sleep(2.0)

    assert result.status == "complete"
    assert client.results.seen[request.request_id] == 1
