"""Several judges at once: instances join, leave and pause while fusions are inside their judge calls,
and every request still gets exactly one result."""

import asyncio
import time
from typing import Any

import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusedResult, FusionProgress, FusionRequest, ModelSpec, Policy

from fusion_testing.stack import Services

pytestmark = [pytest.mark.kafka]

EXTRA_JUDGE_PORTS = (18191, 18192)
REQUESTS = 60


def _slow_judge_request(i: int) -> FusionRequest:
    """Panel answers in 20 ms; the judge's call takes 2-4 s, so releases sit inside judge calls."""
    return FusionRequest(
        messages=[ChatMessage(role="user", content=f"scale out {i}")],
        panel=[ModelSpec(model="fast"), ModelSpec(model="fast", seed=1)],
        judge=ModelSpec(model="deliberate-judge"),
        policy=Policy(deadline_s=60),
    )


async def _outcome(
    client: FusionClient, futures: dict[str, "asyncio.Future[FusedResult]"], wait_s: float
) -> tuple[int, int, int]:
    """(lost, duplicated, mismatched) once every future is done or `wait_s` has passed, and the
    results topic has had a few seconds more to show any second result."""
    await asyncio.wait(futures.values(), timeout=wait_s)
    await asyncio.sleep(3.0)
    lost = sum(1 for future in futures.values() if not future.done())
    duplicated = sum(max(client.results.seen.get(request_id, 0) - 1, 0) for request_id in futures)
    mismatched = sum(
        1
        for request_id, future in futures.items()
        if future.done() and not future.exception() and future.result().request_id != request_id
    )
    return lost, duplicated, mismatched


async def test_a_judge_joining_and_leaving_loses_nothing(client: FusionClient, services: Services) -> None:
    services.start_instance("judge-b", "judge", EXTRA_JUDGE_PORTS[0])
    try:
        requests = [_slow_judge_request(i) for i in range(REQUESTS)]
        futures = {r.request_id: await client.submit(r) for r in requests}
        await asyncio.sleep(1.5)  # the first releases are inside their judge calls
        started = time.monotonic()
        services.start_instance("judge-c", "judge", EXTRA_JUDGE_PORTS[1])
        await asyncio.sleep(6.0)
        services.stop("judge-c")  # SIGTERM: a graceful leave, a second rebalance

        lost, duplicated, mismatched = await _outcome(client, futures, wait_s=120)
    finally:
        for label in ("judge-c", "judge-b"):
            if label in services.processes:
                services.stop(label)

    print(
        f"\njudge joined and left: lost={lost} duplicated={duplicated} mismatched={mismatched}"
        f" ({time.monotonic() - started:.1f} s)"
    )
    assert (lost, duplicated, mismatched) == (0, 0, 0)


async def test_a_judge_paused_past_its_session_timeout_publishes_no_second_result(
    client: FusionClient, services: Services
) -> None:
    services.start_instance("judge-b", "judge", EXTRA_JUDGE_PORTS[0])
    try:
        requests = [_slow_judge_request(i) for i in range(REQUESTS)]
        futures = {r.request_id: await client.submit(r) for r in requests}
        await asyncio.sleep(1.5)
        services.pause("judge-b")  # its fusions are in their judge calls; the group moves on
        await asyncio.sleep(12.0)  # twice the session timeout
        services.resume("judge-b")  # a zombie: it still holds results it believes it may publish

        lost, duplicated, mismatched = await _outcome(client, futures, wait_s=120)
    finally:
        if "judge-b" in services.processes:
            services.resume("judge-b")
            services.stop("judge-b")

    print(f"\njudge paused and resumed: lost={lost} duplicated={duplicated} mismatched={mismatched}")
    assert (lost, duplicated, mismatched) == (0, 0, 0)


