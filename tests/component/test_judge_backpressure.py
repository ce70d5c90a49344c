"""The judge stops consuming while it holds its limit of open requests, and resumes as they release."""

import asyncio
import time

from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.judge.app import register
from fusion.kafka.codec import encode
from fusion.observability.metrics import FusionMetrics
from fusion.settings import Settings
from fusion_contracts import FusedResult, topics
from pydantic import TypeAdapter

from tests.component.support import Capture, FakeModels, a_plan, eventually, in_flight


async def test_a_full_judge_waits_for_room_before_reading_more() -> None:
    broker = KafkaBroker()
    metrics = FusionMetrics()
    register(broker, FakeModels(), Settings(instance_id="t", judge_max_open=1), metrics)
    capture = Capture(broker, topics.RESULTS)

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            encode(a_plan("first", panel_deadline_in_s=0.5)), topics.ANSWERS, key=b"first"
        )
        started = time.monotonic()
        # The in-memory broker hands the message to the handler at once: it waits for room first.
        await test_broker.publish(
            encode(a_plan("second", panel_deadline_in_s=30)), topics.ANSWERS, key=b"second"
        )
        waited = time.monotonic() - started
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1, timeout_s=5)
        await asyncio.sleep(0.1)

    assert waited >= 0.3  # until the first request was released at its panel deadline
    assert in_flight(metrics) == 1  # the second, now held
    (result,) = capture.decoded(topics.RESULTS, TypeAdapter(FusedResult))
    assert result.request_id == "first"
    assert result.release == "deadline"
