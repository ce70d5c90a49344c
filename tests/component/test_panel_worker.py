"""The panel worker on FastStream's in-memory Kafka: tasks in, answers (or dead letters) out."""

import asyncio
import base64
from datetime import UTC, datetime, timedelta

from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.kafka.codec import encode
from fusion.panel_worker.app import PanelWorker, register
from fusion.settings import Settings
from fusion_contracts import ChatMessage, ModelSpec, PanelAnswer, PanelTask, Usage, topics

from tests.component.support import ANSWERS_ADAPTER, DEAD_LETTER_ADAPTER, Capture, FakeModels, eventually


def worker_broker(models: FakeModels, concurrency: int = 8) -> tuple[KafkaBroker, Capture, PanelWorker]:
    broker = KafkaBroker()
    worker = register(broker, models, Settings(instance_id="t", worker_concurrency=concurrency))
    capture = Capture(broker, topics.ANSWERS, topics.DLQ)
    return broker, capture, worker


def a_task(
    request_id: str, index: int = 0, model: str = "member-a", deadline_in_s: float = 30.0
) -> PanelTask:
    now = datetime.now(UTC)
    return PanelTask(
        request_id=request_id,
        member_index=index,
        member=ModelSpec(model=model, temperature=0.4),
        messages=[ChatMessage(role="user", content="Why is the sky blue?")],
        deadline_at=now + timedelta(seconds=deadline_in_s),
        dispatched_at=now,
    )


def answers(capture: Capture) -> list[PanelAnswer]:
    decoded = capture.decoded(topics.ANSWERS, ANSWERS_ADAPTER)
    assert all(isinstance(message, PanelAnswer) for message in decoded)
    return [message for message in decoded if isinstance(message, PanelAnswer)]


async def test_task_becomes_an_answer_on_the_answers_topic() -> None:
    models = FakeModels()
    broker, capture, _ = worker_broker(models)
    task = a_task("req-1", index=2)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(task), topic=topics.TASKS, key=b"req-1/2")
        await eventually(lambda: len(capture.records[topics.ANSWERS]) == 1)

    [answer] = answers(capture)
    assert answer.request_id == "req-1"
    assert answer.member_index == 2
    assert answer.model == "member-a"
    assert answer.status == "ok"
    assert answer.text == "member-a says: Rayleigh scattering."
    assert answer.usage == Usage(input_tokens=10, output_tokens=5)
    assert answer.worker == "t"
    assert capture.keys(topics.ANSWERS) == [b"req-1"]
    assert models.calls[0][0] == task.member
    assert models.calls[0][1] == task.messages


async def test_handler_returns_before_the_call_finishes() -> None:
    gate = asyncio.Event()
    models = FakeModels(gate=gate)
    broker, capture, worker = worker_broker(models)
    async with TestKafkaBroker(broker) as test_broker:
        for index in range(3):
            await asyncio.wait_for(
                test_broker.publish(encode(a_task("req-2", index)), topic=topics.TASKS), timeout=2.0
            )
        await eventually(lambda: len(models.calls) == 3)
        assert worker.pool.in_flight == 3  # all three calls run side by side
        assert capture.records[topics.ANSWERS] == []
        gate.set()
        await eventually(lambda: len(capture.records[topics.ANSWERS]) == 3)
    assert sorted(answer.member_index for answer in answers(capture)) == [0, 1, 2]


async def test_model_failure_is_an_error_answer() -> None:
    broker, capture, _ = worker_broker(FakeModels(fail={"broken-model"}))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_task("req-3", model="broken-model")), topic=topics.TASKS)
        await eventually(lambda: len(capture.records[topics.ANSWERS]) == 1)
    [answer] = answers(capture)
    assert answer.status == "error"
    assert answer.error == "broken-model is broken"
    assert answer.text is None


async def test_unexpected_exception_still_ends_in_an_error_answer() -> None:
    broker, capture, worker = worker_broker(FakeModels(crash={"buggy-model"}))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_task("req-crash", model="buggy-model")), topic=topics.TASKS)
        await eventually(lambda: len(capture.records[topics.ANSWERS]) == 1)
    [answer] = answers(capture)
    assert answer.status == "error"
    assert answer.error == "internal error in the panel worker: RuntimeError"
    assert answer.worker == "t"
    assert worker.pool.in_flight == 0


async def test_task_past_its_deadline_is_a_timeout_answer_without_a_call() -> None:
    models = FakeModels()
    broker, capture, _ = worker_broker(models)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(encode(a_task("req-4", deadline_in_s=-1)), topic=topics.TASKS)
        await eventually(lambda: len(capture.records[topics.ANSWERS]) == 1)
    [answer] = answers(capture)
    assert answer.status == "timeout"
    assert models.calls == []


async def test_bad_payload_is_dead_lettered_and_the_worker_goes_on() -> None:
    models = FakeModels()
    broker, capture, _ = worker_broker(models)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"{oops", topic=topics.TASKS, key=b"bad/0")
        await test_broker.publish(b'{"request_id": "r"}', topic=topics.TASKS, key=b"bad/1")
        await test_broker.publish(encode(a_task("req-5")), topic=topics.TASKS)
        await eventually(lambda: len(capture.records[topics.ANSWERS]) == 1)

    letters = capture.decoded(topics.DLQ, DEAD_LETTER_ADAPTER)
    assert [letter.service for letter in letters] == ["panel-worker", "panel-worker"]
    assert letters[0].error.startswith("not valid JSON")
    assert letters[1].error.startswith("schema:")
    assert all(letter.topic == topics.TASKS for letter in letters)
    assert base64.b64decode(letters[0].raw_base64) == b"{oops"
    assert capture.keys(topics.DLQ) == [b"bad/0", b"bad/1"]
    assert [answer.request_id for answer in answers(capture)] == ["req-5"]
    assert len(models.calls) == 1
