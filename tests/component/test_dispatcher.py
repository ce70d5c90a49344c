"""The dispatcher on FastStream's in-memory Kafka: requests in; plan, tasks, rejections, dead letters out."""

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.catalog import load_catalog
from fusion.dispatcher.app import Dispatcher, register
from fusion.kafka.codec import encode
from fusion_contracts import ChatMessage, FusionRequest, PanelPlan, PanelRejection, ReplyTo, topics

from tests.component.support import (
    ANSWERS_ADAPTER,
    DEAD_LETTER_ADAPTER,
    TASK_ADAPTER,
    Capture,
)

CUSTOM = "custom.replies"


def dispatcher_broker() -> tuple[KafkaBroker, Capture, Dispatcher]:
    broker = KafkaBroker()
    dispatcher = register(broker, load_catalog())
    capture = Capture(broker, topics.ANSWERS, topics.TASKS, topics.RESULTS, topics.DLQ, CUSTOM)
    return broker, capture, dispatcher


@contextlib.asynccontextmanager
async def dispatching(broker: KafkaBroker, dispatcher: Dispatcher) -> AsyncIterator[KafkaBroker]:
    """The in-memory broker, open until every dispatch started meanwhile has published."""
    async with TestKafkaBroker(broker) as test_broker:
        yield test_broker
        assert await dispatcher.pool.drain(timeout_s=5) == 0


def a_request(request_id: str, **fields: object) -> FusionRequest:
    return FusionRequest.model_validate(
        {
            "request_id": request_id,
            "messages": [ChatMessage(role="user", content="Why is the sky blue?")],
            **fields,
        }
    )


async def test_request_is_dispatched_as_one_plan_and_a_task_per_member() -> None:
    broker, capture, dispatcher = dispatcher_broker()
    request = a_request("req-1", preset="local")
    async with dispatching(broker, dispatcher) as test_broker:
        await test_broker.publish(encode(request), topic=topics.REQUESTS, key=b"req-1")

    plans = capture.decoded(topics.ANSWERS, ANSWERS_ADAPTER)
    assert len(plans) == 1
    plan = plans[0]
    assert isinstance(plan, PanelPlan)
    assert plan.request_id == "req-1"
    assert [spec.model for spec in plan.members] == ["smollm2-135m", "smollm2-135m", "gemma3-270m"]
    assert plan.judge.model == "smollm2-135m"
    assert plan.quorum == 3
    assert capture.keys(topics.ANSWERS) == [b"req-1"]

    tasks = capture.decoded(topics.TASKS, TASK_ADAPTER)
    assert sorted(task.member_index for task in tasks) == [0, 1, 2]
    assert sorted(key or b"" for key in capture.keys(topics.TASKS)) == [b"req-1/0", b"req-1/1", b"req-1/2"]
    for task, key in zip(tasks, capture.keys(topics.TASKS), strict=True):
        assert key == f"req-1/{task.member_index}".encode()
        assert task.request_id == "req-1"
        assert task.member == plan.members[task.member_index]
        assert task.deadline_at == plan.panel_deadline_at
        assert task.messages == request.messages
    assert capture.records[topics.RESULTS] == []
    assert capture.records[topics.DLQ] == []


async def test_explicit_panel_dispatches_its_members() -> None:
    broker, capture, dispatcher = dispatcher_broker()
    request = a_request("req-panel", panel=[{"model": "gemma3-270m", "seed": 1}], policy={"deadline_s": 30})
    async with dispatching(broker, dispatcher) as test_broker:
        await test_broker.publish(encode(request), topic=topics.REQUESTS)
    tasks = capture.decoded(topics.TASKS, TASK_ADAPTER)
    assert len(tasks) == 1
    assert tasks[0].member.model == "gemma3-270m"
    assert tasks[0].member.seed == 1
    assert capture.keys(topics.TASKS) == [b"req-panel/0"]


async def test_unknown_preset_gets_a_rejected_result() -> None:
    broker, capture, dispatcher = dispatcher_broker()
    async with dispatching(broker, dispatcher) as test_broker:
        await test_broker.publish(encode(a_request("req-bad", preset="nope")), topic=topics.REQUESTS)

    # The rejection goes to the judge, which publishes the result exactly once.
    [rejection] = capture.decoded(topics.ANSWERS, ANSWERS_ADAPTER)
    assert isinstance(rejection, PanelRejection)
    assert rejection.request_id == "req-bad"
    assert "unknown preset 'nope'" in rejection.error
    assert capture.keys(topics.ANSWERS) == [b"req-bad"]
    assert capture.records[topics.RESULTS] == []
    assert capture.records[topics.TASKS] == []


