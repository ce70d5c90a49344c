"""A tap keeps reading whatever a fetch or a record does: the gateway's replies depend on it."""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from fusion.kafka import tap
from fusion.kafka.tap import TopicTap


class FlakyConsumer:
    """Fails its first fetch, then hands over two records, then nothing."""

    def __init__(self) -> None:
        self.fetches = 0

    async def getmany(self, timeout_ms: int) -> dict[Any, list[Any]]:
        self.fetches += 1
        if self.fetches == 1:
            raise KafkaConnectionError("broker away")
        if self.fetches == 2:
            return {"tp": [SimpleNamespace(offset=1, value=b"bad"), SimpleNamespace(offset=2, value=b"good")]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}


async def test_a_failed_fetch_and_a_record_its_callback_refuses_stop_nothing(monkeypatch: Any) -> None:
    monkeypatch.setattr(tap, "RETRY_S", 0.01)
    handled: list[int] = []

    def on_record(record: Any) -> None:
        if record.value == b"bad":
            raise ValueError("cannot take it")
        handled.append(record.offset)

    reader = TopicTap("unused:9092", "t", on_record)
    task = asyncio.create_task(reader._run(cast(AIOKafkaConsumer, FlakyConsumer())))
    await asyncio.sleep(0.3)
    assert handled == [2]
    assert not task.done()
    task.cancel()
