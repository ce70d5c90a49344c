"""`POST /v1/responses` through the gateway's app over httpx.ASGITransport, without Kafka: the fake link
of tests/component/test_gateway_app.py stands in for Fusion and a MockTransport for the providers."""

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fusion.catalog import Catalog, load_catalog
from fusion.gateway import app as gateway_app
from fusion_contracts import (
    AnswerChunk,
    ChatMessage,
    FusedResult,
    FusionProgress,
    FusionRequest,
    MemberOutcome,
)
from fusion_contracts.result import Analysis

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


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path: Path = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    path.write_text(OVERLAY, encoding="utf-8")
    return load_catalog(path)


async def respond(h: Harness, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await h.client.post("/v1/responses", json=body, headers=headers)


def ask(question: str = "Why is the sky blue?", model: str = "fusion", **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": question, **extra}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The events' payloads, after checking each names its type and the numbering has no gap."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = []
    for block in response.text.split("\n\n"):
        if not block or block.startswith(":"):
            continue
        kind, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {payload['type']}"
        payloads.append(payload)
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    return payloads


def kinds(payloads: list[dict[str, Any]]) -> list[str]:
    return [payload["type"] for payload in payloads]


def text_of(payloads: list[dict[str, Any]]) -> str:
    return "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta")


OPENING = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
FUSION_OPENING = [  # the openrouter:fusion item, then the message
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.added",
    "response.content_part.added",
    "response.fusion_call.in_progress",
]
CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


# --- fusion ------------------------------------------------------------------------------------


async def test_a_fused_response(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await respond(
            h,
            ask(
                model="fusion/solo",
                instructions="Be brief.",
                temperature=0.4,
                max_output_tokens=99,
                metadata={"a": "b"},
            ),
        )

    assert response.status_code == 200, response.text
    body = response.json()
    [request] = h.link.submitted
    assert body["id"] == f"resp_{request.request_id}"
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["model"] == "fusion/solo"
    assert body["instructions"] == "Be brief."
    assert body["metadata"] == {"a": "b"}
    fusion_item, message = body["output"]  # the panel's work ahead of the answer, as on OpenRouter
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []}]
    assert fusion_item["type"] == "openrouter:fusion"
    assert fusion_item["status"] == "completed"
    assert fusion_item["responses"] == [{"model": "alpha", "content": ""}]
    usage = body["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (30, 12, 42)
    assert body["fusion"]["request_id"] == request.request_id
    assert body["fusion"]["status"] == "complete"
    assert request.preset == "solo"
    assert request.stream is False
    assert request.messages == [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Why is the sky blue?"),
    ]
    assert request.judge is not None
    assert (request.judge.temperature, request.judge.max_tokens) == (0.4, 99)
    assert h.link.forgotten == [request.request_id]
    assert h.gateway.in_flight == 0


async def test_message_items_and_the_fusion_object(catalog: Catalog) -> None:
    items = [
        {"role": "developer", "content": "Cite sources."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is Kafka?"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A log."}]},
        {"role": "user", "content": "And a topic?"},
    ]
    async with harness(catalog) as h:
        response = await respond(
            h, {"model": "fusion", "input": items, "fusion": {"panel": ["alpha", "beta"], "quorum": 1}}
        )

    assert response.status_code == 200, response.text
    [request] = h.link.submitted
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Cite sources."),
        ("user", "What is Kafka?"),
        ("assistant", "A log."),
        ("user", "And a topic?"),
    ]
    assert [member.model for member in request.panel or []] == ["alpha", "beta"]
    assert request.policy.quorum == 1


