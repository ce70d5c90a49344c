"""fusion.gateway.responses_api's pure parts (Responses request -> the gateway's chat request, results
and provider chunks -> responses and their events) and fusion.gateway.response_store."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import FusionOptions
from fusion.gateway.response_store import ResponseStore
from fusion.gateway.responses_shapes import (
    ResponseFrame,
    ResponsesRequest,
    chat_request,
    fused_response,
    input_messages,
    passthrough_response,
    previous_response_not_found,
    responses_usage,
)
from fusion.gateway.responses_stream import ChunkReader, ResponseEvents
from fusion.models import ModelResponseError
from fusion_contracts import FusedResult, MemberOutcome, Source, Timings, Usage, UsageSummary


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "fusion", "input": "Why?", **fields})


def invalid(fragment: str, call: Any, *args: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        call(*args)
    assert caught.value.status == 400
    assert caught.value.error_type == "invalid_request_error"
    assert fragment in caught.value.message, caught.value.message
    return caught.value


# --- input -------------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message() -> None:
    assert input_messages("Hi") == [{"role": "user", "content": "Hi"}]


def test_message_items_with_and_without_type_and_text_parts() -> None:
    items: list[dict[str, Any]] = [
        {"role": "developer", "content": "Be brief."},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "What is "}, {"type": "input_text", "text": "Kafka?"}],
        },
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A log.", "annotations": []}],
        },
        {"role": "system", "content": "Cite."},
        {"role": "user", "content": "More?"},
    ]
    assert input_messages(items) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is Kafka?"},
        {"role": "assistant", "content": "A log."},
        {"role": "system", "content": "Cite."},
        {"role": "user", "content": "More?"},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "image_url": "https://example.org/cat.png"},
        {"type": "input_file", "file_id": "file_1"},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
    ],
)
def test_image_file_and_audio_content_is_a_400_naming_it(part: dict[str, Any]) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "See:"}, part]}]
    error = invalid(
        f"input[0].content[1]: content of type {part['type']!r} is not supported", input_messages, items
    )
    assert error.param == "input"


@pytest.mark.parametrize("kind", ["function_call", "function_call_output", "reasoning", "item_reference"])
def test_items_other_than_messages_are_a_400(kind: str) -> None:
    invalid(
        f"input[1]: items of type {kind!r} are not supported",
        input_messages,
        [{"role": "user", "content": "a"}, {"type": kind}],
    )


def test_a_tool_role_is_a_400() -> None:
    invalid("input[0]: role 'tool' is not supported", input_messages, [{"role": "tool", "content": "42"}])


def test_content_of_another_kind_is_a_400() -> None:
    invalid(
        "input[0]: content must be a string", input_messages, [{"role": "user", "content": {"text": "x"}}]
    )


def test_an_empty_input_is_a_400() -> None:
    invalid("input is empty", input_messages, [])


# --- the chat request --------------------------------------------------------------------------


def test_instructions_come_first_and_the_history_before_the_input() -> None:
    history = [{"role": "user", "content": "First?"}, {"role": "assistant", "content": "One."}]
    chat, conversation = chat_request(request(instructions="Be brief.", input="Second?"), history)

    sent = [message.model_dump(exclude_none=True) for message in chat.messages]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        *history,
        {"role": "user", "content": "Second?"},
    ]
    # What a later previous_response_id continues: without the instructions, as OpenAI does.
    assert conversation == [*history, {"role": "user", "content": "Second?"}]


def test_sampling_settings_are_carried_over() -> None:
    chat, _ = chat_request(request(temperature=0.3, top_p=0.9, max_output_tokens=77), [])
    assert (chat.temperature, chat.top_p, chat.max_tokens) == (0.3, 0.9, 77)
    assert chat.stream is False
    assert chat.fusion is None


def test_the_fusion_object_and_the_openrouter_shapes_reach_the_chat_request() -> None:
    chat, _ = chat_request(
        request(
            model="openrouter/fusion",
            fusion={"quorum": 1},
            plugins=[{"id": "fusion", "analysis_models": ["alpha"], "model": "beta"}],
        ),
        [],
    )
    assert chat.model == "fusion"
    assert chat.fusion == FusionOptions(panel=["alpha"], judge="beta", quorum=1)


def test_the_server_tool_on_a_catalog_model_is_a_fusion_judged_by_it() -> None:
    chat, _ = chat_request(request(model="alpha", tools=[{"type": "openrouter:fusion"}]), [])
    assert chat.model == "fusion"
    assert chat.fusion == FusionOptions(judge="alpha")
    assert chat.tools is None


def test_a_streamed_pass_through_asks_for_the_providers_usage() -> None:
    streamed, _ = chat_request(request(model="alpha", stream=True), [])
    plain, _ = chat_request(request(model="alpha"), [])
    fused, _ = chat_request(request(stream=True), [])

    assert (streamed.model_extra or {})["stream_options"] == {"include_usage": True}
    assert "stream_options" not in (plain.model_extra or {})
    assert "stream_options" not in (fused.model_extra or {})


@pytest.mark.parametrize(
    ("fields", "fragment", "param"),
    [
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools of type function", "tools"),
        ({"tools": [{"type": "web_search"}]}, "tools of type web_search", "tools"),
        ({"background": True}, "background responses are not supported", "background"),
        ({"conversation": "conv_1"}, "conversation objects are not supported", "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt templates are not supported", "prompt"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "'json_schema'", "text"),
    ],
)
def test_what_cannot_be_honoured_is_a_400(fields: dict[str, Any], fragment: str, param: str) -> None:
    error = invalid(fragment, chat_request, request(model="alpha", **fields), [])
    assert error.param == param


def test_fields_that_do_not_change_the_answer_are_accepted() -> None:
    body = request(
        user="u1",
        include=[],
        truncation="auto",
        reasoning={"effort": "low"},
        text={"format": {"type": "text"}},
    )
    chat, _ = chat_request(body, [])
    assert chat.model == "fusion"


def test_previous_response_not_found_says_where_and_how_long() -> None:
    error = previous_response_not_found("resp_x", 600.0, "gw-1")
    assert error.status == 404
    assert error.body()["error"] == {
        "message": error.message,
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    assert "'resp_x'" in error.message
    assert "600 s" in error.message
    assert "'gw-1'" in error.message


# --- responses ---------------------------------------------------------------------------------


def frame(**fields: Any) -> ResponseFrame:
    return ResponseFrame.start(request(**fields), "abc", 1_700_000_000.5)


def test_usage_in_the_responses_shape_keeps_cost_and_tool_use() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
        "cost": 0.25,
        "server_tool_use": {"web_search_requests": 1},
    }
    assert responses_usage(usage) == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 14,
        "cost": 0.25,
        "server_tool_use": {"web_search_requests": 1},
    }


def test_no_usage_is_zeros() -> None:
    assert responses_usage(None)["total_tokens"] == 0
    assert responses_usage({"prompt_tokens": 2, "completion_tokens": 3})["total_tokens"] == 5


def a_result(answer: str = "Sky [1] is blue.") -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id="r1",
        status="complete",
        answer=answer,
        members=[MemberOutcome(index=0, model="alpha", status="ok", text="Blue.")],
        usage=UsageSummary(total=Usage(input_tokens=30, output_tokens=12)),
        sources=[Source(url="https://example.org/sky", title="Sky")],
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
    )


def test_a_fused_response() -> None:
    body = fused_response(
        frame(instructions="Be brief.", metadata={"k": "v"}), a_result(), "Sky [1] is blue."
    )

    assert body["id"] == "resp_abc"
    assert body["object"] == "response"
    assert body["created_at"] == 1_700_000_000
    assert body["status"] == "completed"
    assert body["model"] == "fusion"
    assert body["instructions"] == "Be brief."
    assert body["metadata"] == {"k": "v"}
    fusion_item, message = body["output"]  # the panel's work ahead of the answer, as OpenRouter orders it
    assert message == {
        "type": "message",
        "id": "msg_abc",
        "status": "completed",
        "role": "assistant",
        "content": [
            {
                "type": "output_text",
                "text": "Sky [1] is blue.",
                "annotations": [
                    {
                        "type": "url_citation",
                        "url": "https://example.org/sky",
                        "title": "Sky",
                        "start_index": 4,
                        "end_index": 7,
                    }
                ],
                "logprobs": [],
            }
        ],
    }
    assert fusion_item["type"] == "openrouter:fusion"
    assert fusion_item["id"] == "fusion_r1"
    assert body["usage"]["input_tokens"] == 30
    assert body["usage"]["output_tokens"] == 12
    assert body["usage"]["total_tokens"] == 42
    assert body["fusion"]["request_id"] == "r1"
    assert body["fusion"]["status"] == "complete"
    json.dumps(body)  # plain JSON


def test_a_passed_through_reply_as_a_response() -> None:
    reply = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    body, text = passthrough_response(frame(model="alpha"), reply)
    assert text == "Hi."
    assert body["status"] == "completed"
    assert body["model"] == "alpha"
    assert body["output"][0]["content"][0]["text"] == "Hi."
    assert body["usage"]["total_tokens"] == 10
    assert "fusion" not in body


def test_a_reply_cut_at_its_token_limit_is_incomplete() -> None:
    reply = {"choices": [{"message": {"content": "Hal"}, "finish_reason": "length"}]}
    body, _ = passthrough_response(frame(model="alpha"), reply)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"


def test_a_reply_without_a_message_is_a_502() -> None:
    with pytest.raises(GatewayError) as caught:
        passthrough_response(frame(model="alpha"), {"choices": []})
    assert caught.value.status == 502
    assert caught.value.code == "upstream_error"


# --- events ------------------------------------------------------------------------------------


def parse(events: list[str]) -> list[dict[str, Any]]:
    payloads = []
    for event in events:
        kind_line, data_line = event.rstrip("\n").split("\n")
        payload = json.loads(data_line.removeprefix("data: "))
        assert kind_line == f"event: {payload['type']}"
        payloads.append(payload)
    return payloads


def test_a_streamed_response_has_the_standard_events_in_order() -> None:
    events = ResponseEvents(frame())
    rendered = [*events.opening(), events.delta("Sky "), events.delta("[1] is blue.")]
    rendered += events.closing({"input_tokens": 1}, [{"type": "url_citation"}])
    payloads = parse(rendered)

    assert [p["type"] for p in payloads] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [p["sequence_number"] for p in payloads] == list(range(10))
    assert payloads[0]["response"]["status"] == "in_progress"
    assert payloads[0]["response"]["output"] == []
    assert payloads[0]["response"]["id"] == "resp_abc"
    assert payloads[2]["output_index"] == 0
    assert payloads[2]["item"] == {
        "type": "message",
        "id": "msg_abc",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    deltas = [p for p in payloads if p["type"] == "response.output_text.delta"]
    assert {(p["item_id"], p["output_index"], p["content_index"]) for p in deltas} == {("msg_abc", 0, 0)}
    assert payloads[6]["text"] == "Sky [1] is blue."
    assert payloads[7]["part"]["annotations"] == [{"type": "url_citation"}]
    assert payloads[8]["item"]["status"] == "completed"
    final = payloads[-1]["response"]
    assert final["status"] == "completed"
    assert [item["type"] for item in final["output"]] == ["message"]
    assert final["output"][0]["content"][0]["text"] == "Sky [1] is blue."
    assert final["usage"] == {"input_tokens": 1}


def test_items_ahead_of_the_message_open_in_progress_and_close_whole_before_the_text() -> None:
    started = {"type": "openrouter:fusion", "id": "f", "status": "in_progress"}
    events = ResponseEvents(frame(), [started])
    rendered = [*events.opening(), events.delta("Hi.")]
    done = {"type": "openrouter:fusion", "id": "f", "status": "completed", "responses": []}
    payloads = parse([*rendered, *events.closing({}, lead=[done], fusion={"x": 1})])

    assert [(p["type"], p.get("output_index")) for p in payloads] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.output_item.added", 1),
        ("response.content_part.added", 1),
        ("response.output_text.delta", 1),
        ("response.output_item.done", 0),
        ("response.output_text.done", 1),
        ("response.content_part.done", 1),
        ("response.output_item.done", 1),
        ("response.completed", None),
    ]
    assert payloads[2]["item"] == started
    assert payloads[6]["item"] == done
    final = payloads[-1]["response"]
    assert final["output"][0] == done
    assert final["output"][1]["content"][0]["text"] == "Hi."
    assert final["fusion"] == {"x": 1}


def test_a_stream_cut_at_its_token_limit_ends_incomplete() -> None:
    events = ResponseEvents(frame())
    rendered = [*events.opening(), events.delta("Hal")]
    last = parse(events.closing({}, status="incomplete"))[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert len(rendered) == 5


def test_a_failed_stream_ends_with_an_error_then_response_failed() -> None:
    events = ResponseEvents(frame(), [{"type": "openrouter:fusion", "id": "f", "status": "in_progress"}])
    events.opening()
    events.delta("Half")
    error = GatewayError(
        502, "no member answered", "api_error", "all_members_failed", fusion={"status": "failed"}
    )
    error_event, failed = parse(events.failure(error))

    assert error_event == {
        "type": "error",
        "code": "all_members_failed",
        "message": "no member answered",
        "param": None,
        "sequence_number": 6,
    }
    assert failed["type"] == "response.failed"
    assert failed["sequence_number"] == 7
    response = failed["response"]
    assert response["status"] == "failed"
    assert response["error"] == {"code": "all_members_failed", "message": "no member answered"}
    assert response["fusion"] == {"status": "failed"}
    assert [(item["type"], item["status"]) for item in response["output"]] == [
        ("openrouter:fusion", "incomplete"),
        ("message", "incomplete"),
    ]
    assert response["output"][1]["content"][0]["text"] == "Half"


def test_a_failure_before_any_text_has_no_output() -> None:
    events = ResponseEvents(frame())
    events.opening()
    _, failed = parse(events.failure(GatewayError(504, "late", "api_error", "deadline_exceeded")))
    assert failed["response"]["output"] == []
    assert "fusion" not in failed["response"]


# --- the provider's chunks ---------------------------------------------------------------------


def test_chunks_split_anywhere_are_read_whole() -> None:
    raw = (
        'data: {"choices": [{"delta": {"content": "Grüße"}}]}\r\n\r\n'
        ": a comment\n\n"
        'data: {"choices": [], "usage": {"prompt_tokens": 1}}\n\n'
        "data: [DONE]\n\n"
        'data: {"after": "done"}\n\n'
    ).encode()
    reader = ChunkReader()
    chunks = [chunk for i in range(len(raw)) for chunk in reader.feed(raw[i : i + 1])]
    assert chunks == [
        {"choices": [{"delta": {"content": "Grüße"}}]},
        {"choices": [], "usage": {"prompt_tokens": 1}},
    ]
    assert reader.done


def test_a_last_event_without_a_blank_line_is_read_at_the_close() -> None:
    reader = ChunkReader()
    assert reader.feed(b'data: {"a": 1}') == []
    assert reader.close() == [{"a": 1}]
    assert not reader.done


def test_malformed_json_in_the_stream_is_a_model_error() -> None:
    with pytest.raises(ModelResponseError):
        ChunkReader().feed(b"data: {nope\n\n")


# --- the response store ------------------------------------------------------------------------


CONVERSATION = [{"role": "user", "content": "Hi?"}]


def test_the_store_keeps_a_conversation_and_its_answer() -> None:
    store = ResponseStore(ttl_s=10)
    store.keep("resp_1", CONVERSATION, "Hello.", now=0)
    kept = store.conversation("resp_1", now=9.9)
    assert kept == [*CONVERSATION, {"role": "assistant", "content": "Hello."}]
    assert kept is not None
    kept.append({"role": "user", "content": "changed"})  # a caller's copy
    assert len(store.conversation("resp_1", now=9.9) or []) == 2
    assert store.conversation("resp_2", now=1) is None


def test_the_store_forgets_after_its_time_to_live() -> None:
    store = ResponseStore(ttl_s=10)
    store.keep("resp_1", CONVERSATION, "Hello.", now=0)
    store.keep("resp_2", CONVERSATION, "Hello.", now=5)
    assert store.conversation("resp_1", now=10) is None
    assert store.conversation("resp_2", now=10) is not None
    assert len(store) == 1


def test_the_store_drops_the_oldest_over_its_count() -> None:
    store = ResponseStore(ttl_s=100, max_entries=2)
    for i in range(3):
        store.keep(f"resp_{i}", CONVERSATION, "a", now=i)
    assert store.conversation("resp_0", now=3) is None
    assert store.conversation("resp_1", now=3) is not None
    assert store.conversation("resp_2", now=3) is not None


def test_the_store_drops_the_oldest_over_its_bytes_and_never_keeps_what_cannot_fit() -> None:
    store = ResponseStore(ttl_s=100, max_bytes=1000)
    store.keep("resp_a", CONVERSATION, "x" * 300, now=0)
    store.keep("resp_b", CONVERSATION, "y" * 300, now=1)
    assert store.kept_bytes <= 1000
    assert store.conversation("resp_a", now=2) is None
    assert store.conversation("resp_b", now=2) is not None
    store.keep("resp_huge", CONVERSATION, "z" * 2000, now=3)
    assert store.conversation("resp_huge", now=3) is None
    assert store.conversation("resp_b", now=3) is not None  # nothing was evicted for it


def test_keeping_an_id_again_replaces_it() -> None:
    store = ResponseStore(ttl_s=100)
    store.keep("resp_1", CONVERSATION, "first", now=0)
    store.keep("resp_1", CONVERSATION, "second", now=1)
    assert len(store) == 1
    assert (store.conversation("resp_1", now=1) or [])[-1]["content"] == "second"
