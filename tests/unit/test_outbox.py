"""The outbox hands each message to the broker's aiokafka producer, waits for its acknowledgement, and
counts it in FastStream's `faststream_published_*` metrics as FastStream's own publish path would."""

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.state import RealProducer
from fusion.kafka.broker import Outbox
from fusion.kafka.codec import encode
from fusion.observability.message_metrics import KafkaMessageMetrics
from fusion_contracts import ChatMessage
from prometheus_client import CollectorRegistry


class RecordingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """An AIOKafkaProducer without a broker: records what it is given, acknowledges or fails it."""

    sent: list[dict[str, Any]]
    error: Exception | None

    async def send(self, topic: str, value: bytes, **fields: Any) -> "asyncio.Future[None]":
        self.sent.append({"topic": topic, "value": value, **fields})
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.error is None:
            acknowledged.set_result(None)
        else:
            acknowledged.set_exception(self.error)
        return acknowledged


def connected(error: Exception | None = None) -> tuple[KafkaBroker, RecordingProducer, CollectorRegistry]:
    registry = CollectorRegistry()
    broker = KafkaBroker(middlewares=[KafkaMessageMetrics(registry=registry, app_name="svc")])
    producer = object.__new__(RecordingProducer)  # no broker behind it
    producer.sent, producer.error = [], error
    # as FastStream holds it once connected
    broker.config.producer._producer = RealProducer(producer)  # type: ignore[attr-defined]
    return broker, producer, registry


def published(registry: CollectorRegistry, status: str) -> float:
    labels = {"app_name": "svc", "broker": "kafka", "destination": "fusion.answers", "status": status}
    return registry.get_sample_value("faststream_published_messages_total", labels) or 0.0


async def test_a_message_goes_to_the_producer_as_json_with_its_key_and_is_counted() -> None:
    broker, producer, registry = connected()
    await Outbox(broker).send("fusion.answers", ChatMessage(role="user", content="hi"), b"r-1", partition=3)

    [sent] = producer.sent
    assert (sent["topic"], sent["key"], sent["partition"]) == ("fusion.answers", b"r-1", 3)
    assert sent["value"] == encode(ChatMessage(role="user", content="hi"))
    assert ("content-type", b"application/json") in sent["headers"]
    assert published(registry, "success") == 1
    assert published(registry, "error") == 0


async def test_a_message_the_broker_refuses_raises_and_is_counted_as_an_error() -> None:
    broker, producer, registry = connected(KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await Outbox(broker).send("fusion.answers", ChatMessage(role="user", content="hi"), b"r-1")

    assert len(producer.sent) == 1
    assert published(registry, "error") == 1
    exceptions = registry.get_sample_value(
        "faststream_published_messages_exceptions_total",
        {
            "app_name": "svc",
            "broker": "kafka",
            "destination": "fusion.answers",
            "exception_type": "KafkaTimeoutError",
        },
    )
    assert exceptions == 1
