"""One place that builds the Kafka broker and publishes contracts, so every service connects alike."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from fusion_contracts import limits
from opentelemetry import propagate, trace
from pydantic import BaseModel

from fusion.kafka.codec import encode
from fusion.kafka.security import broker_security, client_options
from fusion.liveness import Progress
from fusion.observability.metrics import FusionMetrics
from fusion.observability.tracing import TRACER, tracing_enabled
from fusion.settings import Settings

_HEADERS = {"content-type": "application/json"}
_HEADER_LIST = [(name, value.encode()) for name, value in _HEADERS.items()]

PUBLISH_ATTEMPTS = 30
PUBLISH_RETRY_S = 2.0

log = structlog.get_logger(__name__)


def build_broker(
    settings: Settings, service: str, metrics: FusionMetrics | None = None, **options: Any
) -> KafkaBroker:
    """While tracing is on, every broker carries the trace context in message headers; given
    `metrics`, it counts and times every message for Prometheus.

    Handlers get the message itself (see `fusion.kafka.batches.whole_message`) with no dependency
    injection: resolving a `KafkaMessage` parameter by injection runs a worker thread per message.
    """
    middlewares: list[Any] = [KafkaTelemetryMiddleware()] if tracing_enabled() else []
    if metrics is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=metrics.registry, app_name=service))
    return KafkaBroker(
        # FastStream takes one string for one host: `a:9092,b:9092` must be a list.
        [server.strip() for server in settings.kafka_bootstrap.split(",") if server.strip()],
        middlewares=middlewares,
        client_id=f"{service}-{settings.instance_id}",
        security=broker_security(settings),
        allow_auto_create_topics=False,
        # Acknowledged by every in-sync replica, and never written twice by the producer's own
        # retries: on a replicated cluster a leader's failure then loses no acknowledged message.
        acks="all",
        enable_idempotence=True,
        apply_types=False,
        max_request_size=limits.MAX_MESSAGE_BYTES,
        # FastStream logs every message it handles at this level: keep that out of INFO.
        log_level=logging.DEBUG,
        logger=logging.getLogger("fusion.kafka"),
        **options,
    )


class OwnProducer:
    """The producer a service publishes with (`Outbox`), configured as the broker's: every in-sync
    replica acknowledges, and retries never write a message twice. Made and started with the service
    (`start`, `stop`: aiokafka makes its producers inside the running event loop)."""

    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._service = service
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            client_id=f"{self._service}-{self._settings.instance_id}",
            acks="all",
            enable_idempotence=True,
            max_request_size=limits.MAX_MESSAGE_BYTES,
            **client_options(self._settings),
        )
        await producer.start()
        self.producer = producer

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()


class Outbox:
    """Publishes contracts as JSON and waits for the broker's acknowledgement of each message.

    Given a service's own producer, once started, a message goes straight to it,
    with its trace context in the headers while tracing is on, counted in
    `fusion_messages_published_total`: FastStream's publish path (a publish command, its
    middlewares) costs every message work that none of the services needs, on every hop of every
    request. Without one (clients, and FastStream's in-memory test broker) it goes through
    `KafkaBroker.publish`, whose middlewares trace and count it."""

    def __init__(
        self,
        broker: KafkaBroker,
        own: OwnProducer | None = None,
        metrics: FusionMetrics | None = None,
    ) -> None:
        self._broker = broker
        self._own = own
        self._metrics = metrics
        self._traced = tracing_enabled()

    async def send(self, topic: str, message: BaseModel, key: bytes, partition: int | None = None) -> None:
        body = encode(message)
        producer = self._own.producer if self._own is not None else None
        if producer is None:
            await self._broker.publish(body, topic=topic, key=key, partition=partition, headers=_HEADERS)
            return
        try:
            with publish_span(topic, self._traced) as headers:
                sent = await producer.send(topic, body, key=key, partition=partition, headers=headers)
                await sent
        except Exception:
            if self._metrics is not None:
                self._metrics.published(topic, ok=False)
            raise
        if self._metrics is not None:
            self._metrics.published(topic, ok=True)


@contextlib.contextmanager
def publish_span(
    topic: str, traced: bool, parent: Sequence[tuple[str, bytes]] = ()
) -> Iterator[list[tuple[str, bytes]]]:
    """The headers of a message to `topic`: while tracing is on, in a producer span whose context they
    carry (as FastStream's telemetry middleware does). The span's parent is the current span, or the
    context that `parent` (headers) carries."""
    if not traced:
        yield _HEADER_LIST
        return
    context = propagate.extract({name: value.decode() for name, value in parent}) if parent else None
    with trace.get_tracer(TRACER).start_as_current_span(
        f"{topic} publish", context=context, kind=trace.SpanKind.PRODUCER
    ):
        carrier = dict(_HEADERS)
        propagate.inject(carrier)
        yield [(name, value.encode()) for name, value in carrier.items()]


async def publish_while_broker_away(
    publish: Callable[[], Awaitable[None]], what: str, progress: Progress | None = None
) -> bool:
    """Runs `publish`, again every `PUBLISH_RETRY_S` while the broker is away (a restart, say), at most
    `PUBLISH_ATTEMPTS` times; False when it gave up. `progress` watches it until it is done."""
    with progress.watching(f"publishing {what}") if progress else contextlib.nullcontext():
        return await _retrying(publish, what)


async def _retrying(publish: Callable[[], Awaitable[None]], what: str) -> bool:
    for attempt in range(PUBLISH_ATTEMPTS):
        try:
            await publish()
            return True
        except KafkaError as error:
            log.warning(f"{what} not published; retrying", error=repr(error), attempt=attempt)
            await asyncio.sleep(PUBLISH_RETRY_S)
    log.error(f"{what} dropped after retries")
    return False
