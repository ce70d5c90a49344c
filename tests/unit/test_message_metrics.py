"""The label-caching metrics manager records exactly what FastStream's own manager records."""

from faststream.prometheus.container import MetricsContainer
from faststream.prometheus.manager import MetricsManager
from faststream.prometheus.types import ProcessingStatus, PublishingStatus
from fusion.observability.message_metrics import LabelCachingMetricsManager
from prometheus_client import CollectorRegistry, generate_latest


def record_traffic(manager: MetricsManager) -> None:
    for handler, size, seconds in (
        ("fusion.tasks", 300, 0.01),
        ("fusion.tasks", 900, 0.2),
        ("fusion.x", 20, 3.0),
    ):
        manager.add_received_message(broker="kafka", handler=handler, amount=1)
        manager.observe_received_messages_size(broker="kafka", handler=handler, size=size)
        manager.add_received_message_in_process(broker="kafka", handler=handler, amount=1)
        manager.observe_received_processed_message_duration(duration=seconds, broker="kafka", handler=handler)
        manager.remove_received_message_in_process(broker="kafka", handler=handler, amount=1)
        manager.add_received_processed_message(
            broker="kafka", handler=handler, status=ProcessingStatus.acked, amount=1
        )
    manager.add_received_message_in_process(broker="kafka", handler="fusion.tasks", amount=2)
    manager.add_received_processed_message(
        broker="kafka", handler="fusion.tasks", status=ProcessingStatus.error, amount=1
    )
    manager.add_received_processed_message_exception(
        broker="kafka", handler="fusion.tasks", exception_type="ValueError"
    )
    for destination, status in (
        ("fusion.answers", PublishingStatus.success),
        ("fusion.dlq", PublishingStatus.error),
    ):
        manager.add_published_message(broker="kafka", destination=destination, status=status, amount=3)
        manager.observe_published_message_duration(duration=0.004, broker="kafka", destination=destination)
    manager.add_published_message_exception(
        broker="kafka", destination="fusion.dlq", exception_type="KafkaError"
    )


def exposition(manager_class: type[MetricsManager]) -> list[bytes]:
    """What Prometheus would scrape, line by line, less the creation timestamps."""
    registry = CollectorRegistry()
    record_traffic(manager_class(MetricsContainer(registry, custom_label_names=()), app_name="fusion-judge"))
    return sorted(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


def test_the_cached_manager_exposes_what_faststreams_manager_exposes() -> None:
    cached = exposition(LabelCachingMetricsManager)
    assert any(b'status="acked"' in line for line in cached)
    assert any(b'exception_type="KafkaError"' in line for line in cached)
    assert cached == exposition(MetricsManager)
