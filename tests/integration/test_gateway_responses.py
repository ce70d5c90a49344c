"""`POST /v1/responses` on two gateway processes on the real broker, with the stand-in models: the
official `openai` SDK (`client.responses.create`, plain and streamed) and raw requests in OpenRouter's
documented Fusion shapes (the slug, the plugin, the server tool)."""

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseTextDeltaEvent,
)

pytestmark = [pytest.mark.kafka]

QUESTION = "What is Kafka?"


def sdk(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)


async def post(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(f"{url}/v1/responses", json=body)


def fusion_item(body: dict[str, Any]) -> dict[str, Any]:
    items: list[dict[str, Any]] = [item for item in body["output"] if item["type"] == "openrouter:fusion"]
    assert len(items) == 1
    return items[0]


# --- the official SDK --------------------------------------------------------------------------


async def test_the_sdk_gets_a_fused_response_with_the_fusion_details(gateways: list[str]) -> None:
    response = await sdk(gateways[0]).responses.create(
        model="fusion/standin", input=QUESTION, instructions="Answer in one line."
    )

    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "fusion/standin"
    assert response.id.startswith("resp_")
    assert QUESTION in response.output_text
    assert response.usage is not None
    assert response.usage.input_tokens == 12 * 5  # three members and two judge calls
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    fusion = (response.model_extra or {})["fusion"]
    assert fusion["status"] == "complete"
    assert [member["status"] for member in fusion["members"]] == ["ok", "ok", "ok"]
    assert fusion["analysis"]["consensus"]


async def test_the_sdk_streams_the_standard_events_as_the_judge_writes(gateways: list[str]) -> None:
    stream = await sdk(gateways[1]).responses.create(
        model="fusion",
        input="Stream this, please",
        stream=True,
        extra_body={"fusion": {"panel": ["fast", "fast"], "judge": "slow-judge"}},
    )
    loop = asyncio.get_running_loop()
    types: list[str] = []
    numbers: list[int] = []
    arrivals: list[tuple[float, str]] = []
    completed = None
    async for event in stream:
        types.append(event.type)
        numbers.append(event.sequence_number)
        if isinstance(event, ResponseTextDeltaEvent):
            arrivals.append((loop.time(), event.delta))
        if isinstance(event, ResponseCompletedEvent):
            completed = event.response
    text = "".join(delta for _, delta in arrivals)

    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # the openrouter:fusion item, in progress
        "response.output_item.added",  # the message
        "response.content_part.added",
    ]
    assert types[-1] == "response.completed"
    assert numbers == list(range(len(numbers)))
    # The panel's progress, from the judge over Kafka, as OpenRouter names it: the SDK passes the
    # events it has no class for through, in order.
    fusion_calls = [kind.removeprefix("response.fusion_call.") for kind in types if "fusion_call" in kind]
    assert fusion_calls == [
        "in_progress",
        "panel.added",
        "panel.added",
        "panel.delta",
        "panel.completed",
        "panel.delta",
        "panel.completed",
        "analysis.in_progress",
        "analysis.completed",
        "completed",
    ]
    assert types.index("response.fusion_call.analysis.completed") < types.index("response.output_text.delta")
    assert len(arrivals) > 3
    assert arrivals[-1][0] - arrivals[0][0] > 0.1  # the words came while the judge was writing
    assert text.startswith("Stand-in answer from sleep-600")
    assert completed is not None
    assert completed.output_text == text
    fusion = (completed.model_extra or {})["fusion"]
    assert fusion["status"] == "complete"
    assert [member["model"] for member in fusion["members"]] == ["fast", "fast"]


async def test_the_sdk_passes_a_catalog_model_through_plain_and_streamed(gateways: list[str]) -> None:
    client = sdk(gateways[0])
    plain = await client.responses.create(model="fast", input="direct")
    stream = await client.responses.create(model="fast", input="streamed", stream=True)
    events = [event async for event in stream]

    assert plain.output_text.startswith("Stand-in answer from sleep-20 to: direct (reply ")
    assert "fusion" not in (plain.model_extra or {})
    assert plain.usage is not None
    assert plain.usage.total_tokens > 0
    assert isinstance(events[0], ResponseCreatedEvent)
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent)
    assert final.response.output_text.startswith("Stand-in answer from sleep-20 to: streamed (reply ")
    deltas = "".join(event.delta for event in events if isinstance(event, ResponseTextDeltaEvent))
    assert deltas == final.response.output_text
    assert final.response.usage is not None
    assert final.response.usage.total_tokens > 0  # the stand-in's usage chunk, asked for


