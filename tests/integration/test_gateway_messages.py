"""Anthropic's Messages API on the gateway processes, on the real broker with the stand-in model server:
the official `anthropic` SDK, plain and streamed, fused and passed through."""

import asyncio
from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic, AuthenticationError, BadRequestError, NotFoundError

from fusion_testing.stack import GATEWAY_PORTS, Services

pytestmark = [pytest.mark.kafka]

KEY = "s3cret-gateway-key"


def sdk(url: str, key: str = "none") -> AsyncAnthropic:
    return AsyncAnthropic(base_url=url, api_key=key, max_retries=0, timeout=60)


def fusion_of(message: Any) -> dict[str, Any]:
    fusion: dict[str, Any] = (message.model_extra or {})["fusion"]
    return fusion


async def test_the_sdk_gets_a_fused_message_with_the_fusion_details(gateways: list[str]) -> None:
    message = await sdk(gateways[0]).messages.create(
        model="fusion/standin",
        max_tokens=300,
        system="Be brief.",
        messages=[{"role": "user", "content": "What is Kafka?"}],
    )

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "fusion/standin"
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text"
    assert "What is Kafka?" in block.text
    assert message.usage.input_tokens == 12 * 5  # three members and two judge calls
    assert message.usage.output_tokens > 0
    fusion = fusion_of(message)
    assert fusion["status"] == "complete"
    assert [member["status"] for member in fusion["members"]] == ["ok", "ok", "ok"]
    assert message.id == f"msg_{fusion['request_id']}"


async def test_a_conversation_and_a_custom_panel(gateways: list[str]) -> None:
    message = await sdk(gateways[1]).messages.create(
        model="fusion",
        max_tokens=300,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is Kafka?"}]},
            {"role": "assistant", "content": "A distributed log."},
            {"role": "user", "content": "And a partition?"},
        ],
        extra_body={"fusion": {"panel": ["fast", {"model": "fast", "temperature": 0.5}], "judge": "fast"}},
    )

    assert message.content[0].type == "text"
    assert "And a partition?" in message.content[0].text  # the stand-in answers the last question
    fusion = fusion_of(message)
    assert [member["model"] for member in fusion["members"]] == ["fast", "fast"]
    assert fusion["judge"]["model"] == "fast"


async def test_streaming_sends_the_judges_words_before_the_end(gateways: list[str]) -> None:
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[float, str]] = []
    async with sdk(gateways[0]).messages.stream(
        model="fusion",
        max_tokens=300,
        messages=[{"role": "user", "content": "Stream this, please"}],
        extra_body={"fusion": {"panel": ["fast", "fast"], "judge": "slow-judge"}},
    ) as stream:
        async for text in stream.text_stream:
            arrivals.append((loop.time(), text))
        final = await stream.get_final_message()

    text = "".join(piece for _, piece in arrivals)
    assert text.startswith("Stand-in answer from sleep-600")
    assert len(arrivals) > 3
    assert arrivals[-1][0] - arrivals[0][0] > 0.1  # the words came while the judge was writing
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0


async def test_the_raw_stream_has_anthropics_events_in_order(gateways: list[str]) -> None:
    stream = await sdk(gateways[1]).messages.create(
        model="fusion/standin",
        max_tokens=300,
        messages=[{"role": "user", "content": "Events, please"}],
        stream=True,
    )
    kinds = [event.type async for event in stream]

    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_a_catalog_model_is_passed_through(gateways: list[str]) -> None:
    message = await sdk(gateways[0]).messages.create(
        model="fast", max_tokens=100, messages=[{"role": "user", "content": "direct"}]
    )

    assert message.model == "fast"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Stand-in answer from sleep-20 to: direct (reply ")
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 9)
    assert "fusion" not in (message.model_extra or {})


async def test_a_passed_through_stream(gateways: list[str]) -> None:
    pieces: list[str] = []
    async with sdk(gateways[1]).messages.stream(
        model="fast", max_tokens=100, messages=[{"role": "user", "content": "stream direct"}]
    ) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
        final = await stream.get_final_message()

    assert len(pieces) > 1
    assert "".join(pieces).startswith("Stand-in answer from sleep-20 to: stream direct (reply ")
    assert final.content[0].type == "text"
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 9)


async def test_errors_come_as_the_sdks_exceptions_with_anthropics_body(gateways: list[str]) -> None:
    client = sdk(gateways[0])
    with pytest.raises(NotFoundError) as unknown:
        await client.messages.create(
            model="claude-17", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(BadRequestError) as refused:
        await client.messages.create(
            model="fusion/standin",
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
    async with httpx.AsyncClient(timeout=30) as raw:
        missing = await raw.post(
            f"{gateways[1]}/v1/messages",
            json={"model": "fusion/standin", "messages": [{"role": "user", "content": "x"}]},
        )

    body = unknown.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "unknown model 'claude-17'" in body["error"]["message"]
    assert refused.value.status_code == 400
    assert "'image' content blocks are not supported" in str(refused.value)
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


async def test_a_failed_fusion_is_a_502_api_error_with_the_reasons(gateways: list[str]) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            f"{gateways[0]}/v1/messages",
            json={
                "model": "fusion",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "x"}],
                "fusion": {"panel": ["broken"], "judge": "fast"},
            },
        )

    assert response.status_code == 502
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert body["fusion"]["status"] == "failed"


async def test_the_gateway_key_as_x_api_key_or_bearer(services: Services) -> None:
    url = services.start_gateway("gateway-messages-keyed", GATEWAY_PORTS[2], FUSION_GATEWAY_API_KEY=KEY)
    body = {"model": "fast", "max_tokens": 20, "messages": [{"role": "user", "content": "k"}]}
    try:
        bearer = await sdk(url, key=KEY).messages.create(
            model="fast", max_tokens=20, messages=[{"role": "user", "content": "k"}]
        )
        with pytest.raises(AuthenticationError):
            await sdk(url, key="wrong").messages.create(
                model="fast", max_tokens=20, messages=[{"role": "user", "content": "k"}]
            )
        async with httpx.AsyncClient(timeout=30) as client:
            as_x_api_key = await client.post(f"{url}/v1/messages", json=body, headers={"x-api-key": KEY})
            wrong = await client.post(f"{url}/v1/messages", json=body, headers={"x-api-key": "nope"})
    finally:
        services.stop("gateway-messages-keyed")

    assert bearer.content[0].type == "text"
    assert as_x_api_key.status_code == 200
    assert as_x_api_key.json()["content"][0]["text"].startswith("Stand-in answer from sleep-20")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert KEY not in wrong.text
