"""Bad input on every consumed topic goes to the dead-letter topic; the services go on."""

import asyncio
import base64
import contextlib
from typing import Any

import pytest
from fusion.client import FusionClient
from fusion.kafka.broker import build_broker
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import ChatMessage, DeadLetter, FusionRequest, topics
from pydantic import TypeAdapter

pytestmark = [pytest.mark.kafka]

_LETTER = TypeAdapter(DeadLetter)

BAD_MESSAGES = {
    "not json": b"\x00\xffnot json at all",
    "schema": b'{"schema_version": 1, "request_id": "bad-schema", "messages": []}',
}


async def test_bad_messages_are_dead_lettered_and_the_services_go_on(
    settings: Settings, client: FusionClient
) -> None:
    letters: list[DeadLetter] = []

    def collect(record: Any) -> None:
        with contextlib.suppress(DecodeError):
            letters.append(decode(_LETTER, record.value))

    tap = TopicTap(settings.kafka_bootstrap, topics.DLQ, collect)
    await tap.start()
    broker = build_broker(settings, "bad-input")
    await broker.start()
    try:
        sent: list[tuple[str, str, bytes]] = []
        for topic in (topics.REQUESTS, topics.TASKS, topics.ANSWERS):
            for kind, raw in BAD_MESSAGES.items():
                key = f"{topic}:{kind}"
                await broker.publish(raw, topic=topic, key=key.encode())
                sent.append((topic, key, raw))
        for _ in range(100):
            if len(letters) >= len(sent):
                break
            await asyncio.sleep(0.1)

        result = await client.fuse(
            FusionRequest(messages=[ChatMessage(role="user", content="still there?")], preset="standin")
        )
    finally:
        await broker.stop()
        await tap.stop()

    by_key = {letter.key: letter for letter in letters}
    for topic, key, raw in sent:
        letter = by_key[key]
        assert letter.topic == topic
        assert base64.b64decode(letter.raw_base64) == raw
        if key.endswith("not json"):
            assert letter.error.startswith("not valid JSON")
        else:
            assert letter.error.startswith("schema:")
    assert {letter.service for letter in letters} == {"dispatcher", "panel-worker", "judge"}
    print(
        f"\ndead letters: {len(letters)} for {len(sent)} bad messages; then a request fused: {result.status}"
    )
    assert result.status == "complete"


async def test_an_invalid_request_with_an_id_also_gets_a_rejected_result(
    settings: Settings, client: FusionClient
) -> None:
    future = client.results.expect("bad-request-7")
    broker = build_broker(settings, "bad-request")
    await broker.start()
    try:
        raw = b'{"schema_version": 1, "request_id": "bad-request-7", "messages": [], "panel": []}'
        await broker.publish(raw, topic=topics.REQUESTS, key=b"bad-request-7")
        result = await asyncio.wait_for(future, timeout=10)
    finally:
        await broker.stop()

    assert result.status == "rejected"
    assert result.error
    assert "messages" in result.error
