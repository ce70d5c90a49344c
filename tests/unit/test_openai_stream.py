"""fusion.models.openai_compat: streamed completions and the gateway's pass-through, over MockTransport."""

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fusion.models import ModelCall, ModelError, ModelHTTPError, ModelResponseError
from fusion.models.http import Endpoint
from fusion.models.openai_compat import OpenAICompatModel
from fusion_contracts import ChatMessage, Usage

MESSAGES = [ChatMessage(role="user", content="Why is the sky blue?")]
SSE_HEADERS = {"content-type": "text/event-stream"}

Handler = Callable[[httpx.Request], httpx.Response]


def delta_chunk(text: str | None, role: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if text is not None:
        delta["content"] = text
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


USAGE_CHUNK = {
    "id": "chatcmpl-s",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25},
}


def sse_body(*events: dict[str, Any] | str, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(event) if isinstance(event, dict) else event}\n\n" for event in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


class Recorder:
    def __init__(self, respond: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self._respond = respond

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._respond(request)

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[-1].content)
        return data


def adapter(recorder: Recorder) -> OpenAICompatModel:
    endpoint = Endpoint("http://provider.test/v1/", httpx.MockTransport(recorder))
    return OpenAICompatModel(endpoint, "prov")


def streaming(content: bytes | AsyncIterator[bytes], status: int = 200) -> Recorder:
    return Recorder(lambda _: httpx.Response(status, headers=SSE_HEADERS, content=content))


class Deltas:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def __call__(self, delta: str) -> None:
        self.received.append(delta)


# --- complete(call, on_delta=...) --------------------------------------------------------------


async def test_deltas_arrive_in_order_and_the_reply_is_their_join() -> None:
    recorder = streaming(
        sse_body(
            delta_chunk("", role="assistant"),
            delta_chunk("Blue light "),
            delta_chunk("scatters "),
            delta_chunk(None),
            delta_chunk("more."),
            USAGE_CHUNK,
        )
    )
    deltas = Deltas()

    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES, temperature=0.2), on_delta=deltas)

    assert deltas.received == ["Blue light ", "scatters ", "more."]  # empty deltas are not passed on
    assert reply.text == "Blue light scatters more."
    assert reply.usage == Usage(input_tokens=21, output_tokens=4)


async def test_the_streamed_request_asks_for_a_stream_with_usage() -> None:
    recorder = streaming(sse_body(delta_chunk("x")))
    await adapter(recorder).complete(ModelCall("m-1", MESSAGES, max_tokens=9), on_delta=Deltas())

    body = recorder.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "m-1"
    assert body["max_tokens"] == 9
    assert body["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert str(recorder.requests[0].url) == "http://provider.test/v1/chat/completions"


async def test_no_usage_chunk_counts_zero() -> None:
    recorder = streaming(sse_body(delta_chunk("Hi")))
    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())
    assert reply.text == "Hi"
    assert reply.usage == Usage()


async def test_usage_on_the_last_content_chunk_is_read() -> None:
    last = {**delta_chunk("end"), "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    recorder = streaming(sse_body(delta_chunk("the "), last))
    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())
    assert reply.text == "the end"
    assert reply.usage == Usage(input_tokens=3, output_tokens=1)


async def test_comments_other_fields_and_anything_after_done_are_ignored() -> None:
    body = (
        b": keep-alive\n\n"
        b"event: message\n" + sse_body(delta_chunk("kept"), done=True) + b"data: not even json\n\n"
    )
    deltas = Deltas()
    reply = await adapter(streaming(body)).complete(ModelCall("m-1", MESSAGES), on_delta=deltas)
    assert deltas.received == ["kept"]
    assert reply.text == "kept"


async def test_data_without_a_space_after_the_colon_is_read() -> None:
    body = f"data:{json.dumps(delta_chunk('tight'))}\n\ndata:[DONE]\n\n".encode()
    reply = await adapter(streaming(body)).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())
    assert reply.text == "tight"


async def test_a_stream_that_ends_without_done_keeps_what_came() -> None:
    recorder = streaming(sse_body(delta_chunk("cut "), delta_chunk("short"), done=False))
    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())
    assert reply.text == "cut short"


async def test_events_split_across_network_reads_are_reassembled() -> None:
    whole = sse_body(delta_chunk("Ray"), delta_chunk("leigh"), USAGE_CHUNK)

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(whole), 7):
            yield whole[start : start + 7]

    deltas = Deltas()
    reply = await adapter(streaming(trickle())).complete(ModelCall("m-1", MESSAGES), on_delta=deltas)
    assert deltas.received == ["Ray", "leigh"]
    assert reply.usage == Usage(input_tokens=21, output_tokens=4)


async def test_http_500_on_a_streamed_call_is_an_http_error_before_any_delta() -> None:
    recorder = Recorder(lambda _: httpx.Response(500, json={"error": {"message": "overloaded"}}))
    deltas = Deltas()
    with pytest.raises(ModelHTTPError) as caught:
        await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=deltas)
    assert caught.value.status_code == 500
    assert "overloaded" in str(caught.value)
    assert deltas.received == []


async def test_http_429_on_a_streamed_call_carries_retry_after() -> None:
    recorder = Recorder(lambda _: httpx.Response(429, headers={"Retry-After": "3"}, text="slow down"))
    with pytest.raises(ModelHTTPError) as caught:
        await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())
    assert caught.value.status_code == 429
    assert caught.value.retry_after_s == 3.0


