"""End to end: a real llama.cpp model calls research tools. SmolLM2 135M behind llama.cpp's
ChatML function-calling handler (`smollm2-135m-tools`) searches the stand-in search server, which
lists the local test site's pages; the services run as processes on the real broker."""

import time

import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, Policy, ToolSpec

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


async def test_a_local_model_calls_web_search_through_llama_cpp(
    local_models: str, client: FusionClient
) -> None:
    request = FusionRequest(
        messages=[ChatMessage(role="user", content="When did the Kestrel Bridge open?")],
        panel=[ModelSpec(model="smollm2-135m-tools", max_tokens=200), ModelSpec(model="smollm2-135m")],
        judge=ModelSpec(model="smollm2-135m"),
        strategy="vote",
        tools=[ToolSpec(type="web_search", max_results=3)],
        max_tool_calls=2,
        policy=Policy(deadline_s=300),
    )
    started = time.monotonic()

    result = await client.fuse(request)

    elapsed = time.monotonic() - started
    researcher, plain = result.members
    print(
        f"\nlocal research: {result.status} in {elapsed:.1f} s; tool calls {researcher.tool_calls}; "
        f"sources {[s.url for s in researcher.sources]}; answer {(researcher.text or '')[:160]!r}"
    )
    assert result.status in ("complete", "partial"), result.model_dump_json(indent=1)
    # The model's calls were valid for the tool's schema (llama.cpp constrains them to it), so the
    # panel worker ran them: every call up to the limit counted, then a last turn without tools.
    assert researcher.status == "ok", researcher.error
    assert researcher.tool_calls == {"web_search": 2}
    assert researcher.text
    assert researcher.usage.output_tokens > 0
    assert plain.status == "ok"
    assert plain.tool_calls == {}  # the plain chat format calls no tool: it answers as before
