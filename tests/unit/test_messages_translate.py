"""Anthropic's Messages API <-> the gateway's chat completions (anthropic_shapes): the pure translation,
checked against the official SDK's own types where it has them."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from fusion.gateway.anthropic_shapes import (
    PING,
    MessagesRequest,
    PassthroughEvents,
    error_body,
    error_type,
    event,
    invalid_body_message,
    message_from_completion,
    message_from_result,
    stream_end,
    stream_start,
    text_delta,
    to_chat_request,
)
from fusion.gateway.errors import GatewayError
from fusion_contracts import FusedResult, MemberOutcome, Timings, Usage, UsageSummary
from pydantic import TypeAdapter, ValidationError

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def request(**fields: Any) -> MessagesRequest:
    body = {"model": "fusion", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi?"}], **fields}
    return MessagesRequest.model_validate(body)


def result(answer: str = "The answer.", tool_calls: dict[str, int] | None = None) -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id="r" * 32,
        status="complete",
        release="all",
        answer=answer,
        answer_source="judge",
        members=[MemberOutcome(index=0, model="alpha", status="ok", tool_calls=tool_calls or {})],
        usage=UsageSummary(total=Usage(input_tokens=30, output_tokens=12)),
        timings=Timings(submitted_at=now, completed_at=now, total_ms=5.0),
        answered=1,
    )


def parsed(sse: str) -> dict[str, Any]:
    """One event's data, after checking its `event:` line names its type."""
    name_line, data_line = sse.removesuffix("\n\n").split("\n")
    data: dict[str, Any] = json.loads(data_line.removeprefix("data: "))
    assert name_line == f"event: {data['type']}"
    return data


# --- the request -------------------------------------------------------------------------------


def test_a_string_prompt_becomes_a_user_message_with_the_sampling_settings() -> None:
    chat = to_chat_request(
        request(temperature=0.3, top_p=0.9, stop_sequences=["END"], metadata={"user_id": "u-1"}, top_k=5)
    )

    assert [m.model_dump(exclude_none=True) for m in chat.messages] == [{"role": "user", "content": "Hi?"}]
    assert (chat.model, chat.max_tokens, chat.temperature, chat.top_p) == ("fusion", 100, 0.3, 0.9)
    dumped = chat.model_dump(exclude_none=True)
    assert dumped["stop"] == ["END"]
    assert "metadata" not in dumped
    assert "top_k" not in dumped
    assert chat.stream is False


def test_system_blocks_and_earlier_turns_are_kept_in_order() -> None:
    chat = to_chat_request(
        request(
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "A long document."}]},
                {"role": "assistant", "content": "Noted."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Part one.", "cache_control": {"type": "ephemeral"}},
                        {"type": "text", "text": "And the question?"},
                    ],
                },
            ],
        )
    )

    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief.\n\nAnswer in French."),
        ("user", "A long document."),
        ("assistant", "Noted."),
        ("user", "Part one.\n\nAnd the question?"),
    ]


def test_a_string_system_prompt_comes_first_and_an_empty_one_is_left_out() -> None:
    assert [m.role for m in to_chat_request(request(system="Be brief.")).messages] == ["system", "user"]
    assert [m.role for m in to_chat_request(request(system="")).messages] == ["user"]


def test_the_fusion_object_is_kept_without_progress() -> None:
    fusion = {"panel": ["alpha", {"model": "beta", "temperature": 0.9}], "judge": "beta", "progress": True}
    chat = to_chat_request(request(fusion=fusion, stream=True))

    assert chat.fusion is not None
    assert chat.fusion.judge == "beta"
    assert chat.fusion.panel is not None
    assert len(chat.fusion.panel) == 2
    assert chat.fusion.progress is None  # Anthropic's stream has no event for it
    assert "stream_options" not in chat.model_dump(exclude_none=True)  # a fusion's stream counts itself


