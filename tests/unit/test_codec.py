"""fusion.kafka.codec: bytes on the wire to contracts and back, with readable errors."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fusion.kafka.codec import DecodeError, decode, encode
from fusion_contracts import (
    AnswerChunk,
    AnswersMessage,
    ChatMessage,
    FusedResult,
    FusionRequest,
    ModelSpec,
    PanelAnswer,
    PanelPlan,
    PanelTask,
    Policy,
    ReplyMessage,
    ReplyTo,
    Timings,
    Usage,
)
from pydantic import TypeAdapter

from tests.support.contracts_v1_1 import (
    NEW_FIELDS,
    AnswerChunkV11,
    FusedResultV11,
    FusionRequestV11,
    JudgeOutcomeV11,
    ModelSpecV11,
    PanelAnswerV11,
    PanelPlanV11,
    PanelTaskV11,
    PolicyV11,
    ReplyToV11,
    UsageV11,
)

_REQUEST: TypeAdapter[FusionRequest] = TypeAdapter(FusionRequest)
_ANSWERS: TypeAdapter[PanelPlan | PanelAnswer] = TypeAdapter(AnswersMessage)


def a_request() -> FusionRequest:
    return FusionRequest(
        request_id="r-1",
        messages=[ChatMessage(role="user", content="Why is the sky blue? ☀️ «ok»")],
        preset="local",
        submitted_at=datetime(2030, 1, 1, tzinfo=UTC),
        metadata={"k": "v"},
    )


@pytest.mark.parametrize("raw", [b"not json", b"{", b"", b"\xff\xfe\x00"])
def test_non_json_is_a_decode_error_saying_so(raw: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_REQUEST, raw)
    assert str(caught.value).startswith("not valid JSON")


def test_schema_error_starts_with_schema_and_names_the_field() -> None:
    raw = json.dumps({"request_id": "r-1", "messages": []}).encode()
    with pytest.raises(DecodeError) as caught:
        decode(_REQUEST, raw)
    message = str(caught.value)
    assert message.startswith("schema:")
    assert "messages" in message


def test_json_that_is_not_an_object_is_a_schema_error() -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_REQUEST, b"[1, 2, 3]")
    assert str(caught.value).startswith("schema: (message):")


def test_schema_error_lists_at_most_five_problems() -> None:
    raw = json.dumps(
        {"schema_version": "x", "request_id": "", "messages": [], "preset": 5, "stream": [], "metadata": 1}
    ).encode()
    with pytest.raises(DecodeError) as caught:
        decode(_REQUEST, raw)
    message = str(caught.value)
    assert message.startswith("schema:")
    assert message.count("; ") == 5  # five problems shown, then "and N more"
    assert message.rstrip().split("; ")[-1].startswith("and ")
    assert message.endswith("more")


def test_none_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no value"):
        decode(_REQUEST, None)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


def test_request_round_trips() -> None:
    request = a_request()
    raw = encode(request)
    assert isinstance(raw, bytes)
    assert decode(_REQUEST, raw) == request


def test_encode_writes_defaults_too() -> None:
    data = json.loads(encode(a_request()))
    assert data["schema_version"] == 1
    assert data["policy"]["grace_s"] == 2.0
    assert data["reply_to"] is None


def test_answer_round_trips_through_the_answers_union() -> None:
    answer = PanelAnswer(
        request_id="r-1",
        member_index=2,
        model="m",
        status="ok",
        text="text",
        usage=Usage(input_tokens=1, output_tokens=2),
        latency_ms=3.0,
        finished_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    decoded = decode(_ANSWERS, encode(answer))
    assert isinstance(decoded, PanelAnswer)
    assert decoded == answer


# --- versions: the tolerant reader of one major (docs/kafka-api.md, "Versions") -------------------

_TASK: TypeAdapter[PanelTask] = TypeAdapter(PanelTask)
_REPLIES: TypeAdapter[FusedResult | AnswerChunk] = TypeAdapter(ReplyMessage)
_AT = datetime(2030, 1, 1, tzinfo=UTC)
_HELLO = [ChatMessage(role="user", content="hello")]


def a_newer_request() -> FusionRequestV11:
    return FusionRequestV11(
        request_id="r-11",
        messages=_HELLO,
        judge=ModelSpecV11(model="judge", temperature=0.2, provider_hint="eu"),
        policy=PolicyV11(deadline_s=30, priority=5),
        reply_to=ReplyToV11(topic="my.replies", compression="zstd"),
        tags=["a", "b"],
        submitted_at=_AT,
    )


def test_a_request_of_a_newer_minor_is_read_without_its_new_fields() -> None:
    decoded = decode(_REQUEST, encode(a_newer_request()))

    assert type(decoded) is FusionRequest
    assert decoded.request_id == "r-11"
    assert decoded.judge == ModelSpec(model="judge", temperature=0.2)
    assert decoded.policy == Policy(deadline_s=30)
    assert decoded.reply_to == ReplyTo(topic="my.replies")
    assert decoded.submitted_at == _AT
    written = encode(decoded).decode()  # what this reader writes on carries none of them
    assert not [name for name in NEW_FIELDS if f'"{name}"' in written]


def test_every_message_of_a_newer_minor_is_read_by_its_reader() -> None:
    spec = ModelSpecV11(model="m", provider_hint="eu")
    plan = PanelPlanV11(
        request_id="r-11",
        messages=_HELLO,
        members=[ModelSpec(model="m")],
        judge=spec,
        quorum=1,
        grace_s=1.0,
        panel_deadline_at=_AT,
        deadline_at=_AT,
        submitted_at=_AT,
        dispatched_at=_AT,
        reply_to=ReplyToV11(topic="my.replies", compression="zstd"),
        priority=3,
    )
    answer = PanelAnswerV11(
        request_id="r-11",
        member_index=0,
        model="m",
        status="ok",
        text="t",
        usage=UsageV11(input_tokens=1, output_tokens=2, cached_tokens=1),
        latency_ms=1.0,
        finished_at=_AT,
        reasoning="because",
    )
    task = PanelTaskV11(
        request_id="r-11", member_index=0, member=spec, messages=_HELLO, deadline_at=_AT, dispatched_at=_AT
    )
    result = FusedResultV11(
        request_id="r-11",
        status="complete",
        answer="a",
        judge=JudgeOutcomeV11(model="m", status="ok", confidence=0.9),
        timings=Timings(submitted_at=_AT, completed_at=_AT, total_ms=1.0),
        tags=["a"],
    )
    chunk = AnswerChunkV11(request_id="r-11", seq=0, delta="a", final=True)

    read_plan = decode(_ANSWERS, encode(plan))
    assert isinstance(read_plan, PanelPlan)
    assert read_plan.judge == ModelSpec(model="m")
    assert read_plan.reply_to == ReplyTo(topic="my.replies")
    read_answer = decode(_ANSWERS, encode(answer))
    assert isinstance(read_answer, PanelAnswer)
    assert read_answer.usage == Usage(input_tokens=1, output_tokens=2)
    assert decode(_TASK, encode(task)).member == ModelSpec(model="m")
    read_result = decode(_REPLIES, encode(result))
    assert isinstance(read_result, FusedResult)
    assert read_result.judge is not None
    assert read_result.judge.model == "m"
    assert decode(_REPLIES, encode(chunk)) == AnswerChunk(request_id="r-11", seq=0, delta="a")


def test_a_reader_of_a_newer_minor_takes_the_defaults_from_an_older_writer() -> None:
    decoded = decode(TypeAdapter(FusionRequestV11), encode(a_request()))
    assert decoded.tags == []
    assert decoded.policy.priority == 0
    assert decoded.request_id == "r-1"


def test_unknown_fields_still_cannot_hide_a_broken_message() -> None:
    raw = json.dumps({"request_id": "r-1", "messages": [], "novel": 1}).encode()
    with pytest.raises(DecodeError) as caught:
        decode(_REQUEST, raw)
    assert str(caught.value).startswith("schema:")
    assert "messages" in str(caught.value)
    assert "novel" not in str(caught.value)


@pytest.mark.parametrize("version", [2, 3, 0, -1, 99, 10**30])
def test_a_message_of_another_major_is_refused_with_the_reason(version: int) -> None:
    raw = json.dumps({**json.loads(encode(a_request())), "schema_version": version}).encode()
    with pytest.raises(DecodeError) as caught:
        decode(_REQUEST, raw)
    assert str(caught.value) == f"unsupported schema version {version}; this reader speaks 1"


def test_the_version_is_the_reason_whatever_else_the_next_major_changed() -> None:
    renamed = {"schema_version": 2, "request_id": "r-2", "conversation": [{"role": "user", "text": "hi"}]}
    new_kind = {"schema_version": 2, "kind": "vote", "request_id": "r-2"}
    adapters: list[tuple[TypeAdapter[Any], dict[str, Any]]] = [
        (_REQUEST, renamed),
        (_ANSWERS, new_kind),
        (_TASK, renamed),
        (_REPLIES, new_kind),
    ]
    for adapter, data in adapters:
        with pytest.raises(DecodeError) as caught:
            decode(adapter, json.dumps(data).encode())
        assert str(caught.value) == "unsupported schema version 2; this reader speaks 1"


@pytest.mark.parametrize("version", ["1", "2", "1.1", "v1", None, 1.5, [1], {"major": 1}, False])
def test_a_version_that_is_no_integer_major_is_a_schema_error(version: object) -> None:
    raw = json.dumps({**json.loads(encode(a_request())), "schema_version": version}).encode()
    with pytest.raises(DecodeError) as caught:
        decode(_REQUEST, raw)
    assert str(caught.value).startswith("schema: schema_version: Input should be 1")


def test_a_message_without_a_version_is_read_as_major_1() -> None:
    data = json.loads(encode(a_request()))
    del data["schema_version"]
    assert decode(_REQUEST, json.dumps(data).encode()) == a_request()


def test_the_version_check_survives_what_json_cannot_parse_twice() -> None:
    deep = b'{"schema_version": 2, "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(DecodeError):
        decode(_REQUEST, deep)
