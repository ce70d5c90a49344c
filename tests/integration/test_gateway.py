"""The gateway as processes on the real broker, with the stand-in model server: OpenAI's SDK and API."""

import asyncio
import json
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from fusion_testing.stack import GATEWAY_PORTS, Services

pytestmark = [pytest.mark.kafka]


def sdk(url: str, key: str = "none") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def ask(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fusion/standin", "messages": [{"role": "user", "content": question}], **extra}


async def test_the_sdk_gets_a_fused_answer_with_the_fusion_details(gateways: list[str]) -> None:
    completion = await sdk(gateways[0]).chat.completions.create(
        model="fusion/standin", messages=[{"role": "user", "content": "What is Kafka?"}]
    )

    assert completion.object == "chat.completion"
    assert completion.model == "fusion/standin"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content
    assert "What is Kafka?" in completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 12 * 5  # three members and two judge calls
    fusion = (completion.model_extra or {})["fusion"]
    assert fusion["status"] == "complete"
    assert [member["status"] for member in fusion["members"]] == ["ok", "ok", "ok"]
    assert fusion["analysis"]["consensus"]


async def test_a_custom_panel_through_extra_body(gateways: list[str]) -> None:
    completion = await sdk(gateways[1]).chat.completions.create(
        model="fusion",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"fusion": {"panel": ["fast", {"model": "fast", "temperature": 0.5}], "judge": "fast"}},
    )

    fusion = (completion.model_extra or {})["fusion"]
    assert [member["model"] for member in fusion["members"]] == ["fast", "fast"]
    assert fusion["judge"]["model"] == "fast"


async def test_streaming_sends_the_judges_words_before_the_end(gateways: list[str]) -> None:
    stream = await sdk(gateways[0]).chat.completions.create(
        model="fusion",
        messages=[{"role": "user", "content": "Stream this, please"}],
        stream=True,
        extra_body={"fusion": {"panel": ["fast", "fast"], "judge": "slow-judge"}},
    )
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[float, str]] = []
    finish = None
    fusion = None
    async for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            arrivals.append((loop.time(), delta))
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
            fusion = (chunk.model_extra or {}).get("fusion")

    text = "".join(delta for _, delta in arrivals)
    assert finish == "stop"
    assert fusion is not None
    assert fusion["status"] == "complete"
    assert len(arrivals) > 3
    assert arrivals[-1][0] - arrivals[0][0] > 0.1  # the words came while the judge was writing
    assert text.startswith("Stand-in answer from sleep-600")


async def test_fifty_concurrent_requests_over_two_gateways_each_get_their_own_answer(
    gateways: list[str],
) -> None:
    clients = [sdk(url) for url in gateways]
    questions = [f"question-{i:03d}-{i * 7919 % 1000:03d}" for i in range(50)]

    async def one(i: int) -> tuple[str, str]:
        completion = await clients[i % 2].chat.completions.create(
            model="fusion/standin", messages=[{"role": "user", "content": questions[i]}]
        )
        return questions[i], completion.choices[0].message.content or ""

    answers = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(50))), timeout=60)

    assert len(answers) == 50
    for question, answer in answers:
        assert question in answer, (question, answer)


async def test_any_other_model_is_passed_through(gateways: list[str]) -> None:
    completion = await sdk(gateways[0]).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "direct"}]
    )

    assert (completion.choices[0].message.content or "").startswith(
        "Stand-in answer from sleep-20 to: direct (reply "
    )
    assert "fusion" not in (completion.model_extra or {})


async def test_models_lists_fusion_presets_and_catalog_models(gateways: list[str]) -> None:
    models = await sdk(gateways[0]).models.list()

    ids = {model.id for model in models.data}
    assert {"fusion", "fusion/standin", "fusion/local", "fast", "smollm2-135m"} <= ids


async def test_the_openapi_spec_is_served(gateways: list[str]) -> None:
    async with httpx.AsyncClient() as client:
        spec = (await client.get(f"{gateways[0]}/openapi.json")).json()

    assert "/v1/chat/completions" in spec["paths"]
    assert "/v1/models" in spec["paths"]


async def test_a_model_calls_fusion_as_a_tool_and_answers_from_it(gateways: list[str]) -> None:
    tool: ChatCompletionToolParam = {
        "type": "function",
        "function": {
            "name": "fusion",
            "description": "Ask a panel",
            "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
        },
    }
    client = sdk(gateways[0])
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Is P = NP?"}]

    used = await client.chat.completions.create(
        model="toolmodel",
        messages=question,
        tools=[tool],
    )
    declined = await client.chat.completions.create(
        model="toolmodel",
        messages=question,
        tools=[tool],
        tool_choice="none",
    )

    content = used.choices[0].message.content or ""
    assert content.startswith("With the panel's help:")
    assert "Is P = NP?" in content  # the fused answer, handed back as the tool result
    assert len((used.model_extra or {})["fusion"]["tool_calls"]) == 1
    assert (declined.model_extra or {})["fusion"]["tool_calls"] == []
    assert (declined.choices[0].message.content or "").startswith(
        "Stand-in answer from sleep-10 to: Is P = NP? (reply "
    )


async def test_a_fused_request_cannot_trigger_another_fusion(gateways: list[str]) -> None:
    tool = {"type": "function", "function": {"name": "fusion", "parameters": {"type": "object"}}}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gateways[0]}/v1/chat/completions", json=ask("x", tools=[tool]))

    assert response.status_code == 400
    assert "cannot call fusion" in response.json()["error"]["message"]


