"""`POST /v1/messages` (Anthropic's Messages API) through the gateway's app, in process: the fake Kafka link
of test_gateway_app stands in for Fusion and a MockTransport for the providers. Bodies and events are
checked against the official `anthropic` SDK's types, and the SDK itself talks to the app."""

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from anthropic import AsyncAnthropic, AuthenticationError, BadRequestError, NotFoundError
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from fusion.catalog import Catalog, load_catalog
from fusion.gateway import app as gateway_app
from fusion_contracts import ChatMessage, FusionRequest
from pydantic import TypeAdapter

from tests.component.support import eventually
from tests.component.test_gateway_app import (
    ANSWER,
    OVERLAY,
    Harness,
    answered,
    harness,
    stream_of,
    upstream_reply,
)

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
KEY = "s3cret-gateway-key"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path: Path = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    path.write_text(OVERLAY, encoding="utf-8")
    return load_catalog(path)


def ask(question: str = "Why is the sky blue?", model: str = "fusion", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 300, "messages": [{"role": "user", "content": question}], **extra}


async def post(h: Harness, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await h.client.post("/v1/messages", json=body, headers=headers)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error of an Anthropic-shaped error body, which the SDK's own type accepts."""
    body = response.json()
    ErrorResponse.model_validate(body)
    assert body["type"] == "error"
    assert set(body) <= {"type", "error", "fusion"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message"}
    return error


def events(response: httpx.Response) -> list[dict[str, Any]]:
    """The events' data, after checking each `event:` line names its data's type and that the SDK's
    types accept every event but ping and error."""
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = []
    for block in filter(None, response.text.split("\n\n")):
        name, payload = block.split("\n")
        one = json.loads(payload.removeprefix("data: "))
        assert name == f"event: {one['type']}"
        if one["type"] not in {"ping", "error"}:
            STREAM_EVENT.validate_python(one)
        data.append(one)
    return data


def kinds(data: list[dict[str, Any]]) -> list[str]:
    return [one["type"] for one in data]


def text_of(data: list[dict[str, Any]]) -> str:
    return "".join(one["delta"]["text"] for one in data if one["type"] == "content_block_delta")


def sdk(h: Harness, **options: Any) -> AsyncAnthropic:
    transport = httpx2.ASGITransport(app=h.app)
    client = httpx2.AsyncClient(transport=transport, base_url="http://gateway.test")
    return AsyncAnthropic(
        api_key=options.pop("api_key", "unused"),
        base_url="http://gateway.test",
        http_client=client,
        max_retries=0,
        **options,
    )


# --- fusions -----------------------------------------------------------------------------------


async def test_a_fused_message(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await post(
            h,
            ask(model="fusion/solo", system="Be brief.", temperature=0.5, metadata={"user_id": "u-1"}),
        )

    assert response.status_code == 200
    body = response.json()
    Message.model_validate(body)
    [request] = h.link.submitted
    assert {key: value for key, value in body.items() if key != "fusion"} == {
        "id": f"msg_{request.request_id}",
        "type": "message",
        "role": "assistant",
        "model": "fusion/solo",
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 12},
    }
    assert body["fusion"]["status"] == "complete"
    assert body["fusion"]["request_id"] == request.request_id
    assert request.preset == "solo"
    assert request.messages == [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Why is the sky blue?"),
    ]
    assert request.judge is not None
    assert (request.judge.temperature, request.judge.max_tokens) == (0.5, 300)
    assert request.stream is False
    assert h.link.forgotten == [request.request_id]
    assert h.gateway.in_flight == 0


async def test_a_conversation_keeps_its_earlier_turns_and_the_fusion_object(catalog: Catalog) -> None:
    body = ask(
        system=[{"type": "text", "text": "Be brief."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is Kafka?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A log."}]},
            {"role": "user", "content": "And a topic?"},
        ],
        fusion={"panel": ["alpha", {"model": "beta", "temperature": 0.9}], "judge": "alpha", "quorum": 1},
    )
    async with harness(catalog) as h:
        response = await post(h, body)

    assert response.status_code == 200
    [request] = h.link.submitted
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "What is Kafka?"),
        ("assistant", "A log."),
        ("user", "And a topic?"),
    ]
    assert request.panel is not None
    assert [(m.model, m.temperature) for m in request.panel] == [("alpha", None), ("beta", 0.9)]
    assert request.judge is not None
    assert request.judge.model == "alpha"
    assert request.policy.quorum == 1


async def test_a_streamed_fusion_sends_anthropics_events_in_order(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(
            request, (0, "The fused "), (1, "answer: "), (1, "answer: "), (2, "Rayleigh scattering.")
        )
        response = await post(h, ask(stream=True))

    data = events(response)
    [request] = h.link.submitted
    assert request.stream is True
    assert response.headers["cache-control"] == "no-cache"
    assert kinds(data) == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert data[0]["message"]["id"] == f"msg_{request.request_id}"
    assert data[0]["message"]["model"] == "fusion"
    assert text_of(data) == ANSWER  # the redelivered chunk is dropped
    end = data[-2]
    assert end["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert end["usage"] == {"input_tokens": 30, "output_tokens": 12}
    assert end["fusion"]["status"] == "complete"
    assert h.link.forgotten == [request.request_id]
    assert h.gateway.in_flight == 0


async def test_a_result_longer_than_the_stream_sends_the_rest(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(request, (0, "The fused "))
        response = await post(h, ask(stream=True))
    assert text_of(events(response)) == ANSWER


async def test_a_failed_streamed_fusion_ends_with_an_error_event(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.respond = lambda request: answered(request, None, "failed", "no member answered")
        response = await post(h, ask(stream=True))

    data = events(response)
    assert kinds(data) == ["message_start", "content_block_start", "ping", "error"]
    error = data[-1]
    ErrorResponse.model_validate(error)
    assert error["error"] == {"type": "api_error", "message": "no member answered"}
    assert error["fusion"]["status"] == "failed"
    assert h.gateway.in_flight == 0


async def test_a_stream_past_its_deadline_pings_then_ends_with_a_timeout_error(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "WAIT_MARGIN_S", 0.0)
    monkeypatch.setattr(gateway_app, "KEEPALIVE_S", 0.02)
    async with harness(catalog) as h:
        h.link.respond = lambda _: None
        response = await asyncio.wait_for(post(h, ask(stream=True, fusion={"deadline_s": 0.15})), 5)

    data = events(response)
    assert kinds(data).count("ping") > 2
    assert data[-1]["error"]["type"] == "timeout_error"
    [request] = h.link.submitted
    assert h.link.forgotten == [request.request_id]
    assert h.gateway.in_flight == 0


async def test_a_streamed_message_holds_its_slot_until_it_ends(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_in_flight=1) as h:
        h.link.hold = asyncio.Event()
        streaming = asyncio.create_task(post(h, ask(stream=True)))
        await eventually(lambda: len(h.link.submitted) == 1)
        refused = await post(h, ask())
        h.link.hold.set()
        streamed = await streaming
        after = await post(h, ask())

    assert refused.status_code == 429
    assert error_of(refused)["type"] == "rate_limit_error"
    assert text_of(events(streamed)) == ANSWER
    assert after.status_code == 200
    assert h.gateway.in_flight == 0


# --- pass-through ------------------------------------------------------------------------------


async def test_a_catalog_model_is_passed_through_and_its_reply_converted(catalog: Catalog) -> None:
    body = ask(
        "direct",
        model="alpha",
        system="Be brief.",
        temperature=0.1,
        top_p=0.8,
        top_k=40,
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
    )
    async with harness(catalog) as h:
        response = await post(h, body)

    assert response.status_code == 200
    message = response.json()
    Message.model_validate(message)
    assert message["id"].startswith("msg_")
    assert message["model"] == "alpha"
    assert message["content"] == [{"type": "text", "text": "Direct answer."}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 3}
    assert "fusion" not in message
    [sent] = h.provider.bodies()
    assert str(h.provider.requests[0].url) == "http://provider.test/v1/chat/completions"
    assert sent == {
        "model": "vendor/alpha",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "direct"}],
        "max_tokens": 300,
        "temperature": 0.1,
        "top_p": 0.8,
        "stop": ["END"],
        "stream": False,
    }
    assert h.link.submitted == []


@pytest.mark.parametrize(
    ("choice", "stop"),
    [
        ({"finish_reason": "length"}, ["max_tokens", None]),
        ({"finish_reason": "stop", "stop_reason": "END"}, ["stop_sequence", "END"]),
    ],
)
async def test_the_providers_stop_reason_is_kept(
    catalog: Catalog, choice: dict[str, Any], stop: list[str | None]
) -> None:
    reply = upstream_reply("Cut")
    reply["choices"][0].update(choice)
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(200, json=reply)
        response = await post(h, ask(model="alpha", stop_sequences=["END"]))
    assert [response.json()["stop_reason"], response.json()["stop_sequence"]] == stop


def openai_stream(*pieces: str, finish: str = "stop") -> bytes:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    chunks += [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
    chunks += [{"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}]
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


async def test_a_streamed_pass_through_becomes_anthropics_events(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=openai_stream("Streamed ", "straight.", finish="length"),
        )
        response = await post(h, ask("direct", model="beta", stream=True))

    data = events(response)
    assert kinds(data) == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert data[0]["message"]["model"] == "beta"
    assert text_of(data) == "Streamed straight."
    assert data[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert data[-2]["usage"] == {"input_tokens": 9, "output_tokens": 4}
    [sent] = h.provider.bodies()
    assert sent["model"] == "vendor/beta"
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert h.gateway.in_flight == 0


async def test_a_provider_error_in_the_stream_is_an_error_event(catalog: Catalog) -> None:
    raw = b'data: {"choices": [{"index": 0, "delta": {"content": "Hal"}}]}\n\n'
    raw += b'data: {"error": {"message": "the model crashed"}}\n\n'
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=raw
        )
        response = await post(h, ask(model="alpha", stream=True))

    data = events(response)
    assert kinds(data)[-2:] == ["content_block_delta", "error"]
    assert data[-1]["error"]["type"] == "api_error"
    assert "the model crashed" in data[-1]["error"]["message"]
    assert h.gateway.in_flight == 0


# --- errors ------------------------------------------------------------------------------------


async def test_max_tokens_missing_is_a_400_as_anthropic_answers_it(catalog: Catalog) -> None:
    body = ask()
    del body["max_tokens"]
    async with harness(catalog) as h:
        response = await post(h, body)

    assert response.status_code == 400
    assert error_of(response) == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    assert h.link.submitted == []


@pytest.mark.parametrize(
    ("block", "stream"),
    [
        ({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, False),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}, True),
        ({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}, False),
        ({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}, False),
        ({"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}, True),
    ],
)
@pytest.mark.parametrize("model", ["fusion", "alpha"])
async def test_content_other_than_text_is_a_clear_400(
    catalog: Catalog, block: dict[str, Any], stream: bool, model: str
) -> None:
    body = ask(model=model, stream=stream)
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "See:"}, block]}]
    async with harness(catalog) as h:
        response = await post(h, body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert f"messages[0].content[1]: '{block['type']}' content blocks are not supported" in error["message"]
    assert h.link.submitted == []
    assert h.provider.requests == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"tools": [{"name": "f", "input_schema": {"type": "object"}}]}, "tools are not supported"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": []}, "messages: List should have at least 1 item"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"model": "fusion/nope"}, "unknown preset 'nope'"),
        ({"fusion": {"quorom": 2}}, "fusion.quorom"),
        ({"fusion": {"panel": ["alpha", "nope"]}}, "unknown model 'nope'"),
    ],
)
async def test_a_request_that_cannot_run_is_a_400(
    catalog: Catalog, change: dict[str, Any], fragment: str
) -> None:
    async with harness(catalog) as h:
        response = await post(h, {**ask(), **change})

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert h.link.submitted == []


async def test_a_body_that_is_not_json_is_a_400(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.client.post(
            "/v1/messages", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
async def test_an_unknown_model_is_a_404(catalog: Catalog, stream: bool) -> None:
    async with harness(catalog) as h:
        response = await post(h, ask(model="claude-17", stream=stream))

    assert response.status_code == 404
    error = error_of(response)
    assert error["type"] == "not_found_error"
    assert "unknown model 'claude-17'" in error["message"]


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        ("failed", None, "api_error"),
        ("failed", "rate_limited", "rate_limit_error"),
        ("failed", "deadline", "timeout_error"),
        ("rejected", "budget_exceeded", "invalid_request_error"),
    ],
)
async def test_a_fusion_without_an_answer_keeps_its_status(
    catalog: Catalog, status: Any, reason: str | None, kind: str
) -> None:
    def respond(request: FusionRequest) -> Any:
        failed = answered(request, None, status, "no answer, and why")
        return failed.model_copy(update={"failure_reason": reason})

    expected: dict[str, dict[str | None, int]] = {
        "failed": {None: 502, "rate_limited": 429, "deadline": 504},
        "rejected": {"budget_exceeded": 400},
    }
    async with harness(catalog) as h:
        h.link.respond = respond
        response = await post(h, ask())

    assert response.status_code == expected[status][reason]
    assert error_of(response) == {"type": kind, "message": "no answer, and why"}
    assert ("fusion" in response.json()) is (status == "failed")


async def test_no_result_by_the_deadline_is_a_504_timeout_error(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "WAIT_MARGIN_S", 0.0)
    async with harness(catalog) as h:
        h.link.respond = lambda _: None
        response = await asyncio.wait_for(post(h, ask(fusion={"deadline_s": 0.05})), 5)

    assert response.status_code == 504
    assert error_of(response)["type"] == "timeout_error"
    assert h.gateway.in_flight == 0


async def test_over_the_in_flight_limit_is_a_429(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_in_flight=1) as h:
        with h.gateway.admitted():
            plain, streamed = await post(h, ask()), await post(h, ask(model="alpha", stream=True))

    for response in (plain, streamed):
        assert response.status_code == 429
        assert error_of(response)["type"] == "rate_limit_error"
    assert h.link.submitted == []
    assert h.provider.requests == []


async def test_a_draining_gateway_is_a_503_overloaded_error(catalog: Catalog) -> None:
    async with harness(catalog, gateway_drain_s=30) as h:
        h.gateway.begin_drain()
        response = await post(h, ask())

    assert response.status_code == 503
    error = error_of(response)
    assert error["type"] == "overloaded_error"
    assert "shutting down" in error["message"]


async def test_a_provider_without_its_key_is_a_503_api_error(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUSION_GATEWAY_COMPONENT_TEST_UNSET_KEY", raising=False)
    async with harness(catalog) as h:
        response = await post(h, ask(model="locked"))

    assert response.status_code == 503
    error = error_of(response)
    assert error["type"] == "api_error"
    assert "FUSION_GATEWAY_COMPONENT_TEST_UNSET_KEY" in error["message"]


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "invalid_request_error"), (500, "api_error"), (503, "overloaded_error")]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_error_keeps_its_status(
    catalog: Catalog, status: int, kind: str, stream: bool
) -> None:
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(status, json={"error": {"message": "upstream says no"}})
        response = await post(h, ask(model="alpha", stream=stream))

    assert response.status_code == status
    assert error_of(response)["type"] == kind
    assert h.gateway.in_flight == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_timeout_is_a_504(catalog: Catalog, stream: bool) -> None:
    def timeout(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow")

    async with harness(catalog) as h:
        h.provider.default = timeout
        response = await post(h, ask(model="alpha", stream=stream))

    assert response.status_code == 504
    assert error_of(response)["type"] == "timeout_error"


async def test_a_call_from_a_fusion_service_is_a_403(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await post(h, ask(), **{"X-Fusion-Caller": "panel-worker"})

    assert response.status_code == 403
    assert error_of(response)["type"] == "permission_error"
    assert h.link.submitted == []


async def test_errors_are_counted_in_the_metrics(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        await post(h, ask(model="claude-17"))
        await post(h, ask())
        metrics = (await h.client.get("/metrics")).text
    assert 'fusion_gateway_errors_total{status="404"} 1.0' in metrics
    assert 'fusion_gateway_requests_total{kind="fusion",stream="false"} 1.0' in metrics


# --- the gateway's key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}, {"Authorization": "Bearer wrong", "x-api-key": KEY}],
)
async def test_a_missing_or_wrong_key_is_a_401(catalog: Catalog, headers: dict[str, str]) -> None:
    async with harness(catalog, gateway_api_key=KEY) as h:
        response = await post(h, ask(), **headers)

    assert response.status_code == 401
    error = error_of(response)
    assert error["type"] == "authentication_error"
    assert "x-api-key" in error["message"]
    assert "s3cret" not in response.text
    assert h.link.submitted == []


@pytest.mark.parametrize(
    "headers", [{"x-api-key": KEY}, {"X-Api-Key": KEY}, {"Authorization": f"Bearer {KEY}"}]
)
async def test_the_key_is_let_in_as_x_api_key_or_as_a_bearer_token(
    catalog: Catalog, headers: dict[str, str]
) -> None:
    async with harness(catalog, gateway_api_key=KEY) as h:
        plain = await post(h, ask(), **headers)
        streamed = await post(h, ask(stream=True), **headers)

    assert plain.status_code == 200
    assert plain.json()["content"][0]["text"] == ANSWER
    assert text_of(events(streamed)) == ANSWER


async def test_without_a_configured_key_an_x_api_key_is_not_needed(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await post(h, ask(), **{"x-api-key": "anything"})
    assert response.status_code == 200


# --- the official SDK --------------------------------------------------------------------------


async def test_the_sdk_creates_and_streams_messages(catalog: Catalog) -> None:
    async with harness(catalog, gateway_api_key=KEY) as h:
        h.link.chunks = lambda request: stream_of(request, (0, "The fused "), (1, "answer: "))
        client = sdk(h, api_key=KEY)
        created = await client.messages.create(
            model="fusion",
            max_tokens=200,
            system="Be brief.",
            messages=[{"role": "user", "content": "Why is the sky blue?"}],
            extra_body={"fusion": {"panel": ["alpha", "beta"]}},
        )
        h.provider.default = lambda _: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=openai_stream("Stre", "amed.")
        )
        pieces: list[str] = []
        async with client.messages.stream(
            model="alpha", max_tokens=50, messages=[{"role": "user", "content": "direct"}]
        ) as stream:
            async for text in stream.text_stream:
                pieces.append(text)
            final = await stream.get_final_message()
        raw = await client.messages.create(
            model="beta", max_tokens=50, messages=[{"role": "user", "content": "x"}], stream=True
        )
        raw_kinds = [event.type async for event in raw]

    assert created.content[0].type == "text"
    assert created.content[0].text == ANSWER
    assert created.stop_reason == "end_turn"
    assert created.usage.input_tokens == 30
    assert (created.model_extra or {})["fusion"]["status"] == "complete"
    assert [member.model for member in h.link.submitted[0].panel or []] == ["alpha", "beta"]
    assert pieces == ["Stre", "amed."]
    assert final.content[0].type == "text"
    assert final.content[0].text == "Streamed."
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 4)
    assert raw_kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_the_sdk_raises_its_own_errors(catalog: Catalog) -> None:
    async with harness(catalog, gateway_api_key=KEY) as h:
        with pytest.raises(AuthenticationError) as unauthorized:
            await sdk(h, api_key="wrong").messages.create(
                model="fusion", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        client = sdk(h, api_key=KEY)
        with pytest.raises(NotFoundError):
            await client.messages.create(
                model="claude-17", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(BadRequestError, match="'image' content blocks are not supported"):
            await client.messages.create(
                model="fusion",
                max_tokens=10,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
                        ],
                    }
                ],
            )
    assert unauthorized.value.status_code == 401
