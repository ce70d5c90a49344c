"""FastStream's per-message Prometheus metrics (`faststream_*`), with each label set looked up once.

FastStream's `MetricsManager` calls `labels(...)` on every metric for every message: six lookups per
message consumed and two per message published, each validating its labels under a lock, a cost paid
on every message for label sets that never change. They are few (one per topic and status), so this
manager keeps the child of each one it has seen and updates it directly: the same metrics, the same
values.
"""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiokafka import ConsumerRecord
from faststream._internal.context.repository import ContextRepo
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.prometheus.container import MetricsContainer
from faststream.prometheus.manager import MetricsManager
from faststream.prometheus.middleware import BasePrometheusMiddleware
from faststream.prometheus.types import ProcessingStatus, PublishingStatus
from prometheus_client import CollectorRegistry


class _Children:
    """The children of one labelled metric, by label values."""

    def __init__(self, metric: Any, label_names: tuple[str, ...]) -> None:
        self._metric = metric
        self._label_names = label_names
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._metric.labels(**dict(zip(self._label_names, values, strict=True)))
            self._children[values] = child
        return child


_RECEIVED = ("app_name", "broker", "handler")
_PUBLISHED = ("app_name", "broker", "destination")


class LabelCachingMetricsManager(MetricsManager):
    """FastStream's metrics manager, minus the per-message label lookups. `KafkaMessageMetrics` sets no
    custom labels, so the `custom_labels` these methods take are always empty."""

    __slots__ = (
        "_exceptions",
        "_in_process",
        "_processed",
        "_processed_duration",
        "_published",
        "_published_duration",
        "_published_exceptions",
        "_received",
        "_received_size",
    )

    def __init__(self, container: MetricsContainer, *, app_name: str) -> None:
        super().__init__(container, app_name=app_name)
        c = container
        self._received = _Children(c.received_messages_total, _RECEIVED)
        self._received_size = _Children(c.received_messages_size_bytes, _RECEIVED)
        self._in_process = _Children(c.received_messages_in_process, _RECEIVED)
        self._processed = _Children(c.received_processed_messages_total, (*_RECEIVED, "status"))
        self._processed_duration = _Children(c.received_processed_messages_duration_seconds, _RECEIVED)
        self._exceptions = _Children(
            c.received_processed_messages_exceptions_total, (*_RECEIVED, "exception_type")
        )
        self._published = _Children(c.published_messages_total, (*_PUBLISHED, "status"))
        self._published_duration = _Children(c.published_messages_duration_seconds, _PUBLISHED)
        self._published_exceptions = _Children(
            c.published_messages_exceptions_total, (*_PUBLISHED, "exception_type")
        )

    def add_received_message(self, broker: str, handler: str, amount: int = 1, **custom_labels: str) -> None:
        self._received(self._app_name, broker, handler).inc(amount)

    def observe_received_messages_size(
        self, broker: str, handler: str, size: int, **custom_labels: str
    ) -> None:
        self._received_size(self._app_name, broker, handler).observe(size)

    def add_received_message_in_process(
        self, broker: str, handler: str, amount: int = 1, **custom_labels: str
    ) -> None:
        self._in_process(self._app_name, broker, handler).inc(amount)

    def remove_received_message_in_process(
        self, broker: str, handler: str, amount: int = 1, **custom_labels: str
    ) -> None:
        self._in_process(self._app_name, broker, handler).dec(amount)

    def add_received_processed_message(
        self, broker: str, handler: str, status: ProcessingStatus, amount: int = 1, **custom_labels: str
    ) -> None:
        self._processed(self._app_name, broker, handler, status.value).inc(amount)

    def observe_received_processed_message_duration(
        self, duration: float, broker: str, handler: str, **custom_labels: str
    ) -> None:
        self._processed_duration(self._app_name, broker, handler).observe(duration)

    def add_received_processed_message_exception(
        self, broker: str, handler: str, exception_type: str, **custom_labels: str
    ) -> None:
        self._exceptions(self._app_name, broker, handler, exception_type).inc()

    def add_published_message(
        self, broker: str, destination: str, status: PublishingStatus, amount: int = 1, **custom_labels: str
    ) -> None:
        self._published(self._app_name, broker, destination, status.value).inc(amount)

    def observe_published_message_duration(
        self, duration: float, broker: str, destination: str, **custom_labels: str
    ) -> None:
        self._published_duration(self._app_name, broker, destination).observe(duration)

    def add_published_message_exception(
        self, broker: str, destination: str, exception_type: str, **custom_labels: str
    ) -> None:
        self._published_exceptions(self._app_name, broker, destination, exception_type).inc()


