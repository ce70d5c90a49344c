"""Tool calling through the model router, in OpenAI's and Anthropic's shapes (httpx.MockTransport)."""

import json
from typing import Any

import httpx
import pytest
from fusion.catalog import Catalog
from fusion.models import ToolCall, ToolDefinition, ToolRound
from fusion.research.base import CALLER_HEADER
from fusion_contracts import ChatMessage, ModelSpec

from tests.unit.test_providers import catalog, router, scripted

__all__ = ["catalog"]  # the fixture, shared with test_providers

HI = [ChatMessage(role="user", content="When did the Kestrel Bridge open?")]
SEARCH = ToolDefinition(
    "web_search", "Searches the web.", {"type": "object", "properties": {"query": {"type": "string"}}}
)
ROUND = ToolRound(
    calls=(ToolCall("call_a", "web_search", '{"query": "kestrel bridge"}'),),
    results=("[1] Kestrel Bridge\nhttps://site.example/kestrel",),
    text="Let me look.",
)

OPENAI_CALLS = {
    "choices": [
        {
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_x",
                        "type": "function",
                        "function": {"name": "web_fetch", "arguments": '{"url": "u"}'},
                    },
                    {"type": "function", "function": {"name": "web_search", "arguments": {"query": "q"}}},
                ],
            }
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3},
}
ANTHROPIC_CALLS = {
    "content": [
        {"type": "text", "text": "Searching."},
        {"type": "tool_use", "id": "toolu_1", "name": "web_search", "input": {"query": "q"}},
    ],
    "usage": {"input_tokens": 5, "output_tokens": 3},
}


async def call(
    catalog: Catalog, shape: str, response: dict[str, Any], **kw: Any
) -> tuple[Any, dict[str, Any], httpx.Request]:
    handler, seen = scripted(httpx.Response(200, json=response))
    models = router(catalog, handler)
    reply = await models.complete_with_tools(ModelSpec(model=shape), HI, [SEARCH], [ROUND], **kw)
    await models.aclose()
    return reply, json.loads(seen[-1].content), seen[-1]


async def test_openai_shape_lists_tools_replays_rounds_and_reads_calls(catalog: Catalog) -> None:
    reply, body, request = await call(catalog, "openai", OPENAI_CALLS)

    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "web_search",
                "description": "Searches the web.",
                "parameters": SEARCH.parameters,
            },
        }
    ]
    assert body["tool_choice"] == "auto"
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "web_search", "arguments": '{"query": "kestrel bridge"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": ROUND.results[0]},
    ]
    assert reply.text == ""
    assert reply.tool_calls == (
        ToolCall("call_x", "web_fetch", '{"url": "u"}'),
        ToolCall(
            "call_1", "web_search", '{"query": "q"}'
        ),  # no id sent: one is made; an object is kept as JSON
    )
    assert request.headers[CALLER_HEADER] == "fusion"


async def test_anthropic_shape_lists_tools_replays_rounds_and_reads_calls(catalog: Catalog) -> None:
    reply, body, request = await call(catalog, "anthropic", ANTHROPIC_CALLS, tool_choice="none")

    assert body["tools"] == [
        {"name": "web_search", "description": "Searches the web.", "input_schema": SEARCH.parameters}
    ]
    assert body["tool_choice"] == {"type": "none"}
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "web_search",
                    "input": {"query": "kestrel bridge"},
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_a", "content": ROUND.results[0]}],
        },
    ]
    assert reply.text == "Searching."
    assert reply.tool_calls == (ToolCall("toolu_1", "web_search", '{"query": "q"}'),)
    assert request.headers[CALLER_HEADER] == "fusion"


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_a_plain_call_offers_no_tools_but_still_says_it_is_fusions(
    catalog: Catalog, shape: str
) -> None:
    response = (
        {"choices": [{"message": {"role": "assistant", "content": "1937."}}]}
        if shape == "openai"
        else {"content": [{"type": "text", "text": "1937."}]}
    )
    handler, seen = scripted(httpx.Response(200, json=response))
    models = router(catalog, handler)
    reply = await models.complete(ModelSpec(model=shape), HI)
    await models.aclose()
    body = json.loads(seen[-1].content)
    assert "tools" not in body
    assert reply.text == "1937."
    assert reply.tool_calls == ()
    assert seen[-1].headers[CALLER_HEADER] == "fusion"
