"""Hosts whose clocks disagree: each service runs with a clock offset of its own
(`FUSION_CLOCK_OFFSET_S`). Within the stated tolerance every request is answered in full and in time;
far beyond it, answers may be cut short, but every request still gets exactly one result."""

import asyncio
import time

import pytest
from fusion.client import FusionClient
from fusion.gateway.app import WAIT_MARGIN_S
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, Policy

from fusion_testing.stack import HEALTH_PORTS, Services

pytestmark = [pytest.mark.kafka]

TOLERATED_SKEW_S = 2.0
"""docs/delivery-guarantees.md, "Clocks": the skew between any two hosts that deadlines tolerate."""
DEADLINE_S = 20
SERVICES = ("dispatcher", "panel-worker", "judge")


def request(i: int) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content=f"what time is it? {i}")],
        preset="standin",
        policy=Policy(deadline_s=DEADLINE_S),
    )


def with_clocks(services: Services, offsets_s: dict[str, float]) -> None:
    """Each service restarted with its clock shifted by its offset."""
    for name in SERVICES:
        services.stop(name)
        env = {"FUSION_HEALTH_PORT": str(HEALTH_PORTS[name]), "FUSION_CLOCK_OFFSET_S": str(offsets_s[name])}
        services.run(name, name, env, HEALTH_PORTS[name])


def with_true_clocks(services: Services) -> None:
    for name in SERVICES:
        if name in services.processes:
            services.stop(name)
        services.start(name)


async def fuse_all(client: FusionClient, count: int) -> tuple[list[FusedResult], list[float], int]:
    """The results, each one's seconds from submission, and how many results came twice."""
    requests = [request(i) for i in range(count)]
    started = time.monotonic()
    took: dict[str, float] = {}
    futures = {r.request_id: await client.submit(r) for r in requests}
    for future in futures.values():
        future.add_done_callback(lambda f: took.setdefault(f.result().request_id, time.monotonic() - started))
    done = await asyncio.wait_for(asyncio.gather(*futures.values()), DEADLINE_S + 30)
    await asyncio.sleep(3.0)  # time for a second result to show
    duplicated = sum(max(client.results.seen.get(rid, 0) - 1, 0) for rid in futures)
    return list(done), [took[r.request_id] for r in done], duplicated


@pytest.mark.parametrize("sign", [1, -1], ids=["workers-ahead-judge-behind", "workers-behind-judge-ahead"])
async def test_within_the_tolerated_skew_every_request_is_answered_in_full_and_in_time(
    client: FusionClient, services: Services, sign: int
) -> None:
    skew = sign * TOLERATED_SKEW_S
    with_clocks(services, {"dispatcher": 0.0, "panel-worker": skew, "judge": -skew})
    try:
        results, took_s, duplicated = await fuse_all(client, 20)
    finally:
        with_true_clocks(services)

    statuses = {result.status for result in results}
    print(
        f"\nclocks {skew:+.0f} s / {-skew:+.0f} s: {statuses}, slowest {max(took_s):.1f} s, dup={duplicated}"
    )
    assert statuses == {"complete"}
    assert all(result.answered == len(result.members) for result in results)
    assert max(took_s) < DEADLINE_S + WAIT_MARGIN_S  # a gateway waits no longer than this
    assert duplicated == 0


async def test_far_beyond_the_tolerated_skew_every_request_still_gets_exactly_one_result(
    client: FusionClient, services: Services
) -> None:
    """The judge two minutes ahead of the dispatcher releases every request at once, before any
    answer; the workers two minutes behind call their models anyway. One result each."""
    with_clocks(services, {"dispatcher": 0.0, "panel-worker": -120.0, "judge": 120.0})
    try:
        results, _, duplicated = await fuse_all(client, 20)
    finally:
        with_true_clocks(services)

    print(f"\nclocks -120 s / +120 s: {sorted(r.status for r in results)}, dup={duplicated}")
    assert len({result.request_id for result in results}) == 20
    assert duplicated == 0
