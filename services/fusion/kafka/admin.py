"""Topic creation: explicit partition counts, idempotent."""

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from fusion_contracts import topics

from fusion.settings import Settings


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int


def topic_plan(settings: Settings) -> list[TopicPlan]:
    return [
        TopicPlan(topics.REQUESTS, settings.partitions_requests),
        TopicPlan(topics.TASKS, settings.partitions_tasks),
        TopicPlan(topics.ANSWERS, settings.partitions_answers),
        TopicPlan(topics.RESULTS, settings.partitions_results),
        TopicPlan(topics.DLQ, settings.partitions_dlq),
    ]


async def create_topics(
    settings: Settings, extra: list[TopicPlan] | None = None, replication: int = 1
) -> dict[str, str]:
    """Creates what is missing; returns each topic's name with 'created' or 'exists'."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        outcome: dict[str, str] = {}
        for plan in [*topic_plan(settings), *(extra or [])]:
            if plan.name in existing:
                outcome[plan.name] = "exists"
                continue
            try:
                await admin.create_topics([NewTopic(plan.name, plan.partitions, replication)])
                outcome[plan.name] = "created"
            except TopicAlreadyExistsError:
                outcome[plan.name] = "exists"
        return outcome
    finally:
        await admin.close()
