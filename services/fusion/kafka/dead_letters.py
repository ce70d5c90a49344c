"""Messages a consumer cannot use go to `fusion.dlq` with the reason; the consumer goes on."""

import base64
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import structlog
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from fusion_contracts import DeadLetter, ReplyTo, limits, topics
from pydantic import TypeAdapter

from fusion.clock import utc_now
from fusion.kafka.codec import DecodeError, decode, encode

T = TypeVar("T")

log = structlog.get_logger(__name__)


def dead_letter_for(record: Any, service: str, error: str) -> DeadLetter:
    """A `DeadLetter` for an aiokafka `ConsumerRecord` (or anything with its fields)."""
    raw: bytes = record.value if isinstance(record.value, bytes) else b""
    key = _bounded_key(record.key)
    return DeadLetter(
        topic=record.topic,
        partition=max(record.partition, 0),
        offset=max(record.offset, 0),
        key=key.decode("utf-8", errors="replace") if key is not None else None,
        service=service,
        error=error,
        raw_base64=base64.b64encode(raw[: limits.MAX_DEAD_LETTER_RAW_BYTES]).decode(),
        raw_size=len(raw),
        raw_truncated=len(raw) > limits.MAX_DEAD_LETTER_RAW_BYTES,
        failed_at=utc_now(),
    )


def undeliverable(reply_to: ReplyTo | None, key: bytes, value: bytes, reason: str) -> DeadLetter:
    """A `DeadLetter` for a result that could not go where its request asked: `topic` and
    `partition` are the requested destination (offset 0: it was never written there)."""
    return dead_letter_for(
        SimpleNamespace(
            topic=reply_to.topic if reply_to else topics.RESULTS,
            partition=(reply_to.partition or 0) if reply_to else 0,
            offset=0,
            key=key,
            value=value,
        ),
        "judge",
        f"result not delivered to its reply_to ({reason}); it went to {topics.RESULTS}",
    )


@dataclass(frozen=True, slots=True)
class Invalid:
    """A consumed message that was dead-lettered, and why."""

    error: str


class Inbox:
    """Decodes consumed messages; what does not decode is dead-lettered and returned as `Invalid`."""

    def __init__(self, broker: KafkaBroker, service: str) -> None:
        self._broker = broker
        self._service = service

    async def decode(self, record: ConsumerRecord[bytes, bytes], adapter: TypeAdapter[T]) -> T | Invalid:
        try:
            return decode(adapter, record.value)
        except DecodeError as error:
            await self.dead_letter(record, str(error))
            return Invalid(str(error))

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        letter = dead_letter_for(record, self._service, error)
        log.warning(
            "dead letter", topic=letter.topic, partition=letter.partition, offset=letter.offset, error=error
        )
        await self._broker.publish(encode(letter), topic=topics.DLQ, key=_bounded_key(record.key))


def _bounded_key(key: bytes | None) -> bytes | None:
    """A key of any size fits a dead letter (a huge key must not make the letter too large to send)."""
    return key[: limits.MAX_DEAD_LETTER_KEY_BYTES] if key is not None else None