def test_a_streamed_pass_through_asks_the_provider_for_usage() -> None:
    chat = to_chat_request(request(model="alpha", stream=True))
    assert chat.stream is True
    assert chat.model_dump()["stream_options"] == {"include_usage": True}
    assert "stream_options" not in to_chat_request(request(model="alpha")).model_dump()


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
    ],
)
def test_a_block_other_than_text_is_a_400_naming_it(block: dict[str, Any]) -> None:
    content = [{"type": "text", "text": "Look:"}, block]
    with pytest.raises(GatewayError) as raised:
        to_chat_request(request(messages=[{"role": "user", "content": content}]))

    error = raised.value
    assert (error.status, error.error_type, error.param) == (400, "invalid_request_error", "messages")
    assert f"messages[0].content[1]: '{block['type']}' content blocks are not supported" in error.message
    assert "text blocks only" in error.message


def test_an_image_in_the_system_prompt_is_a_400_too() -> None:
    with pytest.raises(GatewayError) as raised:
        to_chat_request(request(system=[{"type": "image", "source": {}}]))
    assert raised.value.param == "system"
    assert "system[0]: 'image' content blocks are not supported" in raised.value.message


def test_a_text_block_without_text_is_a_400() -> None:
    with pytest.raises(GatewayError, match=r"messages\[0\]\.content\[0\]: a text block needs a 'text'"):
        to_chat_request(request(messages=[{"role": "user", "content": [{"type": "text"}]}]))