class ReceivedMetrics:
    """What FastStream's middleware counts for a consumed batch, for a subscriber that hands its
    batches to the handler without FastStream's per-message path (`fusion.kafka.batches`)."""

    def __init__(self, manager: MetricsManager, topic: str) -> None:
        self._manager = manager
        self._topic = topic

    @contextmanager
    def handling(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> Iterator[None]:
        manager, topic, count = self._manager, self._topic, len(records)
        manager.add_received_message("kafka", topic, count)
        manager.observe_received_messages_size("kafka", topic, sum(len(r.value or b"") for r in records))
        manager.add_received_message_in_process("kafka", topic, count)
        status = ProcessingStatus.acked
        started = time.perf_counter()
        try:
            yield
        except Exception as error:
            status = ProcessingStatus.error
            manager.add_received_processed_message_exception("kafka", topic, type(error).__name__)
            raise
        finally:
            manager.observe_received_processed_message_duration(time.perf_counter() - started, "kafka", topic)
            manager.remove_received_message_in_process("kafka", topic, count)
            manager.add_received_processed_message("kafka", topic, status, count)


class PublishedMetrics:
    """What FastStream's middleware counts for a published message, for messages handed to aiokafka
    without FastStream's publish path (`fusion.kafka.broker.Outbox`)."""

    def __init__(self, manager: MetricsManager) -> None:
        self._manager = manager

    @contextmanager
    def publishing(self, topic: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception as error:
            self._manager.add_published_message_exception("kafka", topic, type(error).__name__)
            self._manager.add_published_message("kafka", topic, PublishingStatus.error)
            raise
        finally:
            self._manager.observe_published_message_duration(time.perf_counter() - started, "kafka", topic)
        self._manager.add_published_message("kafka", topic, PublishingStatus.success)


class KafkaMessageMetrics(KafkaPrometheusMiddleware):
    """FastStream's Kafka Prometheus middleware on the label-caching manager, with no custom labels."""

    def __init__(self, *, registry: CollectorRegistry, app_name: str) -> None:
        super().__init__(registry=registry, app_name=app_name)
        self._metrics_manager = LabelCachingMetricsManager(self._metrics_container, app_name=app_name)

    def received(self, topic: str) -> ReceivedMetrics:
        """The counts of batches consumed from `topic`, kept in this middleware's metrics."""
        return ReceivedMetrics(self._metrics_manager, topic)

    def published(self) -> PublishedMetrics:
        """The counts of messages published, kept in this middleware's metrics."""
        return PublishedMetrics(self._metrics_manager)

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> BasePrometheusMiddleware[Any, Any]:
        # FastStream's own makes it through a subscripted generic, `BasePrometheusMiddleware[...](...)`,
        # whose typing machinery cost more than the metrics themselves on every message.
        return BasePrometheusMiddleware(
            msg,
            metrics_manager=self._metrics_manager,
            settings_provider_factory=self._settings_provider_factory,
            context=context,
            custom_labels={},
        )


def message_metrics_of(broker: Any) -> KafkaMessageMetrics | None:
    """The `KafkaMessageMetrics` among a FastStream broker's middlewares, if it has them."""
    return next((m for m in broker.middlewares if isinstance(m, KafkaMessageMetrics)), None)
