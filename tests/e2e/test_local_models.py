"""End to end: the services as processes, the real broker, the real llama.cpp server and models."""

import time

import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusionRequest, Policy
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


async def test_preset_local_fuses_three_real_model_answers(local_models: str, client: FusionClient) -> None:
    request = FusionRequest(
        messages=[ChatMessage(role="user", content="Name three uses of a message queue, briefly.")],
        preset="local",
        strategy="synthesize",
        policy=Policy(deadline_s=240),
    )
    started = time.monotonic()

    result = await client.fuse(request)

    elapsed = time.monotonic() - started
    print(f"\nlocal preset: {result.status} in {elapsed:.1f} s; answer: {(result.answer or '')[:200]!r}")
    # complete, or partial when the small judge's analysis could not be read or its final answer came
    # out empty (it sometimes echoes its fence at once); the result says which, and a member's answer
    # stands in for an empty one
    assert result.status in ("complete", "partial"), result.model_dump_json(indent=1)
    if result.status == "partial":
        assert result.failure_reason in ("judge_invalid_json", "judge_schema_mismatch", "judge_empty"), (
            result.error
        )
    assert result.strategy == "synthesize"
    assert result.judge is not None
    if result.answer_source == "best_member":  # the small judge's final call failed, and says why
        assert result.status == "partial"
        assert result.judge.error
    else:
        assert result.answer_source == "judge"
    assert result.answer
    assert result.answer.strip()
    assert [member.model for member in result.members] == ["smollm2-135m", "smollm2-135m", "gemma3-270m"]
    for member in result.members:
        assert member.status == "ok"
        assert member.text
        assert member.usage.input_tokens > 0
        assert member.usage.output_tokens > 0
    assert result.judge.usage.output_tokens > 0
    assert result.usage.total.output_tokens == sum(m.usage.output_tokens for m in result.members) + (
        result.judge.usage.output_tokens
    )


async def test_the_openai_sdk_gets_fused_answers_from_the_local_models(
    local_models: str, gateways: list[str]
) -> None:
    client = AsyncOpenAI(base_url=f"{gateways[0]}/v1", api_key="none", max_retries=0, timeout=300)
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Give one tip for writing clear emails."}
    ]

    started = time.monotonic()
    synthesize = {"fusion": {"strategy": "synthesize"}}  # the judge writes, so its words stream
    completion = await client.chat.completions.create(
        model="fusion/local", messages=question, extra_body=synthesize
    )
    plain_s = time.monotonic() - started

    stream = await client.chat.completions.create(
        model="fusion/local", messages=question, stream=True, extra_body=synthesize
    )
    started = time.monotonic()
    first_content_s = None
    pieces: list[str] = []
    fusion = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_content_s = first_content_s or time.monotonic() - started
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            fusion = (chunk.model_extra or {}).get("fusion")
    streamed_s = time.monotonic() - started

    print(
        f"\nSDK via gateway, local models: plain {plain_s:.1f} s; streamed: first words after"
        f" {first_content_s:.1f} s, done after {streamed_s:.1f} s ({len(pieces)} chunks)"
    )
    assert completion.choices[0].message.content
    assert (completion.model_extra or {})["fusion"]["status"] in ("complete", "partial")
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    assert "".join(pieces).strip()
    assert fusion is not None
    assert fusion["status"] in ("complete", "partial")
    assert fusion["answer_source"] in ("judge", "best_member")  # best_member: the judge failed, said why
    if fusion["answer_source"] == "judge":
        assert len(pieces) > 1  # the judge's words, as it wrote them
    else:
        assert fusion["failure_reason"]
    assert first_content_s is not None
    assert first_content_s < streamed_s