def test_tools_are_a_400_and_an_empty_list_is_not() -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    with pytest.raises(GatewayError, match="tools are not supported") as raised:
        to_chat_request(request(tools=[tool]))
    assert raised.value.param == "tools"
    assert to_chat_request(request(tools=[])).messages


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ],
)
def test_a_request_anthropic_would_refuse_does_not_validate(change: dict[str, Any], where: str) -> None:
    body = {"model": "fusion", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi?"}], **change}
    body = {key: value for key, value in body.items() if value is not None}
    with pytest.raises(ValidationError) as raised:
        MessagesRequest.model_validate(body)
    assert where in invalid_body_message(raised.value.errors())


def test_validation_problems_are_worded_as_anthropic_words_them() -> None:
    problems = [
        {"loc": ("body", "max_tokens"), "msg": "Field required"},
        {"loc": ("body", "messages", 0, "role"), "msg": "Input should be 'user' or 'assistant'"},
    ]
    assert invalid_body_message(problems) == (
        "max_tokens: Field required; messages.0.role: Input should be 'user' or 'assistant'"
    )
    assert invalid_body_message([{"loc": ("body",), "msg": "JSON decode error"}]) == "body: JSON decode error"


# --- the response ------------------------------------------------------------------------------


def test_a_fused_result_is_an_anthropic_message_with_the_fusion_object() -> None:
    message = message_from_result(result(), "fusion/solo")

    assert Message.model_validate(message).content[0].type == "text"
    assert {key: value for key, value in message.items() if key != "fusion"} == {
        "id": f"msg_{'r' * 32}",
        "type": "message",
        "role": "assistant",
        "model": "fusion/solo",
        "content": [{"type": "text", "text": "The answer."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 12},
    }
    assert message["fusion"]["status"] == "complete"
    assert message["fusion"]["request_id"] == "r" * 32


def test_the_panels_tool_calls_are_counted_as_server_tool_use() -> None:
    message = message_from_result(result(tool_calls={"web_search": 2, "mcp": 1}), "fusion")

    assert message["usage"]["server_tool_use"] == {
        "web_search_requests": 2,
        "web_fetch_requests": 0,
        "mcp_requests": 1,
    }
    usage = Message.model_validate(message).usage
    assert usage.server_tool_use is not None
    assert usage.server_tool_use.web_search_requests == 2


def completion(finish: str | None = "stop", content: Any = "Direct.", **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


@pytest.mark.parametrize(
    ("reply", "stop"),
    [
        (completion(), ("end_turn", None)),
        (completion("length"), ("max_tokens", None)),
        (completion("content_filter"), ("refusal", None)),
        (completion("stop", stop_reason="END"), ("stop_sequence", "END")),  # vLLM names the sequence
        (completion("stop", stop_reason="OTHER"), ("end_turn", None)),
        (completion("stop", stop_reason=128001), ("end_turn", None)),  # vLLM: a stop token's id
    ],
)
def test_a_chat_completion_becomes_a_message_with_its_stop_reason(
    reply: dict[str, Any], stop: tuple[str, str | None]
) -> None:
    message = message_from_completion(reply, "msg_1", "alpha", ["END"])

    Message.model_validate(message)
    assert (message["stop_reason"], message["stop_sequence"]) == stop
    assert message["content"] == [{"type": "text", "text": "Direct."}]
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 3}
    assert (message["id"], message["model"]) == ("msg_1", "alpha")
    assert "fusion" not in message


def test_a_completion_without_content_or_usage_is_an_empty_text() -> None:
    reply = completion(content=None)
    del reply["usage"]
    message = message_from_completion(reply, "msg_1", "alpha", None)
    assert message["content"] == [{"type": "text", "text": ""}]
    assert message["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert message_from_completion({}, "msg_1", "alpha", None)["stop_reason"] == "end_turn"


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_request", "invalid_request_error"),
        (401, "invalid_api_key", "authentication_error"),
        (403, "fusion_loop", "permission_error"),
        (404, "model_not_found", "not_found_error"),
        (409, "idempotency_key_reused", "invalid_request_error"),
        (413, "request_too_large", "invalid_request_error"),
        (422, None, "invalid_request_error"),
        (429, "too_many_requests", "rate_limit_error"),
        (429, "rate_limited", "rate_limit_error"),
        (500, "upstream_error", "api_error"),
        (502, "all_members_failed", "api_error"),
        (503, "kafka_unavailable", "overloaded_error"),
        (503, "gateway_shutting_down", "overloaded_error"),
        (503, "upstream_error", "overloaded_error"),
        (503, "provider_not_configured", "api_error"),
        (504, "deadline_exceeded", "timeout_error"),
        (504, "upstream_timeout", "timeout_error"),
        (529, "upstream_error", "overloaded_error"),
    ],
)
def test_each_status_has_an_error_type_the_sdk_knows(status: int, code: str | None, kind: str) -> None:
    assert error_type(status, code) == kind
    body = error_body(GatewayError(status, "why", "api_error", code))
    assert ErrorResponse.model_validate(body).error.type == kind


def test_an_error_body_is_anthropics_with_a_failed_fusions_object_beside_it() -> None:
    plain = error_body(GatewayError(502, "no member answered", "api_error", "fusion_failed"))
    assert plain == {"type": "error", "error": {"type": "api_error", "message": "no member answered"}}

    fusion = {"status": "failed", "members": []}
    failed = error_body(GatewayError(502, "no member answered", "api_error", "fusion_failed", fusion=fusion))
    assert failed["fusion"] == fusion


def test_the_missing_key_message_names_anthropics_header() -> None:
    error = GatewayError(401, "send Authorization: Bearer <key>", "authentication_error", "invalid_api_key")
    assert "x-api-key" in error_body(error)["error"]["message"]


# --- server-sent events ------------------------------------------------------------------------


def test_an_event_is_named_as_its_type() -> None:
    assert event({"type": "ping"}) == 'event: ping\ndata: {"type": "ping"}\n\n'
    assert parsed(PING) == {"type": "ping"}
    assert parsed(text_delta("é")) == {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "é"},
    }


def test_start_and_end_events_are_the_sdks_in_anthropics_order() -> None:
    events = [
        *stream_start("msg_1", "fusion"),
        text_delta("Hello"),
        *stream_end(("end_turn", None), {"input_tokens": 4, "output_tokens": 2}, {"fusion": {"x": 1}}),
    ]
    data = [parsed(one) for one in events]

    assert [d["type"] for d in data] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for one in data:
        if one["type"] != "ping":
            STREAM_EVENT.validate_python(one)
    start = data[0]["message"]
    assert (start["id"], start["model"], start["content"], start["stop_reason"]) == (
        "msg_1",
        "fusion",
        [],
        None,
    )
    assert data[5]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[5]["usage"] == {"input_tokens": 4, "output_tokens": 2}
    assert data[5]["fusion"] == {"x": 1}


