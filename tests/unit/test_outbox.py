"""The outbox publishes each contract as JSON with its key and partition: through a service's own
producer, counted in Fusion's metrics, or else through the broker, counted by FastStream's."""

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaTimeoutError
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from fusion.kafka.broker import Outbox, OwnProducer
from fusion.kafka.codec import encode
from fusion.observability.metrics import FusionMetrics
from fusion.settings import Settings
from fusion_contracts import ChatMessage
from prometheus_client import CollectorRegistry


def published(registry: CollectorRegistry, status: str) -> float:
    labels = {"app_name": "svc", "broker": "kafka", "destination": "fusion.answers", "status": status}
    return registry.get_sample_value("faststream_published_messages_total", labels) or 0.0


async def test_a_message_goes_out_as_json_with_its_key_and_partition_and_is_counted() -> None:
    registry = CollectorRegistry()
    broker = KafkaBroker(middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name="svc")])
    received: list[ConsumerRecord[bytes, bytes]] = []

    @broker.subscriber("fusion.answers", decoder=lambda message: message)
    async def on_answer(message: KafkaMessage) -> None:
        received.append(message.raw_message)

    async with TestKafkaBroker(broker):
        await Outbox(broker).send("fusion.answers", ChatMessage(role="user", content="hi"), b"r-1", 3)

    [record] = received
    assert (record.topic, record.key, record.partition) == ("fusion.answers", b"r-1", 3)
    assert record.value == encode(ChatMessage(role="user", content="hi"))
    assert ("content-type", b"application/json") in list(record.headers)
    assert published(registry, "success") == 1
    assert published(registry, "error") == 0


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


def recording(error: Exception | None = None) -> tuple[OwnProducer, RecordingProducer]:
    producer = object.__new__(RecordingProducer)  # no broker behind it
    producer.sent, producer.error = [], error
    own = OwnProducer(Settings(), "svc")
    own.producer = producer  # as `start` leaves it
    return own, producer


def counted(metrics: FusionMetrics, status: str) -> float:
    labels = {"topic": "fusion.answers", "status": status}
    return metrics.registry.get_sample_value("fusion_messages_published_total", labels) or 0.0


async def test_with_its_own_producer_a_message_goes_straight_to_it_and_is_counted() -> None:
    (own, producer), metrics = recording(), FusionMetrics()
    outbox = Outbox(KafkaBroker(), own, metrics)
    await outbox.send("fusion.answers", ChatMessage(role="user", content="hi"), b"r-1", partition=3)

    [sent] = producer.sent
    assert (sent["topic"], sent["key"], sent["partition"]) == ("fusion.answers", b"r-1", 3)
    assert sent["value"] == encode(ChatMessage(role="user", content="hi"))
    assert ("content-type", b"application/json") in sent["headers"]
    assert (counted(metrics, "ok"), counted(metrics, "error")) == (1, 0)


async def test_a_message_its_producer_cannot_deliver_raises_and_is_counted_as_an_error() -> None:
    (own, _), metrics = recording(KafkaTimeoutError()), FusionMetrics()
    with pytest.raises(KafkaTimeoutError):
        await Outbox(KafkaBroker(), own, metrics).send(
            "fusion.answers", ChatMessage(role="user", content="hi"), b"k"
        )
    assert (counted(metrics, "ok"), counted(metrics, "error")) == (0, 1)
