"""Consuming what a fetch brought in one go, then handling its records one by one.

FastStream runs its whole per-message path (context, middlewares, parser, metrics) for every message it
hands a handler, which none of the services needs per record. A batch subscriber runs that path once
per fetch, and each record is then handled as before, in order, by `each_record`. Against a real
broker a service's subscriber skips that path altogether (`_straight_to`), since it lies between every
fetch and its handler, on every hop of a request. FastStream still owns the consumer (its group, its
rebalances, starting and stopping it); its `faststream_received_*` metrics are kept as its middleware
keeps them, and tracing is `each_record`'s (below). FastStream's in-memory test broker still goes
through FastStream's path (`hand_over`).

Three things a batch would lose are put back here:
- FastStream sleeps as long again after a wait that found nothing (`BatchSubscriber.get_msg`), so a
  message arriving on an idle consumer could wait up to that long. `fetch` waits for records only, and
  answers as soon as any arrive.
- FastStream's tracing would give a batch a trace of its own. `each_record` handles each record in a
  span whose parent is the one its producer sent in the headers, so a fused request stays one trace.
- A rebalance while a batch is handled takes partitions away, and aiokafka would no longer hand out
  their records. `each_record` skips the batch's records of partitions no longer assigned: their new
  owner reads them again from the last commit.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.middlewares import AckPolicy
from fusion_contracts import limits
from opentelemetry import propagate, trace

from fusion.observability.message_metrics import ReceivedMetrics, message_metrics_of
from fusion.observability.tracing import TRACER, tracing_enabled
from fusion.settings import Settings

log = structlog.get_logger(__name__)

MAX_RECORDS = 100
"""The most records handed over at once: a handler's back-pressure (a full pool) holds the rest."""