async def test_rejection_goes_to_the_reply_topic() -> None:
    broker, capture, dispatcher = dispatcher_broker()
    request = a_request("req-reply", preset="nope", reply_to=ReplyTo(topic=CUSTOM))
    async with dispatching(broker, dispatcher) as test_broker:
        await test_broker.publish(encode(request), topic=topics.REQUESTS)
    [rejection] = capture.decoded(topics.ANSWERS, ANSWERS_ADAPTER)
    assert isinstance(rejection, PanelRejection)
    assert rejection.reply_to == ReplyTo(topic=CUSTOM)
    assert capture.records[topics.RESULTS] == []


async def test_non_json_and_schema_invalid_payloads_are_dead_lettered_and_dispatch_goes_on() -> None:
    broker, capture, dispatcher = dispatcher_broker()
    garbage = b"\x00this is not json"
    invalid = json.dumps({"request_id": "req-invalid", "messages": []}).encode()
    async with dispatching(broker, dispatcher) as test_broker:
        await test_broker.publish(garbage, topic=topics.REQUESTS, key=b"k1")
        await test_broker.publish(invalid, topic=topics.REQUESTS, key=b"k2")
        await test_broker.publish(encode(a_request("req-after")), topic=topics.REQUESTS)

    letters = capture.decoded(topics.DLQ, DEAD_LETTER_ADAPTER)
    assert len(letters) == 2
    not_json, bad_schema = letters
    assert not_json.error.startswith("not valid JSON")
    assert not_json.service == "dispatcher"
    assert not_json.topic == topics.REQUESTS
    assert not_json.key == "k1"
    assert base64.b64decode(not_json.raw_base64) == garbage
    assert not_json.raw_size == len(garbage)
    assert not_json.raw_truncated is False
    assert bad_schema.error.startswith("schema:")
    assert "messages" in bad_schema.error
    assert base64.b64decode(bad_schema.raw_base64) == invalid
    assert capture.keys(topics.DLQ) == [b"k1", b"k2"]

    # the invalid request had a usable id: its sender gets a rejection too (through the judge),
    # and the valid request after them is dispatched
    rejection, plan = capture.decoded(topics.ANSWERS, ANSWERS_ADAPTER)
    assert isinstance(rejection, PanelRejection)
    assert rejection.request_id == "req-invalid"
    assert rejection.error.startswith("invalid request: schema:")
    assert isinstance(plan, PanelPlan)
    assert plan.request_id == "req-after"
    assert len(capture.records[topics.TASKS]) == 3


async def test_invalid_payload_with_an_unusable_request_id_is_only_dead_lettered() -> None:
    # "has space" is printable but not a valid RequestId: the dispatcher must not crash trying to
    # build a rejected result for it (FusedResult validates request_id against the pattern).
    broker, capture, dispatcher = dispatcher_broker()
    invalid = json.dumps({"request_id": "has space", "messages": []}).encode()
    async with dispatching(broker, dispatcher) as test_broker:
        await test_broker.publish(invalid, topic=topics.REQUESTS)
        await test_broker.publish(encode(a_request("req-after")), topic=topics.REQUESTS)

    letters = capture.decoded(topics.DLQ, DEAD_LETTER_ADAPTER)
    assert len(letters) == 1
    assert letters[0].error.startswith("schema:")
    assert capture.records[topics.RESULTS] == []
    assert len(capture.records[topics.ANSWERS]) == 1


async def test_every_schema_valid_request_gets_an_outcome() -> None:
    # submitted_at without a UTC offset passes the contract; the dispatcher must then plan it, reject
    # it or dead-letter it, not drop it with an exception.
    broker, capture, dispatcher = dispatcher_broker()
    payload = json.dumps(
        {
            "request_id": "req-naive",
            "messages": [{"role": "user", "content": "hi"}],
            "submitted_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        }
    ).encode()
    async with dispatching(broker, dispatcher) as test_broker:
        await test_broker.publish(payload, topic=topics.REQUESTS)
    outcomes = (
        len(capture.records[topics.ANSWERS])
        + len(capture.records[topics.RESULTS])
        + len(capture.records[topics.DLQ])
    )
    assert outcomes == 1
