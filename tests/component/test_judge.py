"""The judge on FastStream's in-memory Kafka: plans and answers in, one fused result out."""

import asyncio

from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.judge.app import register
from fusion.kafka.codec import encode
from fusion.observability.metrics import FusionMetrics
from fusion.settings import Settings
from fusion_contracts import (
    AnswerChunk,
    FusedResult,
    FusionProgress,
    GatewayPresence,
    ReplyMessage,
    ReplyTo,
    topics,
)
from pydantic import TypeAdapter

from tests.component.support import (
    DEAD_LETTER_ADAPTER,
    FINAL_ANSWER,
    RESULT_ADAPTER,
    Capture,
    FakeModels,
    a_plan,
    an_answer,
    eventually,
    in_flight,
)

CUSTOM = "custom.replies"


def judge_broker(models: FakeModels | None = None) -> tuple[KafkaBroker, Capture, FusionMetrics, FakeModels]:
    models = models or FakeModels()
    broker = KafkaBroker()
    metrics = FusionMetrics()
    register(broker, models, Settings(instance_id="t", judge_concurrency=4), metrics)
    capture = Capture(broker, topics.RESULTS, topics.DLQ, CUSTOM)
    return broker, capture, metrics, models


async def test_plan_then_every_answer_gives_one_complete_result() -> None:
    broker, capture, metrics, models = judge_broker()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_plan("req-1", members=2)), topic=topics.ANSWERS, key=b"req-1")
        assert in_flight(metrics) == 1
        for index in range(2):
            await test_broker.publish(encode(an_answer("req-1", index)), topic=topics.ANSWERS, key=b"req-1")
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)
        await eventually(lambda: in_flight(metrics) == 0)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.request_id == "req-1"
    assert result.status == "complete"
    assert result.release == "all"
    assert result.answer == FINAL_ANSWER
    assert result.answer_source == "judge"
    assert result.analysis is not None
    assert result.analysis.blind_spots == ["sunsets"]
    assert result.answered == 2
    assert capture.keys(topics.RESULTS) == [b"req-1"]
    assert [call[0].model for call in models.calls] == ["judge-model", "judge-model"]


async def test_answers_before_the_plan_are_kept_until_it_arrives() -> None:
    broker, capture, _, _ = judge_broker()
    async with TestKafkaBroker(broker) as test_broker:
        for index in range(2):
            await test_broker.publish(encode(an_answer("req-early", index)), topic=topics.ANSWERS)
        await asyncio.sleep(0.05)
        assert capture.records[topics.RESULTS] == []
        await test_broker.publish(encode(a_plan("req-early", members=2)), topic=topics.ANSWERS)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)
    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.status == "complete"


async def test_result_goes_to_the_plans_reply_topic() -> None:
    broker, capture, _, _ = judge_broker()
    plan = a_plan("req-2", members=1, reply_to=ReplyTo(topic=CUSTOM))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(plan), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-2", 0)), topic=topics.ANSWERS)
        await eventually(lambda: len(capture.records[CUSTOM]) == 1)
        await asyncio.sleep(0.05)
    [result] = capture.decoded(CUSTOM, RESULT_ADAPTER)
    assert result.request_id == "req-2"
    assert result.status == "complete"
    assert capture.records[topics.RESULTS] == []


async def test_bad_payloads_are_dead_lettered_and_the_judge_goes_on() -> None:
    broker, capture, metrics, _ = judge_broker()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"not json", topic=topics.ANSWERS, key=b"x")
        await test_broker.publish(b'{"kind": "vote", "request_id": "x"}', topic=topics.ANSWERS, key=b"x")
        await test_broker.publish(encode(a_plan("req-3", members=1)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-3", 0)), topic=topics.ANSWERS)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)

    letters = capture.decoded(topics.DLQ, DEAD_LETTER_ADAPTER)
    assert [letter.service for letter in letters] == ["judge", "judge"]
    assert letters[0].error.startswith("not valid JSON")
    assert letters[1].error.startswith("schema:")
    assert all(letter.topic == topics.ANSWERS for letter in letters)
    await eventually(lambda: in_flight(metrics) == 0)


async def test_duplicate_and_late_answers_make_no_second_result() -> None:
    broker, capture, _, models = judge_broker()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_plan("req-4", members=2)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-4", 0, text="first")), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-4", 0, text="again")), topic=topics.ANSWERS)
        await asyncio.sleep(0.05)
        assert capture.records[topics.RESULTS] == []  # a duplicate of member 0 does not complete the panel
        await test_broker.publish(encode(an_answer("req-4", 1)), topic=topics.ANSWERS)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)
        await test_broker.publish(encode(an_answer("req-4", 1)), topic=topics.ANSWERS)
        await test_broker.publish(encode(a_plan("req-4", members=2)), topic=topics.ANSWERS)
        await asyncio.sleep(0.1)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.members[0].text == "first"
    assert len(models.calls) == 2  # one analysis, one final answer