IDLE_WAIT_MS = 1_000
"""How long one wait for records lasts on an idle consumer; records end it as soon as they arrive."""

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Handle = Callable[[Record], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one fetch brought, in partition order, and the consumer that fetched it (None under
    FastStream's in-memory test broker, which has no consumer and no offsets to commit)."""

    records: tuple[Record, ...]
    consumer: AIOKafkaConsumer | None


HandleBatch = Callable[[Fetched], Awaitable[None]]


async def whole_message(message: KafkaMessage) -> KafkaMessage:
    """A subscriber's decoder that hands its handler the message itself (record, consumer, headers);
    the handler decodes the body with the contract it expects (see `fusion.kafka.dead_letters`)."""
    return message


async def fetch(consumer: AIOKafkaConsumer) -> tuple[Record, ...]:
    """The records of one wait on `consumer`, at most `IDLE_WAIT_MS` long and never followed by a sleep."""
    fetched = await consumer.getmany(timeout_ms=IDLE_WAIT_MS, max_records=MAX_RECORDS)
    return tuple(chain.from_iterable(fetched.values()))


class BatchSubscription:
    """A service's subscription to a topic: batches of whole records, offsets committed by the
    service itself, a partition without a commit yet read from its start, and a dead consumer's
    partitions moved to the others after 6 s rather than 10. Used as a decorator of its handler."""

    def __init__(
        self, broker: KafkaBroker, topic: str, group_id: str, settings: Settings, **options: Any
    ) -> None:
        self.subscriber: BatchSubscriber = broker.subscriber(
            topic,
            batch=True,
            max_records=MAX_RECORDS,
            batch_timeout_ms=IDLE_WAIT_MS,
            decoder=whole_message,
            group_id=group_id,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_500,
            max_partition_fetch_bytes=limits.MAX_MESSAGE_BYTES,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            **options,
        )
        metrics = message_metrics_of(broker)
        self._received = metrics.received(topic) if metrics else None

    def __call__(self, handle: HandleBatch) -> HandleBatch:
        async def through_faststream(message: KafkaMessage) -> None:
            await hand_over(message, handle)

        self.subscriber(through_faststream)  # FastStream's in-memory test broker calls this
        _straight_to(self.subscriber, handle, self._received)
        return handle


async def hand_over(message: KafkaMessage, handle: HandleBatch) -> None:
    """A batch that came through FastStream's path (its in-memory test broker), handed to `handle` as
    a `Fetched`."""
    consumer = message.consumer if isinstance(message.consumer, AIOKafkaConsumer) else None
    try:
        await handle(Fetched(tuple(message.raw_message), consumer))
    finally:
        # FastStream caches what `whole_message` decoded (the message itself) on the message: a
        # reference cycle that only the cyclic garbage collector would free, with the batch's records.
        message.clear_cache()


def _straight_to(subscriber: Any, handle: HandleBatch, received: ReceivedMetrics | None) -> None:
    """Has the subscriber's consume loop hand each fetch to `handle` itself. A batch whose handler
    raises is logged and counted, as FastStream's middlewares would, and the loop goes on."""

    async def get_msg(consumer: AIOKafkaConsumer) -> Fetched | None:
        records = await fetch(consumer)
        return Fetched(records, consumer) if records else None

    async def consume_one(batch: Fetched) -> None:
        if not subscriber.running:
            return
        with subscriber.lock:  # FastStream's graceful stop waits for it
            try:
                with received.handling(batch.records) if received else nullcontext():
                    await handle(batch)
            except Exception:
                log.exception("batch not handled", topic=batch.records[0].topic, records=len(batch.records))

    subscriber.get_msg = get_msg
    subscriber.consume_one = consume_one


HANDLE_ATTEMPTS = 3
RETRY_BACKOFF_S = (0.05, 0.5)
"""Waits between attempts at a record whose handling raised."""

GiveUp = Callable[[Record, str], Awaitable[None]]
"""What a service does with a record it could not handle: dead-letter it with the reason, and count
it as done so its partition's commits go on."""


async def each_record(
    batch: Fetched, handle: Handle, give_up: GiveUp | None = None, stop: Callable[[], bool] | None = None
) -> tuple[Record, ...]:
    """Hands `handle` each record of a batch, in order. A record whose handling raises is tried
    again, then given up (`give_up`), and the batch goes on. When `stop` says so, or a record could
    not even be given up, the records left are fetched again (`rewind`) and returned. Records of
    partitions a rebalance took away meanwhile are skipped: their new owner reads them from the last
    commit."""
    traced = tracing_enabled()
    for index, record in enumerate(batch.records):
        if batch.consumer is not None and not _still_assigned(batch.consumer, record):
            continue
        if (stop is not None and stop()) or not await _handle_or_give_up(record, handle, give_up, traced):
            left = batch.records[index:]
            if batch.consumer is not None:
                rewind(batch.consumer, left)
            return left
    return ()


async def _handle_or_give_up(record: Record, handle: Handle, give_up: GiveUp | None, traced: bool) -> bool:
    """False when the record was neither handled nor given up (giving it up failed too)."""
    for attempt in range(HANDLE_ATTEMPTS):
        try:
            if traced:
                with _span_from_producer(record):
                    await handle(record)
            else:
                await handle(record)
            return True
        except Exception as error:  # any failure: the record must be retried or given up, never lost
            log.exception(
                "message not handled",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                attempt=attempt + 1,
            )
            if attempt + 1 < HANDLE_ATTEMPTS:
                await asyncio.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                continue
            if give_up is None:
                return True
            try:
                await give_up(record, f"not handled after {HANDLE_ATTEMPTS} attempts: {error!r}")
            except Exception:  # the dead-letter topic is out of reach too: read it again later
                log.exception("message neither handled nor given up", topic=record.topic)
                return False
    return True


def rewind(consumer: AIOKafkaConsumer, records: tuple[Record, ...]) -> None:
    """Has the consumer fetch these records again: each partition's position goes back to its
    first record among them (partitions no longer assigned are left to their new owner)."""
    firsts: dict[TopicPartition, int] = {}
    for record in records:
        firsts.setdefault(TopicPartition(record.topic, record.partition), record.offset)
    assigned = consumer.assignment()
    for tp, offset in firsts.items():
        if tp in assigned:
            consumer.seek(tp, offset)


def _still_assigned(consumer: AIOKafkaConsumer, record: Record) -> bool:
    return TopicPartition(record.topic, record.partition) in consumer.assignment()


@contextmanager
def _span_from_producer(record: Record) -> Iterator[None]:
    carrier = {key: value.decode("latin-1") for key, value in record.headers or ()}
    with trace.get_tracer(TRACER).start_as_current_span(
        f"{record.topic} process", context=propagate.extract(carrier), kind=trace.SpanKind.CONSUMER
    ):
        yield
