"""Topic creation: explicit partition counts, idempotent."""

from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from fusion_contracts import limits, topics

from fusion.kafka.security import client_options
from fusion.settings import Settings


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


BROKER_TIMESTAMPS = {"message.timestamp.type": "LogAppendTime"}
MARKER_RETENTION = {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)}


def topic_plan(settings: Settings) -> list[TopicPlan]:
    return [
        TopicPlan(topics.REQUESTS, settings.partitions_requests),
        TopicPlan(topics.TASKS, settings.partitions_tasks),
        TopicPlan(topics.ANSWERS, settings.partitions_answers, BROKER_TIMESTAMPS),
        TopicPlan(topics.RESULTS, settings.partitions_results),
        # One marker partition per answers partition. A judge taking a partition over reads only the
        # markers written since its oldest uncommitted answer, by time: so both topics are stamped by
        # the brokers, and the markers are kept for a day, far longer than any request stays open.
        TopicPlan(topics.RELEASED, settings.partitions_answers, {**BROKER_TIMESTAMPS, **MARKER_RETENTION}),
        TopicPlan(topics.DLQ, settings.partitions_dlq),
    ]


_TOPIC_ALREADY_EXISTS = 36


class TopicError(RuntimeError):
    """The broker refused to create a topic."""


async def create_topics(settings: Settings, replication: int = 1) -> dict[str, str]:
    """Creates Fusion's topics that are missing; returns each name with 'created' or 'exists'."""
    return await _create(settings, topic_plan(settings), replication)


async def create_topic(settings: Settings, plan: TopicPlan, replication: int = 1) -> str:
    return (await _create(settings, [plan], replication))[plan.name]


async def _create(settings: Settings, plans: list[TopicPlan], replication: int) -> dict[str, str]:
    admin = _admin(settings)
    await admin.start()
    try:
        config = {"max.message.bytes": str(limits.MAX_MESSAGE_BYTES)}
        response = await admin.create_topics(
            [NewTopic(p.name, p.partitions, replication, topic_configs={**config, **p.config}) for p in plans]
        )
    finally:
        await admin.close()
    outcome: dict[str, str] = {}
    for name, code, *rest in response.topic_errors:
        if code == 0:
            outcome[name] = "created"
        elif code == _TOPIC_ALREADY_EXISTS:
            outcome[name] = "exists"
        else:
            message = rest[0] if rest and rest[0] else f"error code {code}"
            raise TopicError(f"cannot create topic {name}: {message}")
    return {plan.name: outcome[plan.name] for plan in plans}


class ConfigError(RuntimeError):
    """The broker did not describe its configuration."""


async def default_replication(settings: Settings) -> int:
    """The replication factor the cluster gives a topic that names none (its brokers'
    `default.replication.factor`), at most the number of brokers up now: a topic cannot have more
    replicas than that when it is created."""
    admin = _admin(settings)
    await admin.start()
    try:
        brokers = [broker["node_id"] for broker in (await admin.describe_cluster())["brokers"]]
        resource = ConfigResource(ConfigResourceType.BROKER, str(brokers[0]), {_DEFAULT_REPLICATION: None})
        (response,) = await admin.describe_configs([resource])
    finally:
        await admin.close()
    (described,) = response.to_object()["resources"]
    if described["error_code"] != 0:
        raise ConfigError(f"cannot describe broker {brokers[0]}: {described['error_message']}")
    (entry,) = (e for e in described["config_entries"] if e["config_names"] == _DEFAULT_REPLICATION)
    return min(int(entry["config_value"]), len(brokers))


_DEFAULT_REPLICATION = "default.replication.factor"


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15_000, **client_options(settings)
    )
