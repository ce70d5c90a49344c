"""Batches: every record handled in order whatever one of them does, no sleep on an idle consumer, and
each fetch handed to the handler by the consume loop itself, counted as FastStream counts it."""

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from fusion.kafka.batches import IDLE_WAIT_MS, MAX_RECORDS, BatchSubscription, Fetched, each_record, fetch
from fusion.observability.message_metrics import KafkaMessageMetrics
from fusion.settings import Settings
from prometheus_client import CollectorRegistry


def a_record(offset: int, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return cast(
        ConsumerRecord,
        SimpleNamespace(topic="t", partition=partition, offset=offset, headers=(), value=b"{}"),
    )


def a_batch(records: tuple[ConsumerRecord[bytes, bytes], ...], consumer: Any = None) -> Fetched:
    return Fetched(records, consumer)


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
    first, second = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = FetchingConsumer({}, {first: [a_record(5), a_record(6)], second: [a_record(9, 1)]})

    started = time.monotonic()
    nothing = await fetch(cast(AIOKafkaConsumer, consumer))
    waited_s = time.monotonic() - started
    fetched = await fetch(cast(AIOKafkaConsumer, consumer))

    assert nothing == ()
    assert waited_s < IDLE_WAIT_MS / 1000 / 10  # FastStream's own sleeps IDLE_WAIT_MS after an empty wait
    assert [(record.partition, record.offset) for record in fetched] == [(0, 5), (0, 6), (1, 9)]
    assert consumer.asked == [(IDLE_WAIT_MS, MAX_RECORDS)] * 2


def counted(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return (
        registry.get_sample_value(name, {"app_name": "svc", "broker": "kafka", "handler": "t", **labels})
        or 0.0
    )


@pytest.mark.parametrize("fails", [False, True])
async def test_the_consume_loop_hands_each_fetch_to_the_handler_and_counts_it(fails: bool) -> None:
    registry = CollectorRegistry()
    broker = KafkaBroker(middlewares=[KafkaMessageMetrics(registry=registry, app_name="svc")])
    subscription = BatchSubscription(broker, "t", "g", Settings())
    handled: list[Fetched] = []

    @subscription
    async def handle(batch: Fetched) -> None:
        handled.append(batch)
        if fails:
            raise RuntimeError("boom")

    loop = subscription.subscriber
    loop.running = True
    fetches = FetchingConsumer({}, {TopicPartition("t", 0): [a_record(5), a_record(6)]})
    consumer = cast(AIOKafkaConsumer, fetches)
    assert await loop.get_msg(consumer) is None  # nothing fetched: the loop hands nothing over
    batch = await loop.get_msg(consumer)
    await loop.consume_one(batch)  # a handler that raises is logged; the loop goes on

    assert [(b.consumer, [r.offset for r in b.records]) for b in handled] == [(consumer, [5, 6])]
    assert counted(registry, "faststream_received_messages_total") == 2
    assert counted(registry, "faststream_received_messages_size_bytes_sum") == 4
    assert counted(registry, "faststream_received_messages_in_process") == 0
    status = "error" if fails else "acked"
    assert counted(registry, "faststream_received_processed_messages_total", status=status) == 2
    if fails:
        assert (
            counted(
                registry,
                "faststream_received_processed_messages_exceptions_total",
                exception_type="RuntimeError",
            )
            == 1
        )


async def test_a_record_whose_handling_keeps_raising_is_given_up_with_the_reason() -> None:
    attempts: list[int] = []
    given_up: list[tuple[int, str]] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        attempts.append(record.offset)
        if record.offset == 1:
            raise RuntimeError("boom")

    async def give_up(record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        given_up.append((record.offset, reason))

    left = await each_record(a_batch(tuple(a_record(o) for o in range(3))), handle, give_up)

    assert attempts == [0, 1, 1, 1, 2]
    assert [offset for offset, _ in given_up] == [1]
    assert "boom" in given_up[0][1]
    assert left == ()


async def test_a_record_that_fails_and_cannot_be_given_up_is_read_again_with_the_rest() -> None:
    """Neither handled nor dead-lettered (the broker is away, say): it and the records after it are
    fetched again instead of being skipped."""
    consumer = object.__new__(RewindingConsumer)
    consumer.assigned = {TopicPartition("t", 0), TopicPartition("t", 1)}
    consumer.seeks = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.offset == 5:
            raise RuntimeError("boom")

    async def give_up(record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        raise RuntimeError("no dead-letter topic either")

    records = (a_record(4), a_record(5), a_record(9, partition=1), a_record(6))
    left = await each_record(a_batch(records, consumer), handle, give_up)

    assert left == records[1:]
    assert sorted(consumer.seeks) == [(TopicPartition("t", 0), 5), (TopicPartition("t", 1), 9)]


async def test_a_stop_leaves_the_rest_of_the_batch_to_be_fetched_again() -> None:
    consumer = object.__new__(RewindingConsumer)
    consumer.assigned = {TopicPartition("t", 0)}
    consumer.seeks = []
    handled: list[int] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append(record.offset)

    records = tuple(a_record(o) for o in range(4))
    left = await each_record(a_batch(records, consumer), handle, stop=lambda: len(handled) == 2)

    assert handled == [0, 1]
    assert left == records[2:]
    assert consumer.seeks == [(TopicPartition("t", 0), 2)]


class RewindingConsumer(ShrinkingConsumer):
    seeks: list[tuple[TopicPartition, int]]

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))
