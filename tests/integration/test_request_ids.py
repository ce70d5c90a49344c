"""Request ids through the real services: a request delivered twice is answered once; two different
requests that share an id each get their own result (the second: `rejected`, "duplicate request
id"), told apart by `request_digest`."""

import asyncio
import contextlib
from typing import Any

import pytest
from fusion.client import FusionClient
from fusion.kafka.broker import build_broker
from fusion.kafka.codec import DecodeError, decode, encode
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, Policy, topics
from fusion_contracts.common import request_digest
from pydantic import TypeAdapter

from fusion_testing.stack import Services

pytestmark = [pytest.mark.kafka]

_RESULT = TypeAdapter(FusedResult)


def request(request_id: str, question: str) -> FusionRequest:
    return FusionRequest(
        request_id=request_id,
        messages=[ChatMessage(role="user", content=question)],
        preset="standin",
        policy=Policy(deadline_s=20),
    )


async def test_a_reused_id_gets_a_rejection_of_its_own_and_a_redelivery_one_result(
    settings: Settings, client: FusionClient, services: Services
) -> None:
    results: list[FusedResult] = []

    def collect(record: Any) -> None:
        with contextlib.suppress(DecodeError):
            result = decode(_RESULT, record.value)
            if result.request_id.startswith("reused-"):
                results.append(result)

    first, second = request("reused-1", "Why is the sky blue?"), request("reused-1", "Why is grass green?")
    again = request("reused-2", "How far is the moon?")
    raw = {name: encode(r) for name, r in (("first", first), ("second", second), ("again", again))}
    tap = TopicTap(settings.kafka_bootstrap, topics.RESULTS, collect)
    await tap.start()
    broker = build_broker(settings, "request-ids")
    await broker.start()
    try:
        for name in ("first", "second", "again", "again"):  # "again": the same bytes, twice
            key = topics.request_key("reused-2" if name == "again" else "reused-1")
            await broker.publish(raw[name], topic=topics.REQUESTS, key=key)
        for _ in range(300):
            if len(results) >= 3:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)  # time for any further result to show
    finally:
        await broker.stop()
        await tap.stop()

    by_digest = {r.request_digest: r for r in results}
    print(f"\nresults: {[(r.request_id, r.status) for r in results]}")
    assert len(results) == 3
    # whichever plan reached the judge first is answered; the other is the duplicate
    shared = [by_digest[request_digest(raw["first"])], by_digest[request_digest(raw["second"])]]
    assert sorted(r.status for r in shared) == ["complete", "rejected"]
    [rejected] = [r for r in shared if r.status == "rejected"]
    assert "duplicate request id 'reused-1'" in (rejected.error or "")
    assert by_digest[request_digest(raw["again"])].status == "complete"
