"""Batches: every record handled in order whatever one of them does, and each batch handed to the
handler through FastStream's subscriber, counted by FastStream's metrics middleware."""

from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from fusion.kafka.batches import BatchSubscription, Fetched, Record, each_record, tolerant_headers
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


def counted(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return (
        registry.get_sample_value(name, {"app_name": "svc", "broker": "kafka", "handler": "t", **labels})
        or 0.0
    )


@pytest.mark.parametrize("fails", [False, True])
async def test_a_subscription_hands_each_batch_to_its_handler_and_faststream_counts_it(fails: bool) -> None:
    registry = CollectorRegistry()
    broker = KafkaBroker(middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name="svc")])
    subscription = BatchSubscription(broker, "t", "g", Settings())
    handled: list[list[bytes]] = []

    @subscription
    async def handle(batch: Fetched) -> None:
        handled.append([record.value for record in batch.records])
        if fails:
            raise RuntimeError("boom")

    async with TestKafkaBroker(broker) as test_broker:
        try:
            await test_broker.publish_batch(b"{}", b"[]", topic="t")
        except RuntimeError:  # the in-memory broker hands a handler's error back to the publisher
            assert fails

    assert handled == [[b"{}", b"[]"]]
    assert counted(registry, "faststream_received_messages_total") == 2
    assert counted(registry, "faststream_received_messages_in_process") == 0
    status = "error" if fails else "acked"
    assert counted(registry, "faststream_received_processed_messages_total", status=status) == 2


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


async def test_records_with_unreadable_headers_reach_the_handler_with_readable_ones() -> None:
    """FastStream's parser decodes every header as UTF-8; one bad header would lose the whole batch."""
    record = ConsumerRecord(
        topic="t", partition=0, offset=3, timestamp=0, timestamp_type=0, key=None, value=b"{}",
        checksum=None, serialized_key_size=0, serialized_value_size=2,
        headers=(("traceparent", b"\xff\xfe"), ("empty", None), ("content-type", b"application/json")),
    )  # fmt: skip
    parsed: list[tuple[Record, ...]] = []

    async def faststreams_parser(records: tuple[Record, ...]) -> KafkaMessage:
        for r in records:
            {name: value.decode() for name, value in r.headers}  # as FastStream's own does
        parsed.append(records)
        return cast(KafkaMessage, object())

    await tolerant_headers((record,), faststreams_parser)

    [[seen]] = parsed
    assert (seen.topic, seen.partition, seen.offset, seen.value) == ("t", 0, 3, b"{}")
    assert seen.headers == (("traceparent", "\ufffd\ufffd".encode()), ("content-type", b"application/json"))
