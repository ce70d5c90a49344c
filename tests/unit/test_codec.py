"""fusion.kafka.codec: bytes on the wire to contracts and back, with readable errors."""

import json
from datetime import UTC, datetime

import pytest
from fusion.kafka.codec import DecodeError, decode, encode
from fusion_contracts import AnswersMessage, ChatMessage, FusionRequest, PanelAnswer, PanelPlan, Usage
from pydantic import TypeAdapter

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
        {"schema_version": 9, "request_id": "", "messages": [], "preset": 5, "a": 1, "b": 2, "c": 3}
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
