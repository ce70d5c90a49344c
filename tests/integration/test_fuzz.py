"""A fuzz pass over every consumed topic: every bad message lands in the dead-letter topic with its
reason, no service crashes, and every service still answers afterwards."""

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from fusion.client import FusionClient
from fusion.kafka.broker import build_broker
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import ChatMessage, DeadLetter, FusionRequest, topics
from pydantic import TypeAdapter

from fusion_testing.stack import HEALTH_PORTS, Services
from tests.support.fuzz import KINDS, bad_messages

pytestmark = [pytest.mark.kafka]

PER_KIND = 4
CONSUMED = {topics.REQUESTS: "dispatcher", topics.TASKS: "panel-worker", topics.ANSWERS: "judge"}
_LETTER = TypeAdapter(DeadLetter)


async def test_every_bad_message_is_dead_lettered_and_every_service_still_answers(
    settings: Settings, client: FusionClient, services: Services
) -> None:
    letters: list[DeadLetter] = []

    def collect(record: Any) -> None:
        try:
            letters.append(decode(_LETTER, record.value))
        except DecodeError:
            pytest.fail("a dead letter that is not a DeadLetter")

    tap = TopicTap(settings.kafka_bootstrap, topics.DLQ, collect)
    await tap.start()
    broker = build_broker(settings, "fuzz")
    await broker.start()
    sent: dict[str, tuple[str, str]] = {}
    try:
        for topic in CONSUMED:
            for number, (kind, raw) in enumerate(bad_messages(topic, PER_KIND)):
                key = f"fuzz/{topic}/{number}"
                sent[key] = (topic, kind)
                await broker.publish(raw, topic=topic, key=key.encode())
        for _ in range(300):
            if len({letter.key for letter in letters} & sent.keys()) == len(sent):
                break
            await asyncio.sleep(0.1)
    finally:
        await broker.stop()
        await tap.stop()

    by_key = {letter.key: letter for letter in letters if letter.key in sent}
    counts = Counter((sent[key][0], sent[key][1]) for key in by_key)
    print(f"\nfuzz: {len(sent)} bad messages sent, {len(by_key)} dead-lettered")
    for topic, service in CONSUMED.items():
        row = ", ".join(f"{kind}: {counts[(topic, kind)]}/{PER_KIND}" for kind in KINDS)
        print(f"  {topic} ({service}): {row}")
    assert by_key.keys() == sent.keys()
    for key, letter in by_key.items():
        topic, _ = sent[key]
        assert letter.topic == topic
        assert letter.service == CONSUMED[topic]
        assert letter.error
        assert letter.error.startswith(("not valid JSON", "schema:", "empty message"))
        assert letter.raw_size > 0

    for name, process in services.processes.items():
        assert process.poll() is None, f"{name} exited"
    async with httpx.AsyncClient() as http:
        for port in HEALTH_PORTS.values():
            assert (await http.get(f"http://127.0.0.1:{port}/health")).is_success
    result = await client.fuse(
        FusionRequest(messages=[ChatMessage(role="user", content="after the fuzz")], preset="standin")
    )
    assert result.status == "complete"