async def test_a_full_judge_pauses_its_partitions_and_stays_in_its_group(
    client: FusionClient, services: Services
) -> None:
    """At `FUSION_JUDGE_MAX_OPEN` the judge stops reading without leaving the poll loop: waiting in
    the handler for longer than the poll interval would make it leave its group."""
    services.stop("judge")
    label, port = "judge-full", EXTRA_JUDGE_PORTS[0]
    settings = {
        "FUSION_HEALTH_PORT": str(port),
        "FUSION_INSTANCE_ID": f"tests-{label}",
        "FUSION_JUDGE_MAX_OPEN": "2",
        "FUSION_KAFKA_MAX_POLL_INTERVAL_MS": "1500",
    }
    try:
        services.run(label, "judge", settings, port)
        await asyncio.sleep(2.0)  # assigned, markers loaded
        futures = {}
        for i in range(8):  # one after another, so each request's answers follow its plan
            request = _slow_judge_request(i)
            futures[request.request_id] = await client.submit(request)
            await asyncio.sleep(0.5)
        lost, duplicated, mismatched = await _outcome(client, futures, wait_s=90)
        log = (services.log_dir / f"{label}.log").read_text()
    finally:
        if label in services.processes:
            services.stop(label)
        services.start("judge")

    revocations = log.count("answers partitions revoked")
    print(f"\njudge at max_open=2: lost={lost} duplicated={duplicated} revocations={revocations}")
    assert (lost, duplicated, mismatched) == (0, 0, 0)
    assert revocations == 0


async def test_a_redelivered_expired_request_gets_no_second_result(client: FusionClient) -> None:
    """A dispatcher that dies before committing has its requests delivered again; one that is past
    its deadline by then is rejected as expired, and that rejection must not become a second result."""
    request = FusionRequest(
        messages=[ChatMessage(role="user", content="only once")],
        preset="standin",
        policy=Policy(deadline_s=2),
    )
    first = await client.fuse(request)
    await asyncio.sleep(2.5)  # past its deadline
    await client.submit(request)  # the same message again, as a redelivery brings it
    await asyncio.sleep(3.0)

    assert first.status == "complete"
    assert client.results.seen[request.request_id] == 1


async def test_progress_survives_judges_joining_and_leaving(client: FusionClient, services: Services) -> None:
    """Requests that ask for progress, while a judge joins and another leaves mid-fusion: still one
    result each, and each request is told of both members and of its analysis at least once (a judge
    that takes a request over tells it again)."""
    services.start_instance("judge-b", "judge", EXTRA_JUDGE_PORTS[0])
    seen: dict[str, list[Any]] = {}
    try:
        requests = [
            _slow_judge_request(i).model_copy(update={"progress": True, "stream": True})
            for i in range(REQUESTS)
        ]
        futures = {}
        for request in requests:
            told = seen[request.request_id] = []
            futures[request.request_id] = await client.submit(request, on_reply=told.append)
        await asyncio.sleep(1.5)
        services.start_instance("judge-c", "judge", EXTRA_JUDGE_PORTS[1])
        await asyncio.sleep(6.0)
        services.stop("judge-c")

        lost, duplicated, mismatched = await _outcome(client, futures, wait_s=120)
    finally:
        for label in ("judge-c", "judge-b"):
            if label in services.processes:
                services.stop(label)
        for request_id in seen:
            client.results.forget(request_id)

    untold = []
    for request_id, messages in seen.items():
        events = {(m.event, m.member_index) for m in messages if isinstance(m, FusionProgress)}
        wanted = {
            ("panel.added", 0),
            ("panel.added", 1),
            ("panel.completed", 0),
            ("panel.completed", 1),
            ("analysis.in_progress", None),
            ("analysis.completed", None),
        }
        if not wanted <= events:
            untold.append((request_id, sorted(wanted - events, key=str)))
    print(f"\nprogress, judges joining and leaving: lost={lost} duplicated={duplicated} untold={len(untold)}")
    assert (lost, duplicated, mismatched) == (0, 0, 0)
    assert untold == []
