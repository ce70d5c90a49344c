"""Batches: every record handled in order whatever one of them does, and no sleep on an idle consumer."""

import time
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, KafkaMessage
from fusion.kafka.batches import IDLE_WAIT_MS, MAX_RECORDS, batch_subscriber, each_record
from fusion.settings import Settings


def a_record(offset: int, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return cast(ConsumerRecord, SimpleNamespace(topic="t", partition=partition, offset=offset, headers=()))


def a_batch(records: tuple[ConsumerRecord[bytes, bytes], ...], consumer: Any = None) -> KafkaMessage:
    return KafkaMessage(records, b"", consumer=consumer)


async def test_a_record_whose_handling_raises_does_not_stop_the_rest_of_its_batch() -> None:
    handled: list[int] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.offset == 1:
            raise RuntimeError("boom")
        handled.append(record.offset)

    records = tuple(a_record(offset) for offset in range(4))
    batch = a_batch(records)
    await each_record(batch, handle)
    assert handled == [0, 2, 3]


class ShrinkingConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """An AIOKafkaConsumer without a broker whose assignment the test changes."""

    assigned: set[TopicPartition]

    def assignment(self) -> set[TopicPartition]:
        return self.assigned


async def test_records_of_a_partition_revoked_during_the_batch_are_left_to_its_new_owner() -> None:
    consumer = object.__new__(ShrinkingConsumer)  # no broker behind it
    consumer.assigned = {TopicPartition("t", 0), TopicPartition("t", 1)}
    handled: list[tuple[int, int]] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append((record.partition, record.offset))
        consumer.assigned = {TopicPartition("t", 0)}  # a rebalance while this record is handled

    records = (a_record(7, partition=1), a_record(3, partition=0), a_record(8, partition=1), a_record(4))
    batch = a_batch(records, consumer)
    await each_record(batch, handle)
    assert handled == [(1, 7), (0, 3), (0, 4)]


class FetchingConsumer:
    """Answers `getmany` from a list of fetches, recording what it was asked."""

    def __init__(self, *fetches: dict[TopicPartition, list[Any]]) -> None:
        self._fetches = list(fetches)
        self.asked: list[tuple[int, int | None]] = []

    async def getmany(self, timeout_ms: int, max_records: int | None) -> dict[TopicPartition, list[Any]]:
        self.asked.append((timeout_ms, max_records))
        return self._fetches.pop(0)


async def test_an_empty_wait_returns_at_once_and_records_come_in_partition_order() -> None:
    subscriber = batch_subscriber(KafkaBroker(), "t", "g", Settings())
    first, second = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = FetchingConsumer({}, {first: [a_record(5), a_record(6)], second: [a_record(9, 1)]})

    started = time.monotonic()
    nothing = await subscriber.get_msg(cast(AIOKafkaConsumer, consumer))
    waited_s = time.monotonic() - started
    fetched = await subscriber.get_msg(cast(AIOKafkaConsumer, consumer))

    assert nothing == ()
    assert waited_s < IDLE_WAIT_MS / 1000 / 10  # FastStream's own sleeps IDLE_WAIT_MS after an empty wait
    assert [(record.partition, record.offset) for record in fetched] == [(0, 5), (0, 6), (1, 9)]
    assert consumer.asked == [(IDLE_WAIT_MS, MAX_RECORDS)] * 2
