"""Consuming what a fetch brought in one go, then handling its records one by one.

Each service subscribes with FastStream's batch subscriber through its public API: FastStream owns
the consumer (its group, its rebalances, starting and stopping it), runs its per-message path
(middlewares: metrics, tracing) once per fetch, and hands the handler the whole message, whose
records `each_record` then handles in order. FastStream's in-memory test broker goes through the
same handler.

Two things a batch would lose are put back here:
- FastStream's tracing gives a batch a trace of its own. `each_record` handles each record in a
  span whose parent is the one its producer sent in the headers, so a fused request stays one trace.
- A rebalance while a batch is handled takes partitions away, and aiokafka would no longer hand out
  their records. `each_record` skips the batch's records of partitions no longer assigned: their new
  owner reads them again from the last commit.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from fusion_contracts import limits
from opentelemetry import propagate, trace

from fusion.observability.tracing import TRACER, tracing_enabled
from fusion.settings import Settings

log = structlog.get_logger(__name__)

MAX_RECORDS = 100
"""The most records handed over at once: a handler's back-pressure (a full pool) holds the rest."""

IDLE_WAIT_MS = 5
"""How long one wait for records lasts. FastStream sleeps as long again after a wait that found
nothing, so a record reaching an idle consumer waits at most this much longer; a busy consumer never
sleeps. Short, because longer sleeps leave the cores idle under load."""

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Handle = Callable[[Record], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one fetch brought, in partition order, and the consumer that fetched it (None under
    FastStream's in-memory test broker, which has no consumer and no offsets to commit)."""

    records: tuple[Record, ...]
    consumer: AIOKafkaConsumer | None


HandleBatch = Callable[[Fetched], Awaitable[None]]


async def tolerant_headers(
    records: tuple[Record, ...], parse: Callable[[tuple[Record, ...]], Awaitable[KafkaMessage]]
) -> KafkaMessage:
    """A subscriber's parser: FastStream's own, given records whose headers it can read. It decodes
    every header value as UTF-8 and would refuse the whole batch for one bad header, its records then
    neither handled nor dead-lettered; a header without a value is dropped, one that is not UTF-8 is
    decoded with replacement. Headers only carry trace context here, so nothing else changes."""
    if all(_readable(record.headers) for record in records):
        return await parse(records)
    return await parse(tuple(replace(r, headers=_readable_headers(r.headers)) for r in records))


def _readable(headers: Sequence[tuple[str, bytes | None]]) -> bool:
    try:
        for _, value in headers:
            if value is None:
                return False
            value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _readable_headers(headers: Sequence[tuple[str, bytes | None]]) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (name, value.decode(errors="replace").encode()) for name, value in headers if value is not None
    )


async def whole_message(message: KafkaMessage) -> KafkaMessage:
    """A subscriber's decoder that hands its handler the message itself (records, consumer); the
    handler decodes each body with the contract it expects (see `fusion.kafka.dead_letters`)."""
    return message


class BatchSubscription:
    """A service's subscription to a topic: batches of whole records, offsets committed by the
    service itself, a partition without a commit yet read from its start, and a dead consumer's
    partitions moved to the others after 6 s rather than 10. Used as a decorator of its handler."""

    def __init__(
        self, broker: KafkaBroker, topic: str | None, group_id: str, settings: Settings, **options: Any
    ) -> None:
        """`topic`, or None with a `pattern` in `options` (every topic whose name matches)."""
        self.subscriber = broker.subscriber(
            *([topic] if topic else []),
            batch=True,
            max_records=MAX_RECORDS,
            batch_timeout_ms=IDLE_WAIT_MS,
            parser=tolerant_headers,
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

    def __call__(self, handle: HandleBatch) -> HandleBatch:
        async def batch_of(message: KafkaMessage) -> None:
            await hand_over(message, handle)

        self.subscriber(batch_of)
        return handle


async def hand_over(message: KafkaMessage, handle: HandleBatch) -> None:
    """A batch as FastStream delivers it, handed to `handle` as a `Fetched`. A handler that raises
    is logged and counted by FastStream, and its consume loop goes on."""
    consumer = message.consumer if isinstance(message.consumer, AIOKafkaConsumer) else None
    try:
        await handle(Fetched(tuple(message.raw_message), consumer))
    finally:
        # FastStream caches what `whole_message` decoded (the message itself) on the message: a
        # reference cycle that only the cyclic garbage collector would free, with the batch's records.
        message.clear_cache()


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
    carrier = {key: value.decode("latin-1") for key, value in record.headers or () if value is not None}
    with trace.get_tracer(TRACER).start_as_current_span(
        f"{record.topic} process", context=propagate.extract(carrier), kind=trace.SpanKind.CONSUMER
    ):
        yield