async def test_an_idempotency_key_returns_the_same_result_without_a_second_run(
    gateways: list[str], standin: str
) -> None:
    body = ask("only once, please")
    headers = {"Idempotency-Key": "retry-me-1"}
    async with httpx.AsyncClient(timeout=30) as client:
        before = (await client.get(f"{standin}/v1/stats")).json()["total"]
        first, second = await asyncio.gather(
            client.post(f"{gateways[0]}/v1/chat/completions", json=body, headers=headers),
            client.post(f"{gateways[0]}/v1/chat/completions", json=body, headers=headers),
        )
        third = await client.post(f"{gateways[0]}/v1/chat/completions", json=body, headers=headers)
        after = (await client.get(f"{standin}/v1/stats")).json()["total"]
        reused = await client.post(f"{gateways[0]}/v1/chat/completions", json=ask("else"), headers=headers)

    assert first.status_code == second.status_code == third.status_code == 200
    assert first.json()["id"] == second.json()["id"] == third.json()["id"]
    assert after - before == 5  # one fusion: three members and two judge calls
    assert third.headers["idempotent-replayed"] == "true"
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (ask("x", model="fusion/nope"), "unknown preset 'nope'"),
        (ask("x", fusion={"panel": ["fast", "no-such-model"]}), "unknown model 'no-such-model'"),
        (ask("x", fusion={"panel": ["fast"] * 9}), "at most 8"),
        ({"model": "fusion", "messages": []}, "at least 1"),
        (ask("x", fusion={"panel": ["fast"], "quorum": 3}), "quorum 3 is larger than the panel of 1"),
        ({"model": "fusion"}, "messages"),
    ],
    ids=["unknown-preset", "bad-panel", "too-many-members", "empty-messages", "quorum", "no-messages"],
)
async def test_invalid_requests_get_400(gateways: list[str], body: dict[str, Any], fragment: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gateways[0]}/v1/chat/completions", json=body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]


async def test_an_unknown_model_gets_404(gateways: list[str]) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gateways[0]}/v1/chat/completions", json=ask("x", model="gpt-17"))

    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


async def test_an_oversized_body_gets_413(gateways: list[str]) -> None:
    huge = ask("x" * (2 * 1024 * 1024))
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gateways[0]}/v1/chat/completions", json=huge)

    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


async def test_a_wrong_or_missing_key_gets_401_when_a_key_is_configured(services: Services) -> None:
    url = services.start_gateway(
        "gateway-keyed", GATEWAY_PORTS[2], FUSION_GATEWAY_API_KEY="s3cret-gateway-key"
    )
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            missing = await client.post(f"{url}/v1/chat/completions", json=ask("x"))
            wrong = await client.post(
                f"{url}/v1/chat/completions", json=ask("x"), headers={"Authorization": "Bearer nope"}
            )
        right = await sdk(url, key="s3cret-gateway-key").chat.completions.create(
            model="fusion/standin", messages=[{"role": "user", "content": "x"}]
        )
    finally:
        services.stop("gateway-keyed")

    assert missing.status_code == wrong.status_code == 401
    assert error_of(missing)["type"] == "authentication_error"
    assert "s3cret" not in wrong.text
    assert right.choices[0].message.content


async def test_the_in_flight_limit_gets_429(services: Services) -> None:
    url = services.start_gateway("gateway-narrow", GATEWAY_PORTS[3], FUSION_GATEWAY_MAX_IN_FLIGHT="1")
    slow = ask("slow", fusion={"panel": ["slow"], "judge": "fast"})
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(client.post(f"{url}/v1/chat/completions", json=slow))
            await asyncio.sleep(0.3)
            second = await client.post(f"{url}/v1/chat/completions", json=ask("x"))
            assert (await first).status_code == 200
    finally:
        services.stop("gateway-narrow")

    assert second.status_code == 429
    assert error_of(second)["type"] == "rate_limit_error"


async def test_kafka_unreachable_gets_503(services: Services) -> None:
    url = services.start_gateway(
        "gateway-no-kafka", GATEWAY_PORTS[4], ready=False, FUSION_KAFKA_BOOTSTRAP="127.0.0.1:1"
    )
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{url}/v1/chat/completions", json=ask("x"))
            health = await client.get(f"{url}/health")
    finally:
        services.stop("gateway-no-kafka")

    assert response.status_code == 503
    assert error_of(response)["code"] == "kafka_unavailable"
    assert "127.0.0.1:1" in error_of(response)["message"]
    assert health.status_code == 503


async def test_a_fusion_past_its_deadline_gets_504(services: Services, gateways: list[str]) -> None:
    """With the dispatcher down nothing can answer: the gateway gives up at the deadline (+5 s)."""
    services.stop("dispatcher")
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{gateways[0]}/v1/chat/completions", json=ask("x", fusion={"deadline_s": 1})
            )
    finally:
        services.start("dispatcher")

    assert response.status_code == 504
    assert error_of(response)["code"] == "deadline_exceeded"


async def test_a_fusion_where_every_member_fails_gets_502_with_the_reasons(gateways: list[str]) -> None:
    body = ask("x", fusion={"panel": ["unreachable-a", "broken"]})
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{gateways[0]}/v1/chat/completions", json=body)

    assert response.status_code == 502
    assert error_of(response)["code"] == "all_members_failed"
    assert [member["status"] for member in response.json()["fusion"]["members"]] == ["error", "error"]


async def test_stream_chunks_follow_openais_format(gateways: list[str]) -> None:
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{gateways[1]}/v1/chat/completions", json=ask("fmt", stream=True)) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]

    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] > 0
