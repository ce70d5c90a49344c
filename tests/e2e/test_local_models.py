"""End to end: the services as processes, the real broker, the real llama.cpp server and models."""

import time

import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusionRequest, Policy

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


async def test_preset_local_fuses_three_real_model_answers(local_models: str, client: FusionClient) -> None:
    request = FusionRequest(
        messages=[ChatMessage(role="user", content="Name three uses of a message queue, briefly.")],
        preset="local",
        policy=Policy(deadline_s=240),
    )
    started = time.monotonic()

    result = await client.fuse(request)

    elapsed = time.monotonic() - started
    print(f"\nlocal preset: {result.status} in {elapsed:.1f} s; answer: {(result.answer or '')[:200]!r}")
    assert result.status == "complete", result.model_dump_json(indent=1)
    assert result.answer_source == "judge"
    assert result.answer
    assert result.answer.strip()
    assert [member.model for member in result.members] == ["smollm2-135m", "smollm2-135m", "gemma3-270m"]
    for member in result.members:
        assert member.status == "ok"
        assert member.text
        assert member.usage.input_tokens > 0
        assert member.usage.output_tokens > 0
    assert result.judge is not None
    assert result.judge.usage.output_tokens > 0
    assert result.usage.total.output_tokens == sum(m.usage.output_tokens for m in result.members) + (
        result.judge.usage.output_tokens
    )
