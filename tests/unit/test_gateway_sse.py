"""fusion.gateway.sse: OpenAI's server-sent events, and a finished completion replayed as a stream."""

import json
from typing import Any

from fusion.gateway.sse import completion_as_sse, sse

CALLS = [
    {"id": "call-1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call-2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
]


def a_completion(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-7",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "tool-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        **extra,
    }


async def events(completion: dict[str, Any]) -> list[str]:
    return [event async for event in completion_as_sse(completion)]


def payloads(raw: list[str]) -> list[dict[str, Any]]:
    assert raw[-1] == "data: [DONE]\n\n"
    decoded = []
    for event in raw[:-1]:
        assert event.startswith("data: ")
        assert event.endswith("\n\n")
        decoded.append(json.loads(event.removeprefix("data: ")))
    return decoded


def test_sse_is_one_data_line_and_a_blank_line() -> None:
    event = sse({"a": "café", "b": [1, 2]})
    assert event == 'data: {"a": "café", "b": [1, 2]}\n\n'
    assert json.loads(event.removeprefix("data: ")) == {"a": "café", "b": [1, 2]}


def test_sse_keeps_newlines_inside_one_data_line() -> None:
    event = sse({"content": "line one\nline two"})
    assert event.count("\n") == 2  # only the terminator: the newline in the text is escaped
    assert json.loads(event.removeprefix("data: "))["content"] == "line one\nline two"


async def test_a_text_completion_streams_role_content_then_finish_with_usage_and_fusion() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    fusion = {"tool_calls": [{"tool_call_id": "c", "request_id": "r", "status": "complete"}]}
    chunks = payloads(
        await events(
            a_completion({"role": "assistant", "content": "Hello there."}, usage=usage, fusion=fusion)
        )
    )

    assert [chunk["choices"][0]["delta"] for chunk in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello there."},
        {},
    ]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None, None, "stop"]
    for chunk in chunks:
        assert chunk["id"] == "chatcmpl-7"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == 1_700_000_000
        assert chunk["model"] == "tool-model"
        assert chunk["choices"][0]["index"] == 0
    assert chunks[-1]["usage"] == usage
    assert chunks[-1]["fusion"] == fusion
    assert "usage" not in chunks[0]
    assert "usage" not in chunks[1]


async def test_tool_calls_are_streamed_with_their_index() -> None:
    chunks = payloads(
        await events(a_completion({"role": "assistant", "content": None, "tool_calls": CALLS}, "tool_calls"))
    )

    assert len(chunks) == 3  # role, tool calls, finish: no empty content event
    assert chunks[1]["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, **CALLS[0]}, {"index": 1, **CALLS[1]}]
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_content_and_tool_calls_both_stream_in_order() -> None:
    chunks = payloads(
        await events(a_completion({"role": "assistant", "content": "Let me check.", "tool_calls": CALLS[:1]}))
    )
    assert [list(chunk["choices"][0]["delta"]) for chunk in chunks] == [
        ["role", "content"],
        ["content"],
        ["tool_calls"],
        [],
    ]


async def test_without_usage_or_fusion_the_finish_has_neither() -> None:
    chunks = payloads(await events(a_completion({"role": "assistant", "content": "x"})))
    assert "usage" not in chunks[-1]
    assert "fusion" not in chunks[-1]


async def test_an_empty_completion_still_ends_with_stop_and_done() -> None:
    chunks = payloads(await events({}))
    assert [chunk["choices"][0]["delta"] for chunk in chunks] == [{"role": "assistant", "content": ""}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
