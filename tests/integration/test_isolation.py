"""Nothing one request carries stops another: results whose `reply_to` cannot take them go to
fusion.results with a dead letter saying why, the results behind them keep flowing, and the judge
stays healthy (it is not stuck)."""

import asyncio
import contextlib
import urllib.request
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from fusion.client import FusionClient
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import ChatMessage, DeadLetter, FusionRequest, Policy, ReplyTo, topics
from pydantic import TypeAdapter

from fusion_testing.stack import HEALTH_PORTS, Services

pytestmark = [pytest.mark.kafka]

_LETTER = TypeAdapter(DeadLetter)
TINY = "fusion.replies.tiny"
"""An allowed reply topic that exists but refuses any result (its largest message: 200 bytes)."""

BAD_REPLY_TO = {
    "isolation-partition-99": ReplyTo(topic=topics.RESULTS, partition=99),
    "isolation-no-such-topic": ReplyTo(topic="no.such.topic"),
    "isolation-missing-reply-topic": ReplyTo(topic="fusion.replies.nobody"),
    "isolation-refusing-topic": ReplyTo(topic=TINY),
}
EXPECTED_REASON = {
    "isolation-partition-99": "partition 99",
    "isolation-no-such-topic": "not allowed",
    "isolation-missing-reply-topic": "does not exist",
    "isolation-refusing-topic": "MessageSizeTooLarge",
}


def request(request_id: str | None = None, reply_to: ReplyTo | None = None) -> FusionRequest:
    fields: dict[str, Any] = {"request_id": request_id} if request_id else {}
    return FusionRequest(
        messages=[ChatMessage(role="user", content="isolated?")],
        preset="standin",
        policy=Policy(deadline_s=30),
        reply_to=reply_to,
        **fields,
    )


def judge_health() -> int:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{HEALTH_PORTS['judge']}/health", timeout=10
        ) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


async def create_refusing_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(TINY, 1, 1, topic_configs={"max.message.bytes": "200"})])
    finally:
        await admin.close()


async def test_bad_reply_tos_go_to_fusion_results_with_a_dead_letter_and_stop_nobody(
    settings: Settings, client: FusionClient, services: Services
) -> None:
    await create_refusing_topic(settings.kafka_bootstrap)
    letters: dict[str, DeadLetter] = {}

    def collect(record: Any) -> None:
        with contextlib.suppress(DecodeError):
            letter = decode(_LETTER, record.value)
            if letter.key in BAD_REPLY_TO:
                letters[letter.key] = letter

    tap = TopicTap(settings.kafka_bootstrap, topics.DLQ, collect)
    await tap.start()
    try:
        bad = [await client.submit(request(rid, reply_to)) for rid, reply_to in BAD_REPLY_TO.items()]
        good = [await client.submit(request()) for _ in range(10)]
        healthy_meanwhile = judge_health()
        done = await asyncio.wait_for(asyncio.gather(*bad, *good), timeout=60)
        for _ in range(50):
            if len(letters) == len(BAD_REPLY_TO):
                break
            await asyncio.sleep(0.1)
    finally:
        await tap.stop()

    statuses = [result.status for result in done]
    print(f"\n{len(BAD_REPLY_TO)} bad reply_tos, then 10 good requests: {statuses}")
    assert all(status == "complete" for status in statuses)
    assert {result.request_id for result in done[: len(bad)]} == set(BAD_REPLY_TO)
    for request_id, reason in EXPECTED_REASON.items():
        letter = letters[request_id]
        assert letter.service == "judge"
        assert reason in letter.error, letter.error
        assert "fusion.results" in letter.error
    assert healthy_meanwhile == 204
    assert judge_health() == 204