async def test_a_malformed_json_chunk_is_a_response_error() -> None:
    recorder = streaming(sse_body(delta_chunk("fine "), '{"choices": ['))
    deltas = Deltas()
    with pytest.raises(ModelResponseError, match="malformed JSON"):
        await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=deltas)
    assert deltas.received == ["fine "]


@pytest.mark.parametrize("chunk", ["[1, 2]", '"text"', "42", "null"])
async def test_a_chunk_that_is_not_an_object_is_a_response_error(chunk: str) -> None:
    with pytest.raises(ModelResponseError, match="not an object"):
        await adapter(streaming(sse_body(chunk))).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": [{"delta": "text"}]},
        {"choices": ["text"]},
        {"choices": [{"delta": {"content": 5}}]},
        {"usage": "n/a", "choices": []},
    ],
)
async def test_odd_but_well_formed_chunks_carry_no_text(chunk: dict[str, Any]) -> None:
    recorder = streaming(sse_body(chunk, delta_chunk("ok")))
    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())
    assert reply.text == "ok"
    assert reply.usage == Usage()


@pytest.mark.parametrize(
    "chunk", [{"choices": 5}, {"choices": {"index": 0}}, {"choices": True}], ids=["int", "object", "bool"]
)
async def test_a_chunk_with_unusable_choices_is_a_model_error_never_a_raw_exception(
    chunk: dict[str, Any],
) -> None:
    # Callers (the judge above all) handle ModelError and TimeoutError only; a raw TypeError or
    # KeyError from a provider's odd chunk would escape them. Skipping the chunk is fine too.
    recorder = streaming(sse_body(chunk, delta_chunk("ok")))
    try:
        reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES), on_delta=Deltas())
    except ModelError:
        return
    assert reply.text == "ok"


async def test_a_connection_failure_while_streaming_is_a_model_error() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield sse_body(delta_chunk("half "), done=False)
        raise httpx.ReadError("connection reset")

    deltas = Deltas()
    with pytest.raises(ModelError):
        await adapter(streaming(broken())).complete(ModelCall("m-1", MESSAGES), on_delta=deltas)
    assert deltas.received == ["half "]


async def test_without_on_delta_the_call_is_not_streamed() -> None:
    completion = {"choices": [{"message": {"role": "assistant", "content": "whole"}}]}
    recorder = Recorder(lambda _: httpx.Response(200, json=completion))
    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES))
    assert reply.text == "whole"
    assert recorder.body["stream"] is False
    assert "stream_options" not in recorder.body


# --- passthrough() -----------------------------------------------------------------------------

UPSTREAM = {
    "id": "chatcmpl-up",
    "object": "chat.completion",
    "model": "vendor/model-x",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "fusion", "arguments": "{}"}}
                ],
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "cost": 0.0001},
}


async def test_passthrough_returns_the_provider_json_as_is() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json=UPSTREAM))
    body = {
        "model": "vendor/model-x",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "fusion"}}],
        "logit_bias": {"50256": -100},
    }

    reply = await adapter(recorder).passthrough(body)

    assert reply == UPSTREAM
    assert recorder.body == {**body, "stream": False}


async def test_passthrough_never_streams_even_when_asked() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json=UPSTREAM))
    await adapter(recorder).passthrough({"model": "m", "messages": [], "stream": True})
    assert recorder.body["stream"] is False


@pytest.mark.parametrize("status", [400, 401, 404, 422, 429])
async def test_passthrough_maps_4xx_to_an_http_error_with_its_status(status: int) -> None:
    recorder = Recorder(lambda _: httpx.Response(status, json={"error": {"message": "no such thing"}}))
    with pytest.raises(ModelHTTPError) as caught:
        await adapter(recorder).passthrough({"model": "m", "messages": []})
    assert caught.value.status_code == status
    assert "no such thing" in str(caught.value)


@pytest.mark.parametrize(("content", "match"), [(b"<html>", "malformed JSON"), (b"[1]", "not an object")])
async def test_passthrough_of_an_unusable_body_is_a_response_error(content: bytes, match: str) -> None:
    recorder = Recorder(lambda _: httpx.Response(200, content=content))
    with pytest.raises(ModelResponseError, match=match):
        await adapter(recorder).passthrough({"model": "m", "messages": []})


# --- passthrough_stream() ----------------------------------------------------------------------


async def test_passthrough_stream_yields_the_raw_bytes() -> None:
    raw = (
        sse_body(delta_chunk("", role="assistant"), delta_chunk("Hé"), USAGE_CHUNK)
        + b": trailing comment\n\n"
    )

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 50):
            yield raw[start : start + 50]

    recorder = streaming(pieces())
    body = {"model": "vendor/x", "messages": [{"role": "user", "content": "hi"}], "stream_options": {"a": 1}}

    received = [piece async for piece in adapter(recorder).passthrough_stream(body)]

    assert b"".join(received) == raw
    assert recorder.body == {**body, "stream": True}


async def test_passthrough_stream_maps_an_error_status_before_any_byte() -> None:
    recorder = Recorder(lambda _: httpx.Response(401, json={"error": {"message": "bad key"}}))
    stream = adapter(recorder).passthrough_stream({"model": "m", "messages": []})
    with pytest.raises(ModelHTTPError) as caught:
        await anext(stream)
    assert caught.value.status_code == 401
    assert "bad key" in str(caught.value)


async def test_passthrough_stream_timeout_is_a_timeout_error() -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    stream = adapter(Recorder(stall)).passthrough_stream({"model": "m", "messages": []})
    with pytest.raises(TimeoutError):
        await anext(stream)
