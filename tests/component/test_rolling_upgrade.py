"""A rolling upgrade on FastStream's in-memory Kafka: each service, at schema 1.0, reads what a writer of
1.1 sends (unknown optional fields, at any depth, ignored) and dead-letters a message of major 2 with
the reason. The same, with the services and the newer writer as separate processes on a real broker,
is tests/integration/test_rolling_upgrade.py."""

import json
from datetime import UTC, datetime, timedelta

from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.catalog import load_catalog
from fusion.dispatcher.app import register as register_dispatcher
from fusion.judge.app import register as register_judge
from fusion.kafka.codec import encode
from fusion.panel_worker.app import register as register_worker
from fusion.settings import Settings
from fusion_contracts import ChatMessage, ModelSpec, PanelAnswer, PanelPlan, PanelRejection, ReplyTo, topics

from tests.component.support import (
    ANSWERS_ADAPTER,
    DEAD_LETTER_ADAPTER,
    RESULT_ADAPTER,
    Capture,
    FakeModels,
    eventually,
)
from tests.support.contracts_v1_1 import (
    FusionRequestV11,
    ModelSpecV11,
    PanelAnswerV11,
    PanelPlanV11,
    PanelTaskV11,
    PolicyV11,
    ReplyToV11,
    UsageV11,
    v2,
)

CUSTOM = "custom.replies"
UNSUPPORTED = "unsupported schema version 2; this reader speaks 1"
QUESTION = [ChatMessage(role="user", content="Why is the sky blue?")]


def a_newer_request(request_id: str) -> FusionRequestV11:
    return FusionRequestV11(
        request_id=request_id,
        messages=QUESTION,
        preset="local",
        judge=ModelSpecV11(model="smollm2-135m", provider_hint="eu"),
        policy=PolicyV11(deadline_s=60, priority=9),
        reply_to=ReplyToV11(topic=CUSTOM, compression="zstd"),
        tags=["upgrade"],
    )


async def test_the_dispatcher_plans_a_newer_minor_and_refuses_the_next_major() -> None:
    broker = KafkaBroker()
    dispatcher = register_dispatcher(broker, load_catalog())
    capture = Capture(broker, topics.ANSWERS, topics.TASKS, topics.DLQ)
    invalid_newer = {  # invalid (no messages), from a newer minor: its reply_to still counts
        "request_id": "req-invalid-11",
        "messages": [],
        "reply_to": {"topic": CUSTOM, "compression": "zstd"},
    }
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_newer_request("req-11")), topic=topics.REQUESTS, key=b"req-11")
        await test_broker.publish(
            json.dumps(v2(a_newer_request("req-2"))).encode(), topic=topics.REQUESTS, key=b"req-2"
        )
        await test_broker.publish(json.dumps(invalid_newer).encode(), topic=topics.REQUESTS, key=b"req-i")
        assert await dispatcher.pool.drain(timeout_s=5) == 0

    plan, *rejections = capture.decoded(topics.ANSWERS, ANSWERS_ADAPTER)
    assert isinstance(plan, PanelPlan)
    assert plan.request_id == "req-11"
    assert plan.judge == ModelSpec(model="smollm2-135m")
    assert plan.reply_to == ReplyTo(topic=CUSTOM)
    assert len(capture.records[topics.TASKS]) == 3

    by_id = {
        rejection.request_id: rejection for rejection in rejections if isinstance(rejection, PanelRejection)
    }
    assert set(by_id) == {"req-2", "req-invalid-11"}
    assert len(rejections) == 2
    assert by_id["req-2"].error == f"invalid request: {UNSUPPORTED}"
    assert by_id["req-invalid-11"].reply_to == ReplyTo(topic=CUSTOM)

    letters = capture.decoded(topics.DLQ, DEAD_LETTER_ADAPTER)
    assert [letter.key for letter in letters] == ["req-2", "req-i"]
    assert letters[0].error == UNSUPPORTED


async def test_the_panel_worker_answers_a_newer_minor_task_and_refuses_the_next_major() -> None:
    models = FakeModels()
    broker = KafkaBroker()
    register_worker(broker, models, Settings(instance_id="t"))
    capture = Capture(broker, topics.ANSWERS, topics.DLQ)
    now = datetime.now(UTC)
    task = PanelTaskV11(
        request_id="req-11",
        member_index=1,
        member=ModelSpecV11(model="member-a", temperature=0.3, provider_hint="eu"),
        messages=QUESTION,
        deadline_at=now + timedelta(seconds=30),
        dispatched_at=now,
        attempt=2,
    )
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(task), topic=topics.TASKS, key=b"req-11/1")
        await test_broker.publish(json.dumps(v2(task)).encode(), topic=topics.TASKS, key=b"req-2/1")
        await eventually(lambda: len(capture.records[topics.ANSWERS]) == 1)
        await eventually(lambda: len(capture.records[topics.DLQ]) == 1)

    [answer] = capture.decoded(topics.ANSWERS, ANSWERS_ADAPTER)
    assert isinstance(answer, PanelAnswer)
    assert (answer.request_id, answer.member_index, answer.status) == ("req-11", 1, "ok")
    [(spec, _, _)] = models.calls
    assert spec == ModelSpec(model="member-a", temperature=0.3)
    [letter] = capture.decoded(topics.DLQ, DEAD_LETTER_ADAPTER)
    assert (letter.service, letter.key, letter.error) == ("panel-worker", "req-2/1", UNSUPPORTED)


async def test_the_judge_fuses_a_newer_minor_plan_and_answers_and_refuses_the_next_major() -> None:
    broker = KafkaBroker()
    register_judge(broker, FakeModels(), Settings(instance_id="t", judge_concurrency=4))
    capture = Capture(broker, topics.RESULTS, topics.DLQ, CUSTOM)
    now = datetime.now(UTC)
    plan = PanelPlanV11(
        request_id="req-11",
        messages=QUESTION,
        members=[ModelSpec(model="member-0")],
        judge=ModelSpecV11(model="judge-model", provider_hint="eu"),
        quorum=1,
        grace_s=0.0,
        panel_deadline_at=now + timedelta(seconds=60),
        deadline_at=now + timedelta(seconds=120),
        submitted_at=now,
        dispatched_at=now,
        reply_to=ReplyToV11(topic=CUSTOM, compression="zstd"),
        priority=9,
    )
    answer = PanelAnswerV11(
        request_id="req-11",
        member_index=0,
        model="member-0",
        status="ok",
        text="Rayleigh scattering.",
        usage=UsageV11(input_tokens=1, output_tokens=2, cached_tokens=1),
        latency_ms=5.0,
        finished_at=now,
        reasoning="short",
    )
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(json.dumps(v2(plan)).encode(), topic=topics.ANSWERS, key=b"req-2")
        await test_broker.publish(encode(plan), topic=topics.ANSWERS, key=b"req-11")
        await test_broker.publish(encode(answer), topic=topics.ANSWERS, key=b"req-11")
        await eventually(lambda: len(capture.records[CUSTOM]) == 1)

    [result] = capture.decoded(CUSTOM, RESULT_ADAPTER)
    assert (result.request_id, result.status, result.answered) == ("req-11", "complete", 1)
    assert capture.records[topics.RESULTS] == []
    [letter] = capture.decoded(topics.DLQ, DEAD_LETTER_ADAPTER)
    assert (letter.service, letter.key, letter.error) == ("judge", "req-2", UNSUPPORTED)