def openai_chunk(
    content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None, **choice: Any
) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice}],
    }
    if usage is not None:
        chunk = {**chunk, "choices": [], "usage": usage}
    return f"data: {json.dumps(chunk)}\n\n".encode()


def texts(events: list[str]) -> str:
    return "".join(
        data["delta"]["text"] for data in map(parsed, events) if data["type"] == "content_block_delta"
    )


def test_a_chat_completion_stream_cut_anywhere_becomes_text_deltas_and_the_end() -> None:
    raw = b"".join(
        [
            b": a comment\n\n",
            openai_chunk("", None),
            openai_chunk("Caf\u00e9 ", None),
            openai_chunk("au lait.", "length"),
            openai_chunk(usage={"prompt_tokens": 5, "completion_tokens": 2}),
            b"data: [DONE]\n\n",
        ]
    ).replace(b"\n", b"\r\n")
    stream = PassthroughEvents("msg_1", "alpha", None)
    events = stream.start()
    for start in range(0, len(raw), 7):  # splits lines, and the two bytes of "é"
        events += stream.feed(raw[start : start + 7])
    events += stream.end()

    data = [parsed(one) for one in events]
    assert texts(events) == "Café au lait."
    assert [d["type"] for d in data][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert data[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert data[-2]["usage"] == {"input_tokens": 5, "output_tokens": 2}


def test_a_stream_that_names_its_stop_sequence_ends_with_it() -> None:
    stream = PassthroughEvents("msg_1", "alpha", ["###"])
    events = stream.feed(openai_chunk("Done", "stop", stop_reason="###"))
    events += stream.end()  # no [DONE] (some servers send none): the finish is enough
    assert texts(events) == "Done"
    assert parsed(events[-2])["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (
            b'data: {"error": {"message": "model overloaded"}}\n\n',
            "the model's stream failed: model overloaded",
        ),
        (b"data: {not json\n\n", "not JSON"),
        (b"data: [1, 2]\n\n", "not an object"),
    ],
)
def test_a_streamed_error_or_a_bad_chunk_ends_the_stream_with_an_error_event(
    raw: bytes, fragment: str
) -> None:
    stream = PassthroughEvents("msg_1", "alpha", None)
    events = stream.feed(openai_chunk("Hello ") + raw + openai_chunk("more", "stop"))

    assert texts(events) == "Hello "  # what came before the failure, and nothing after it
    error = parsed(events[-1])
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    assert fragment in error["error"]["message"]
    assert stream.over
    assert stream.feed(openai_chunk("later")) == []
    assert stream.end() == []


def test_a_stream_that_stops_before_its_finish_ends_with_an_error_event() -> None:
    stream = PassthroughEvents("msg_1", "alpha", None)
    stream.feed(openai_chunk("Half an ans"))
    [error] = [parsed(one) for one in stream.end()]
    assert error["type"] == "error"
    assert "ended before its answer did" in error["error"]["message"]


def test_a_failure_reading_the_stream_is_one_error_event() -> None:
    stream = PassthroughEvents("msg_1", "alpha", None)
    [error] = stream.fail(GatewayError(504, "the model timed out", "api_error", "upstream_timeout"))
    assert parsed(error)["error"] == {"type": "timeout_error", "message": "the model timed out"}
    assert stream.fail(GatewayError(502, "again", "api_error")) == []
    assert stream.end() == []


def test_a_last_line_without_its_newline_is_still_read() -> None:
    stream = PassthroughEvents("msg_1", "alpha", None)
    events = stream.feed(
        openai_chunk("All.").rstrip(b"\n") + b"\n\n" + openai_chunk(None, "stop").rstrip(b"\n")
    )
    events += stream.end()
    assert texts(events) == "All."
    assert parsed(events[-2])["delta"]["stop_reason"] == "end_turn"
