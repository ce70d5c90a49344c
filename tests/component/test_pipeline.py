"""Dispatcher, panel worker and judge together on one in-memory broker, with fake models."""

import fusion.dispatcher.app
import fusion.judge.app
import fusion.panel_worker.app
from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.catalog import load_catalog
from fusion.kafka.codec import encode
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusionRequest, topics

from tests.component.support import RESULT_ADAPTER, Capture, FakeModels, eventually


async def test_a_request_becomes_one_fused_result() -> None:
    broker = KafkaBroker()
    models = FakeModels()
    settings = Settings(instance_id="t")
    fusion.dispatcher.app.register(broker, load_catalog())
    fusion.panel_worker.app.register(broker, models, settings)
    fusion.judge.app.register(broker, models, settings)
    capture = Capture(broker, topics.RESULTS, topics.DLQ)
    request = FusionRequest(
        request_id="req-e2e",
        preset="local",
        strategy="synthesize",  # the two judge calls, whatever the preset's default
        messages=[ChatMessage(role="user", content="Why is the sky blue?")],
    )
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(request), topic=topics.REQUESTS, key=b"req-e2e")
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.request_id == "req-e2e"
    assert result.status == "complete"
    assert result.release == "all"
    assert result.answer_source == "judge"
    assert [member.model for member in result.members] == ["smollm2-135m", "smollm2-135m", "gemma3-270m"]
    assert all(member.status == "ok" for member in result.members)
    assert result.usage.total.input_tokens == 10 * 5  # three members and two judge calls
    assert capture.records[topics.DLQ] == []
    assert len(models.calls) == 5
