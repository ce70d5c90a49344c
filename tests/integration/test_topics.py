"""`fusion topics create` on the real broker: explicit partition counts, idempotent."""

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fusion.kafka.admin import create_topics, topic_plan
from fusion.settings import Settings

pytestmark = [pytest.mark.kafka]


async def test_topics_have_their_partition_counts_and_creating_again_changes_nothing(
    settings: Settings, topics: None
) -> None:
    again = await create_topics(settings)

    assert again == {plan.name: "exists" for plan in topic_plan(settings)}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([plan.name for plan in topic_plan(settings)])
    finally:
        await admin.close()
    partitions = {topic["topic"]: len(topic["partitions"]) for topic in described}
    assert partitions == {plan.name: plan.partitions for plan in topic_plan(settings)}