async def test_a_streamed_fusion_sends_the_standard_events(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(
            request, (0, "The fused "), (1, "answer: "), (2, "Rayleigh scattering.")
        )
        response = await respond(h, ask(stream=True))

    payloads = events_of(response)
    [request] = h.link.submitted
    assert request.stream is True
    assert response.headers["cache-control"] == "no-cache"
    assert kinds(payloads) == [
        *FUSION_OPENING,
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.fusion_call.completed",
        "response.output_item.done",  # the fusion item, whole
        *CLOSING,
        "response.completed",
    ]
    assert text_of(payloads) == ANSWER
    assert payloads[0]["response"]["id"] == f"resp_{request.request_id}"
    assert payloads[0]["response"]["status"] == "in_progress"
    assert payloads[2]["item"] == {
        "type": "openrouter:fusion",
        "id": f"fusion_{request.request_id}",
        "status": "in_progress",
    }
    assert {p["output_index"] for p in payloads if p["type"] == "response.output_text.delta"} == {1}
    assert payloads[10]["item"]["status"] == "completed"
    assert payloads[10]["item"]["responses"] == [{"model": "alpha", "content": ""}]
    completed = payloads[-1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["type"] == "openrouter:fusion"
    assert completed["output"][1]["content"][0]["text"] == ANSWER
    assert completed["usage"]["total_tokens"] == 42
    assert completed["fusion"]["status"] == "complete"
    assert h.link.forgotten == [request.request_id]
    assert h.gateway.in_flight == 0


async def test_a_streamed_fusion_whose_result_is_longer_sends_the_rest(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(request, (0, "The fused "))
        response = await respond(h, ask(stream=True))
    payloads = events_of(response)
    assert text_of(payloads) == ANSWER
    assert payloads[-1]["response"]["output"][1]["content"][0]["text"] == ANSWER


async def test_a_streamed_fusion_asks_for_progress_and_sends_it_as_fusion_call_events(
    catalog: Catalog,
) -> None:
    def told(request: FusionRequest) -> list[AnswerChunk | FusionProgress]:
        rid = request.request_id
        return [
            FusionProgress(request_id=rid, event="panel.added", member_index=0, model="alpha"),
            FusionProgress(request_id=rid, event="panel.added", member_index=1, model="beta"),
            FusionProgress(
                request_id=rid, event="panel.completed", member_index=0, model="alpha", text="Blue light."
            ),
            FusionProgress(
                request_id=rid, event="panel.failed", member_index=1, model="beta", error="HTTP 500"
            ),
            FusionProgress(request_id=rid, event="analysis.in_progress"),
            FusionProgress(request_id=rid, event="analysis.completed"),
            *stream_of(request, (0, ANSWER)),
        ]

    async with harness(catalog) as h:
        h.link.chunks = told
        response = await respond(h, ask(stream=True))

    [request] = h.link.submitted
    assert request.progress is True
    payloads = events_of(response)
    fusion = [p for p in payloads if p["type"].startswith("response.fusion_call.")]
    assert [p["type"].removeprefix("response.fusion_call.") for p in fusion] == [
        "in_progress",
        "panel.added",
        "panel.added",
        "panel.delta",
        "panel.completed",
        "panel.failed",
        "analysis.in_progress",
        "analysis.completed",
        "completed",
    ]
    assert {p["item_id"] for p in fusion} == {f"fusion_{request.request_id}"}
    assert fusion[3]["delta"] == "Blue light."
    assert fusion[5]["error"] == "HTTP 500"
    numbers = [p["sequence_number"] for p in payloads]
    assert numbers == list(range(len(payloads)))
    assert text_of(payloads) == ANSWER


async def test_a_failed_streamed_fusion_ends_with_error_and_response_failed(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.respond = lambda request: answered(request, None, "failed", "no member answered")
        response = await respond(h, ask(stream=True))

    payloads = events_of(response)
    assert kinds(payloads) == [*FUSION_OPENING, "error", "response.failed"]
    assert payloads[-2]["code"] == "fusion_failed"
    assert payloads[-2]["message"] == "no member answered"
    failed = payloads[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "fusion_failed", "message": "no member answered"}
    assert failed["fusion"]["status"] == "failed"
    assert h.gateway.in_flight == 0


async def test_a_stream_past_its_deadline_keeps_alive_then_fails_with_deadline_exceeded(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "WAIT_MARGIN_S", 0.0)
    monkeypatch.setattr(gateway_app, "KEEPALIVE_S", 0.02)
    async with harness(catalog) as h:
        h.link.respond = lambda _: None
        response = await asyncio.wait_for(respond(h, ask(stream=True, fusion={"deadline_s": 0.15})), 5)

    assert ": keep-alive" in response.text.split("\n\n")
    payloads = events_of(response)
    assert payloads[-2]["code"] == "deadline_exceeded"
    assert payloads[-1]["type"] == "response.failed"
    [request] = h.link.submitted
    assert h.link.forgotten == [request.request_id]
    assert h.gateway.in_flight == 0


# --- pass-through ------------------------------------------------------------------------------


async def test_a_catalog_model_is_passed_through(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await respond(
            h, ask("direct", model="alpha", instructions="Be brief.", temperature=0.1, max_output_tokens=20)
        )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "alpha"
    assert body["id"].startswith("resp_")
    assert body["output"][0]["content"][0]["text"] == "Direct answer."
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (7, 3)
    assert "fusion" not in body
    assert len(body["output"]) == 1
    [sent] = h.provider.bodies()
    assert sent == {
        "model": "vendor/alpha",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "direct"}],
        "temperature": 0.1,
        "max_tokens": 20,
        "stream": False,
    }
    assert h.link.submitted == []


async def test_a_streamed_pass_through_is_rendered_from_the_providers_chunks(catalog: Catalog) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return (
            "data: "
            + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            + "\n\n"
        )

    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    raw = (
        chunk({"role": "assistant"})
        + chunk({"content": "Hel"})
        + chunk({"content": "lo."}, "stop")
        + f"data: {json.dumps(usage)}\n\n"
        + "data: [DONE]\n\n"
    )
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=raw.encode()
        )
        response = await respond(h, ask("direct", model="beta", stream=True))

    payloads = events_of(response)
    assert kinds(payloads) == [
        *OPENING,
        "response.output_text.delta",
        "response.output_text.delta",
        *CLOSING,
        "response.completed",
    ]
    assert text_of(payloads) == "Hello."
    completed = payloads[-1]["response"]
    assert completed["output"][0]["content"][0]["text"] == "Hello."
    assert completed["usage"]["total_tokens"] == 7
    [sent] = h.provider.bodies()
    assert sent["stream"] is True
    assert sent["model"] == "vendor/beta"
    assert sent["stream_options"] == {"include_usage": True}
    assert h.gateway.in_flight == 0


async def test_a_provider_error_mid_stream_fails_the_response(catalog: Catalog) -> None:
    raw = (
        'data: {"choices": [{"delta": {"content": "Hal"}}]}\n\ndata: {"error": {"message": "overloaded"}}\n\n'
    )
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=raw.encode()
        )
        response = await respond(h, ask(model="alpha", stream=True))

    payloads = events_of(response)
    assert kinds(payloads)[-2:] == ["error", "response.failed"]
    assert payloads[-2]["code"] == "upstream_error"
    assert "overloaded" in payloads[-2]["message"]
    assert payloads[-1]["response"]["output"][0]["content"][0]["text"] == "Hal"


async def test_a_reply_cut_at_max_output_tokens_is_incomplete(catalog: Catalog) -> None:
    reply = upstream_reply("Hal")
    reply["choices"][0]["finish_reason"] = "length"
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(200, json=reply)
        response = await respond(h, ask(model="alpha", max_output_tokens=1))
    assert response.json()["status"] == "incomplete"
    assert response.json()["incomplete_details"] == {"reason": "max_output_tokens"}


# --- previous_response_id ----------------------------------------------------------------------


async def test_previous_response_id_continues_the_conversation_across_models(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        first = await respond(h, ask("First question?", instructions="Be brief."))
        second = await respond(h, ask("Second?", model="alpha", previous_response_id=first.json()["id"]))
        third = await respond(h, ask("Third?", previous_response_id=second.json()["id"], stream=True))

    assert second.status_code == 200, second.text
    assert second.json()["previous_response_id"] == first.json()["id"]
    [sent] = h.provider.bodies()
    # The instructions are not carried over (as OpenAI does); the answered turns are.
    assert sent["messages"] == [
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Second?"},
    ]
    events_of(third)
    assert [(m.role, m.content) for m in h.link.submitted[1].messages] == [
        ("user", "First question?"),
        ("assistant", ANSWER),
        ("user", "Second?"),
        ("assistant", "Direct answer."),
        ("user", "Third?"),
    ]


async def test_a_streamed_response_is_kept_once_complete(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(request, (0, "The fused "))
        streamed = events_of(await respond(h, ask("One?", stream=True)))
        follow = await respond(
            h, ask("Two?", model="alpha", previous_response_id=streamed[0]["response"]["id"])
        )

    assert follow.status_code == 200, follow.text
    assert h.provider.bodies()[0]["messages"][1] == {"role": "assistant", "content": ANSWER}


async def test_an_unknown_previous_response_is_a_404_saying_where_it_is_kept(catalog: Catalog) -> None:
    async with harness(catalog, gateway_idempotency_ttl_s=321) as h:
        response = await respond(h, ask(previous_response_id="resp_nope"))
        streamed = await respond(h, ask(previous_response_id="resp_nope", stream=True))

    for result in (response, streamed):
        error = error_of(result, 404, "previous_response_not_found")
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "previous_response_id"
        assert "'resp_nope'" in error["message"]
        assert "321 s" in error["message"]
        assert "'component'" in error["message"]  # the instance
    assert h.link.submitted == []


async def test_a_previous_response_expires(catalog: Catalog) -> None:
    async with harness(catalog, gateway_idempotency_ttl_s=0.2) as h:
        first = await respond(h, ask())
        await asyncio.sleep(0.3)
        late = await respond(h, ask(previous_response_id=first.json()["id"]))
    error_of(late, 404, "previous_response_not_found")
    assert len(h.link.submitted) == 1


async def test_a_response_with_store_false_is_not_kept(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        first = await respond(h, ask(store=False))
        again = await respond(h, ask(previous_response_id=first.json()["id"]))
    assert first.json()["store"] is False
    error_of(again, 404, "previous_response_not_found")


async def test_a_failed_response_is_not_kept(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.respond = lambda request: answered(request, None, "failed", "no member answered")
        streamed = events_of(await respond(h, ask(stream=True)))
        again = await respond(h, ask(previous_response_id=streamed[0]["response"]["id"]))
    error_of(again, 404, "previous_response_not_found")


# --- OpenRouter's shapes -----------------------------------------------------------------------


async def test_the_openrouter_slug_is_the_default_preset(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await respond(h, ask(model="openrouter/fusion"))
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "openrouter/fusion"
    [request] = h.link.submitted
    assert request.preset == "duo"


async def test_the_fusion_plugin_sets_panel_judge_and_preset(catalog: Catalog) -> None:
    plugins = [{"id": "fusion", "analysis_models": ["alpha", "beta"], "model": "alpha", "max_tool_calls": 2}]
    async with harness(catalog) as h:
        custom = await respond(h, ask(model="openrouter/fusion", plugins=plugins))
        preset = await respond(
            h, ask(model="openrouter/fusion", plugins=[{"id": "fusion", "preset": "solo"}])
        )

    assert custom.status_code == preset.status_code == 200
    first, second = h.link.submitted
    assert [member.model for member in first.panel or []] == ["alpha", "beta"]
    assert first.judge is not None
    assert first.judge.model == "alpha"
    assert first.max_tool_calls == 2
    assert second.preset == "solo"


async def test_the_server_tool_fuses_with_the_requests_model_as_judge(catalog: Catalog) -> None:
    tool = {
        "type": "openrouter:fusion",
        "parameters": {"analysis_models": ["alpha", "alpha"], "temperature": 0.8},
    }
    async with harness(catalog) as h:
        response = await respond(h, ask(model="beta", tools=[tool]))

    assert response.status_code == 200, response.text
    [request] = h.link.submitted
    assert [(m.model, m.temperature) for m in request.panel or []] == [("alpha", 0.8), ("alpha", 0.8)]
    assert request.judge is not None
    assert request.judge.model == "beta"
    assert h.provider.requests == []
    assert response.json()["output"][0]["type"] == "openrouter:fusion"


async def test_the_fusion_item_carries_analysis_and_failed_models(catalog: Catalog) -> None:
    def respond_partial(request: FusionRequest) -> FusedResult:
        result = answered(request, status="partial", error="1 of 2 members failed")
        return result.model_copy(
            update={
                "analysis": Analysis(consensus=["Blue."], blind_spots=["Sunsets."]),
                "members": [
                    MemberOutcome(index=0, model="alpha", status="ok", text="Blue, from scattering."),
                    MemberOutcome(index=1, model="beta", status="error", error="HTTP 503", error_status=503),
                ],
            }
        )

    async with harness(catalog) as h:
        h.link.respond = respond_partial
        response = await respond(h, ask(model="openrouter/fusion"))

    item = response.json()["output"][0]
    assert item["responses"] == [{"model": "alpha", "content": "Blue, from scattering."}]
    assert item["failed_models"] == [{"model": "beta", "error": "HTTP 503", "status_code": 503}]
    assert item["analysis"]["consensus"] == ["Blue."]
    assert item["analysis"]["blind_spots"] == ["Sunsets."]
    assert item["error"] == "1 of 2 members failed"


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment", "param"),
    [
        ({"model": "fusion"}, "input", None),
        (
            ask(
                input=[{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]
            ),
            "'input_image' is not supported",
            "input",
        ),
        (
            ask(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
            "'input_file' is not supported",
            "input",
        ),
        (
            ask(input=[{"type": "function_call_output", "call_id": "c", "output": "42"}]),
            "'function_call_output'",
            "input",
        ),
        (ask(tools=[{"type": "function", "name": "f", "parameters": {}}]), "tools of type function", "tools"),
        (ask(model="fusion/nope"), "unknown preset 'nope'", "model"),
        (ask(fusion={"panel": ["nope"]}), "unknown model 'nope'", "fusion"),
        (ask(fusion={"quorom": 2}), "quorom", None),
        (
            ask(plugins=[{"id": "fusion", "analysis_models": ["alpha"]}], fusion={"panel": ["beta"]}),
            "fusion.panel",
            "fusion",
        ),
        (
            ask(model="openrouter/fusion", plugins=[{"id": "fusion", "preset": "nope"}]),
            "unknown preset 'nope'",
            "model",
        ),
        (ask(background=True), "background", "background"),
    ],
)
async def test_a_bad_request_is_a_400_without_a_submission(
    catalog: Catalog, body: dict[str, Any], fragment: str, param: str | None
) -> None:
    async with harness(catalog) as h:
        response = await respond(h, body)
        streamed = await respond(h, {**body, "stream": True})
    for result in (response, streamed):
        error = error_of(result, 400, "invalid_request")
        assert error["type"] == "invalid_request_error"
        assert fragment in error["message"]
        assert error["param"] == param
    assert h.link.submitted == []
    assert h.provider.requests == []
    assert h.gateway.in_flight == 0


async def test_a_missing_key_is_a_401(catalog: Catalog) -> None:
    async with harness(catalog, gateway_api_key="s3cret-gateway-key") as h:
        refused = await respond(h, ask())
        let_in = await respond(h, ask(), Authorization="Bearer s3cret-gateway-key")
    error = error_of(refused, 401, "invalid_api_key")
    assert error["type"] == "authentication_error"
    assert "s3cret" not in refused.text
    assert let_in.status_code == 200


async def test_a_call_from_a_fusion_service_is_a_403(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await respond(h, ask(), **{"X-Fusion-Caller": "panel-worker"})
    assert error_of(response, 403, "fusion_loop")["type"] == "permission_error"


async def test_an_unknown_model_is_a_404_listing_the_models(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await respond(h, ask(model="gpt-17"))
        streamed = await respond(h, ask(model="gpt-17", stream=True))
    for result in (response, streamed):
        error = error_of(result, 404, "model_not_found")
        assert error["type"] == "not_found_error"
        assert "fusion/solo" in error["message"]
    assert h.gateway.in_flight == 0


async def test_a_body_over_the_limit_is_a_413(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_body_bytes=1024) as h:
        response = await respond(h, ask("x" * 2000))
    error_of(response, 413, "request_too_large")


async def test_over_the_in_flight_limit_is_a_429(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_in_flight=1) as h:
        with h.gateway.admitted():
            refused = await respond(h, ask())
            refused_stream = await respond(h, ask(stream=True))
        admitted = await respond(h, ask(stream=True))
    for result in (refused, refused_stream):
        assert error_of(result, 429, "too_many_requests")["type"] == "rate_limit_error"
    assert admitted.status_code == 200
    assert h.gateway.in_flight == 0


@pytest.mark.parametrize(
    ("reason", "status", "kind"),
    [
        ("rate_limited", 429, "rate_limit_error"),
        ("all_members_failed", 502, "api_error"),
        ("deadline", 504, "api_error"),
    ],
)
async def test_a_failed_fusion_has_its_status_and_the_fusion_object(
    catalog: Catalog, reason: str, status: int, kind: str
) -> None:
    def failed(request: FusionRequest) -> FusedResult:
        return answered(request, None, "failed", "no member answered").model_copy(
            update={"failure_reason": reason}
        )

    async with harness(catalog) as h:
        h.link.respond = failed
        response = await respond(h, ask())
    error = error_of(response, status, reason)
    assert error["type"] == kind
    assert response.json()["fusion"]["status"] == "failed"


async def test_no_result_by_the_deadline_is_a_504(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_app, "WAIT_MARGIN_S", 0.0)
    async with harness(catalog) as h:
        h.link.respond = lambda _: None
        response = await asyncio.wait_for(respond(h, ask(fusion={"deadline_s": 0.05})), 5)
    error_of(response, 504, "deadline_exceeded")
    assert h.gateway.in_flight == 0


async def test_a_draining_gateway_is_a_503(catalog: Catalog) -> None:
    async with harness(catalog, gateway_drain_s=30) as h:
        h.gateway.begin_drain()
        response = await respond(h, ask())
        streamed = await respond(h, ask(stream=True))
    for result in (response, streamed):
        error_of(result, 503, "gateway_shutting_down")


async def test_a_provider_without_its_key_is_a_503(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSION_GATEWAY_COMPONENT_TEST_UNSET_KEY", raising=False)
    async with harness(catalog) as h:
        response = await respond(h, ask(model="locked"))
    assert (
        "FUSION_GATEWAY_COMPONENT_TEST_UNSET_KEY"
        in error_of(response, 503, "provider_not_configured")["message"]
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_error_status_is_passed_on(catalog: Catalog, stream: bool) -> None:
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(429, json={"error": {"message": "slow down"}})
        response = await respond(h, ask(model="alpha", stream=stream))
    assert "slow down" in error_of(response, 429, "upstream_error")["message"]
    assert h.gateway.in_flight == 0


async def test_a_provider_timeout_is_a_504(catalog: Catalog) -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with harness(catalog) as h:
        h.provider.default = stall
        response = await respond(h, ask(model="alpha"))
    error_of(response, 504, "upstream_timeout")


async def test_an_unreachable_provider_is_a_502(catalog: Catalog) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with harness(catalog) as h:
        h.provider.default = refuse
        response = await respond(h, ask(model="alpha"))
    error_of(response, 502, "upstream_error")


# --- slots and metrics -------------------------------------------------------------------------


async def test_a_held_stream_counts_against_the_limit_until_it_ends(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_in_flight=1) as h:
        h.link.hold = asyncio.Event()
        first = asyncio.create_task(respond(h, ask(stream=True)))
        await eventually(lambda: len(h.link.submitted) == 1)
        second = await respond(h, ask())
        h.link.hold.set()
        assert text_of(events_of(await first)) == ANSWER
        after = await respond(h, ask())
    error_of(second, 429, "too_many_requests")
    assert after.status_code == 200
    assert h.gateway.in_flight == 0


async def test_metrics_count_responses_requests(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        await respond(h, ask())
        await respond(h, ask(stream=True))
        await respond(h, ask(model="alpha"))
        metrics = (await h.client.get("/metrics")).text
    assert 'fusion_gateway_requests_total{kind="fusion",stream="false"} 1.0' in metrics
    assert 'fusion_gateway_requests_total{kind="fusion",stream="true"} 1.0' in metrics
    assert 'fusion_gateway_requests_total{kind="model",stream="false"} 1.0' in metrics
    assert 'fusion_gateway_results_total{status="complete"} 2.0' in metrics
