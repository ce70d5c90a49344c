"""The outbox publishes each contract as JSON through the broker, with its key and partition, and
FastStream's metrics middleware counts it."""

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from fusion.kafka.broker import Outbox
from fusion.kafka.codec import encode
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
