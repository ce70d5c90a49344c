"""One place that builds the Kafka broker and publishes contracts, so every service connects alike."""

import logging
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from fusion_contracts import limits
from pydantic import BaseModel

from fusion.kafka.codec import encode
from fusion.observability.metrics import FusionMetrics
from fusion.settings import Settings

_HEADERS = {"content-type": "application/json"}


def build_broker(settings: Settings, service: str, metrics: FusionMetrics | None = None) -> KafkaBroker:
    """Every broker carries the trace context in message headers (a no-op while tracing is off) and,
    given `metrics`, FastStream's per-message Prometheus metrics."""
    middlewares: list[Any] = [KafkaTelemetryMiddleware()]
    if metrics is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=metrics.registry, app_name=service))
    return KafkaBroker(
        settings.kafka_bootstrap,
        middlewares=middlewares,
        client_id=f"{service}-{settings.instance_id}",
        allow_auto_create_topics=False,
        max_request_size=limits.MAX_MESSAGE_BYTES,
        # FastStream logs every message it handles at this level: keep that out of INFO.
        log_level=logging.DEBUG,
        logger=logging.getLogger("fusion.kafka"),
    )


class Outbox:
    """Publishes contracts as JSON. Waits for the broker's acknowledgement of each message."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def send(self, topic: str, message: BaseModel, key: bytes, partition: int | None = None) -> None:
        await self._broker.publish(
            encode(message), topic=topic, key=key, partition=partition, headers=_HEADERS
        )