async def test_previous_response_id_continues_on_the_instance_that_answered(gateways: list[str]) -> None:
    here, elsewhere = sdk(gateways[0]), sdk(gateways[1])
    first = await here.responses.create(model="fusion/standin", input="Remember 42.")
    second = await here.responses.create(model="fast", input="What number?", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError) as other_instance:
        await elsewhere.responses.create(model="fast", input="What number?", previous_response_id=first.id)

    assert second.status == "completed"
    assert second.previous_response_id == first.id
    assert second.output_text.startswith("Stand-in answer from sleep-20 to: What number?")
    assert other_instance.value.code == "previous_response_not_found"
    assert "kept for 600 s" in other_instance.value.message


async def test_the_sdk_sees_errors_in_openais_shape(gateways: list[str]) -> None:
    client = sdk(gateways[0])
    with pytest.raises(openai.BadRequestError) as image:
        await client.responses.create(
            model="fusion/standin",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://example.org/cat.png", "detail": "auto"},
                    ],
                }
            ],
        )
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.responses.create(model="gpt-17", input="x")

    assert "'input_image' is not supported" in image.value.message
    assert image.value.code == "invalid_request"
    assert unknown.value.code == "model_not_found"


async def test_a_fusion_where_every_member_fails_is_a_502_with_the_reasons(gateways: list[str]) -> None:
    body = {"model": "fusion", "input": "x", "fusion": {"panel": ["unreachable-a", "broken"]}}
    response = await post(gateways[1], body)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "all_members_failed"
    assert [member["status"] for member in response.json()["fusion"]["members"]] == ["error", "error"]


# --- OpenRouter's shapes, as OpenRouter documents them -----------------------------------------


async def test_the_openrouter_slug_is_the_default_preset(gateways: list[str]) -> None:
    response = await post(gateways[0], {"model": "openrouter/fusion", "input": QUESTION})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "openrouter/fusion"
    assert [member["model"] for member in body["fusion"]["members"]] == ["fast", "fast", "fast"]
    item = fusion_item(body)
    assert item["status"] == "completed"
    assert [answer["model"] for answer in item["responses"]] == ["fast", "fast", "fast"]
    assert all(QUESTION in answer["content"] for answer in item["responses"])
    assert item["analysis"]["consensus"]
    assert set(item["analysis"]) == {
        "consensus",
        "contradictions",
        "partial_coverage",
        "unique_insights",
        "blind_spots",
    }


async def test_the_fusion_plugin_names_panel_and_judge(gateways: list[str]) -> None:
    body = {
        "model": "openrouter/fusion",
        "input": QUESTION,
        "plugins": [{"id": "fusion", "analysis_models": ["fast", "m20"], "model": "fast"}],
    }
    response = await post(gateways[1], body)

    assert response.status_code == 200, response.text
    fusion = response.json()["fusion"]
    assert [member["model"] for member in fusion["members"]] == ["fast", "m20"]
    assert fusion["judge"]["model"] == "fast"


async def test_the_fusion_plugin_preset_and_failed_models(gateways: list[str]) -> None:
    preset = await post(
        gateways[0],
        {"model": "openrouter/fusion", "input": "x", "plugins": [{"id": "fusion", "preset": "standin"}]},
    )
    degraded = await post(
        gateways[0],
        {
            "model": "openrouter/fusion",
            "input": "x",
            "plugins": [{"id": "fusion", "analysis_models": ["fast", "broken"], "model": "fast"}],
        },
    )

    assert preset.status_code == 200, preset.text
    assert len(preset.json()["fusion"]["members"]) == 3
    assert degraded.status_code == 200, degraded.text
    item = fusion_item(degraded.json())
    assert [answer["model"] for answer in item["responses"]] == ["fast"]
    [failed] = item["failed_models"]
    assert failed["model"] == "broken"
    assert failed["status_code"] == 500


async def test_the_server_tool_fuses_with_the_requests_model_as_judge(gateways: list[str]) -> None:
    body = {
        "model": "fast",
        "input": QUESTION,
        "tools": [{"type": "openrouter:fusion", "parameters": {"analysis_models": ["fast", "fast"]}}],
    }
    response = await post(gateways[1], body)

    assert response.status_code == 200, response.text
    fusion = response.json()["fusion"]
    assert [member["model"] for member in fusion["members"]] == ["fast", "fast"]
    assert fusion["judge"]["model"] == "fast"
    assert fusion_item(response.json())["responses"]


async def test_a_raw_stream_of_the_openrouter_slug(gateways: list[str]) -> None:
    body = {"model": "openrouter/fusion", "input": "fmt", "stream": True}
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("POST", f"{gateways[0]}/v1/responses", json=body) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines()]

    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == [payload["type"] for payload in payloads]
    assert names[-1] == "response.completed"
    added = [p["item"]["type"] for p in payloads if p["type"] == "response.output_item.added"]
    assert added == ["openrouter:fusion", "message"]
    assert "data: [DONE]" not in lines  # the Responses API ends with its last event