async def test_quorum_plus_grace_releases_without_the_straggler() -> None:
    broker, capture, metrics, _ = judge_broker()
    plan = a_plan("req-5", members=3, quorum=2, grace_s=0.2)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(plan), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-5", 0)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-5", 2)), topic=topics.ANSWERS)
        await asyncio.sleep(0.05)
        assert capture.records[topics.RESULTS] == []  # still in the grace period
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1, timeout_s=3.0)
        await eventually(lambda: in_flight(metrics) == 0)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.release == "quorum"
    assert result.status == "partial"
    assert [member.status for member in result.members] == ["ok", "timeout", "ok"]
    assert result.answer_source == "judge"


async def test_panel_deadline_releases_a_silent_panel_as_failed() -> None:
    broker, capture, _, models = judge_broker()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            encode(a_plan("req-6", members=2, panel_deadline_in_s=0.2)), topic=topics.ANSWERS
        )
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1, timeout_s=3.0)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.release == "deadline"
    assert result.status == "failed"
    assert result.answer is None
    assert result.error is not None
    assert "member 0 (member-0): timeout" in result.error
    assert models.calls == []


async def test_a_crashing_fusion_still_publishes_a_failed_result() -> None:
    broker, capture, metrics, _ = judge_broker(FakeModels(crash={"judge-model"}))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_plan("req-crash", members=2)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-crash", 0)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-crash", 1)), topic=topics.ANSWERS)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)
        await eventually(lambda: in_flight(metrics) == 0)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.status == "failed"
    assert result.error == "internal error in the judge: RuntimeError"
    assert [member.status for member in result.members] == ["ok", "ok"]
    assert result.release == "all"


async def test_the_judge_failing_still_publishes_the_best_member() -> None:
    broker, capture, _, _ = judge_broker(FakeModels(fail={"judge-model"}))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_plan("req-7", members=2)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-7", 0)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-7", 1, "error")), topic=topics.ANSWERS)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.status == "partial"
    assert result.answer_source == "best_member"
    assert result.answer == "member 0: Rayleigh scattering."
    assert result.judge is not None
    assert result.judge.status == "error"


REPLIES_ADAPTER: TypeAdapter[FusedResult | AnswerChunk | FusionProgress | GatewayPresence] = TypeAdapter(
    ReplyMessage
)


async def test_progress_events_go_ahead_of_the_result_in_order() -> None:
    broker, capture, _, _ = judge_broker()
    plan = a_plan("req-p", members=3, reply_to=ReplyTo(topic=CUSTOM)).model_copy(update={"progress": True})
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(an_answer("req-p", 1)), topic=topics.ANSWERS)  # before the plan
        await test_broker.publish(encode(plan), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-p", 0)), topic=topics.ANSWERS)
        await test_broker.publish(encode(an_answer("req-p", 0)), topic=topics.ANSWERS)  # a repeat
        await test_broker.publish(encode(an_answer("req-p", 2, status="error")), topic=topics.ANSWERS)
        await eventually(lambda: any(b'"kind":"result"' in r.body for r in capture.records[CUSTOM]))

    messages = capture.decoded(CUSTOM, REPLIES_ADAPTER)
    told = [(m.event, m.member_index) for m in messages if isinstance(m, FusionProgress)]
    assert told == [
        ("panel.added", 0),
        ("panel.added", 1),
        ("panel.added", 2),
        ("panel.completed", 1),  # the answer that came before the plan
        ("panel.completed", 0),
        ("panel.failed", 2),
        ("analysis.in_progress", None),
        ("analysis.completed", None),
    ]
    assert [m.kind for m in messages][-1] == "result"  # every event went ahead of it
    completed = next(m for m in messages if isinstance(m, FusionProgress) and m.event == "panel.completed")
    assert completed.text == "member 1: Rayleigh scattering."
    assert completed.model == "member-1"
    analysed = next(m for m in messages if isinstance(m, FusionProgress) and m.event == "analysis.completed")
    assert analysed.analysis is not None
    assert analysed.analysis.blind_spots == ["sunsets"]


async def test_no_progress_events_unless_asked() -> None:
    broker, capture, _, _ = judge_broker()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            encode(a_plan("req-q", members=2, reply_to=ReplyTo(topic=CUSTOM))), topic=topics.ANSWERS
        )
        for index in range(2):
            await test_broker.publish(encode(an_answer("req-q", index)), topic=topics.ANSWERS)
        await eventually(lambda: len(capture.records[CUSTOM]) == 1)
        await asyncio.sleep(0.05)
    assert [m.kind for m in capture.decoded(CUSTOM, REPLIES_ADAPTER)] == ["result"]
