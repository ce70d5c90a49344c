"""A result transaction that never ends (aiokafka can wait for ever on a transaction coordinator that a
broker's failure took away: a judge of the chaos run stopped publishing one partition's results that
way) is given up on; a new producer under the partition's id settles it, and the markers decide what
goes out again: exactly one result either way.

The hang is injected into aiokafka's `commit_transaction` for the first transaction only: once after
the commit reached the broker (the result is out; sending it again would double it), once before (the
transaction is left open; the new producer aborts it, so the result must go again). Each test uses a
transactional id of its own, so the session's judge is not fenced."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fusion.judge.output import PartitionOutput
from fusion.kafka.transactions import PartitionProducer
from fusion.settings import Settings
from fusion_contracts import topics

from tests.component.support import a_plan, a_result

pytestmark = [pytest.mark.kafka]

TIMEOUT_S = 2.0
PARTITION = 0


async def _ends(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def _keys_since(settings: Settings, starts: dict[TopicPartition, int]) -> list[bytes]:
    """Every committed record's key from `starts` to the ends as of now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(starts))
        keys: list[bytes] = []
        pending = {tp for tp in starts if ends[tp] > starts[tp]}
        while pending:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                keys.extend(record.key or b"" for record in records)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return keys
    finally:
        await consumer.stop()


def _hang_first_commit(
    monkeypatch: pytest.MonkeyPatch, when: Literal["after", "before"]
) -> Callable[[], int]:
    """The first `commit_transaction` in this process hangs, `after` or `before` it reached the broker."""
    real: Callable[[AIOKafkaProducer], Awaitable[None]] = AIOKafkaProducer.commit_transaction
    calls = 0

    async def commit(producer: AIOKafkaProducer) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            if when == "after":
                await real(producer)
            await asyncio.Event().wait()
        await real(producer)

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", commit)
    return lambda: calls


@pytest.mark.usefixtures("topics")
@pytest.mark.parametrize("when", ["after", "before"])
async def test_a_transaction_that_never_ends_is_settled_and_gives_exactly_one_result(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, when: Literal["after", "before"]
) -> None:
    ours = settings.model_copy(update={"judge_transaction_timeout_s": TIMEOUT_S})
    request_id = f"stuck-{when}-{uuid.uuid4().hex}"
    results = [TopicPartition(topics.RESULTS, p) for p in range(settings.partitions_results)]
    markers = [TopicPartition(topics.RELEASED, PARTITION)]
    starts = await _ends(ours, results + markers)
    calls = _hang_first_commit(monkeypatch, when)
    producer = PartitionProducer(ours.kafka_bootstrap, f"tests-stuck-{uuid.uuid4().hex}", TIMEOUT_S)
    committed: list[set[str]] = []
    output = PartitionOutput(ours, PARTITION, lambda _p, ids: committed.append(ids), producer=producer)
    await output.open()
    output.resume()
    try:
        published = await asyncio.wait_for(output.publish(a_plan(request_id), a_result(request_id)), 30)
    finally:
        await output.close()

    assert published
    assert calls() >= 2, "the hang was not injected"
    assert committed == [{request_id}]
    result_keys = await _keys_since(ours, {tp: starts[tp] for tp in results})
    marker_keys = await _keys_since(ours, {tp: starts[tp] for tp in markers})
    assert result_keys.count(request_id.encode()) == 1
    assert marker_keys.count(request_id.encode()) == 1
