"""Research panels end to end: members that search, fetch, read the document index and call an MCP
server, over Kafka and through the gateway, with the services as processes on the real broker.

The models are stand-ins that call the tools they are offered (fusion_testing/researcher.py); the
search backend is a stand-in server listing the local test site's pages (fusion_testing/test_site.py),
which the panel worker fetches for real; the document index holds tests/data/corpus; the MCP server is
fusion_testing/mcp_server.py, started by the panel worker over stdio.
"""

import re
from typing import Any

import httpx
import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, ModelSpec, ToolSpec

from fusion_testing.stack import TEST_SITE_PORT

pytestmark = [pytest.mark.kafka]

SITE = f"http://127.0.0.1:{TEST_SITE_PORT}"
KESTREL = f"{SITE}/articles/kestrel-bridge"


def ask(question: str, *members: str, tools: list[dict[str, Any]] | None, **fields: Any) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content=question)],
        panel=[ModelSpec(model=model) for model in members],
        judge=ModelSpec(model="fast"),
        tools=None if tools is None else [ToolSpec.model_validate(tool) for tool in tools],
        **fields,
    )


def researcher(result: FusedResult) -> Any:
    (member,) = [m for m in result.members if m.model == "researcher"]
    return member


def cited_list(answer: str) -> list[tuple[int, str]]:
    """The (number, url) pairs of the answer's closing source list."""
    _, _, tail = answer.partition("\n\nSources:\n")
    return [(int(n), url) for n, url in re.findall(r"^\[(\d+)\] .*<(\S+)>$", tail, re.MULTILINE)]


async def test_a_member_searches_fetches_and_the_fused_answer_cites_its_sources(client: FusionClient) -> None:
    result = await client.fuse(
        FusionRequest(messages=[ChatMessage(role="user", content="Kestrel Bridge opened")], preset="research")
    )

    assert result.status == "complete", result.error
    member = researcher(result)
    assert member.tool_calls == {"web_search": 1, "web_fetch": 1}
    urls = [source.url for source in member.sources]
    assert KESTREL in urls  # found by the search, then fetched for real from the test site
    assert "1937" in (member.text or "")  # read from the fetched page
    assert re.search(r"\[\d\]", member.text or "")
    # The result's sources are the panel's, deduplicated; the answer cites them and lists them.
    assert [s.url for s in result.sources] == list(dict.fromkeys(urls))
    assert result.answer_source == "judge"
    listed = cited_list(result.answer or "")
    assert listed, result.answer
    for number, url in listed:
        assert result.sources[number - 1].url == url
    other = [m for m in result.members if m.model == "fast"]
    assert other[0].tool_calls == {}  # a model that calls no tool answers as before


async def test_a_request_without_tools_does_no_research(client: FusionClient) -> None:
    result = await client.fuse(
        FusionRequest(
            messages=[ChatMessage(role="user", content="Kestrel Bridge opened")], preset="research", tools=[]
        )
    )
    assert result.status == "complete", result.error
    assert researcher(result).tool_calls == {}
    assert result.sources == []


async def test_search_documents_answers_from_the_local_corpus(client: FusionClient) -> None:
    result = await client.fuse(
        ask(
            "Halvorsen Observatory opened to the public",
            "researcher",
            "fast",
            tools=[{"type": "search_documents"}],
        )
    )

    assert result.status == "complete", result.error
    member = researcher(result)
    assert member.tool_calls == {"search_documents": 1}
    assert member.sources
    assert all(s.url.startswith("file://") and "/tests/data/corpus/" in s.url for s in member.sources)
    assert "1923" in (member.text or "")
    assert cited_list(result.answer or "")


async def test_a_member_calls_an_mcp_servers_tool(client: FusionClient) -> None:
    result = await client.fuse(
        ask("What is the code word?", "researcher", "fast", tools=[{"type": "mcp", "server": "testmcp"}])
    )

    assert result.status == "complete", result.error
    member = researcher(result)
    assert member.tool_calls == {"mcp_testmcp_lookup_code": 1}
    assert "AMBER-7" in (member.text or "")


async def test_the_tool_call_limit_ends_in_an_answer(client: FusionClient) -> None:
    result = await client.fuse(
        ask("Spin", "tool-spinner", "fast", tools=[{"type": "web_search"}], max_tool_calls=2)
    )
    assert result.status == "complete", result.error
    (spinner,) = [m for m in result.members if m.model == "tool-spinner"]
    assert spinner.tool_calls == {"web_search": 2}
    assert spinner.text == "Out of tool calls after 2 results."


async def test_bad_tool_calls_go_back_to_the_model_and_the_worker_carries_on(client: FusionClient) -> None:
    result = await client.fuse(ask("Garbage", "tool-garbage", "fast", tools=[{"type": "web_search"}]))
    assert result.status == "complete", result.error
    (garbage,) = [m for m in result.members if m.model == "tool-garbage"]
    assert "there is no tool named 'no_such_tool'" in (garbage.text or "")
    assert "not valid JSON" in (garbage.text or "")
    after = await client.fuse(ask("Still there?", "fast", "fast", tools=None))
    assert after.status == "complete"


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        (f"{SITE}/redirect?to=http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        (f"{SITE}/redirect?to=http://127.0.0.1:{TEST_SITE_PORT + 1}/", "loopback"),
        (f"{SITE}/huge", "cut"),
        (f"{SITE}/binary", "unsupported content type"),
    ],
)
async def test_fetch_limits_hold_inside_the_panel_worker(
    client: FusionClient, url: str, refusal: str
) -> None:
    result = await client.fuse(ask(f"Read {url}", "researcher", "fast", tools=[{"type": "web_fetch"}]))
    assert result.status == "complete", result.error
    member = researcher(result)
    assert member.tool_calls == {"web_fetch": 1}
    assert refusal in (member.text or "").lower() or refusal in (member.text or "")


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        ([{"type": "mcp", "server": "nowhere"}], "unknown MCP server 'nowhere'"),
        ([{"type": "web_search", "backend": "gone"}], "unknown search backend 'gone'"),
    ],
)
async def test_tools_the_catalog_cannot_offer_are_rejected(
    client: FusionClient, tools: list[dict[str, Any]], problem: str
) -> None:
    result = await client.fuse(ask("Unknown tools", "researcher", "fast", tools=tools))
    assert result.status == "rejected"
    assert result.failure_reason == "invalid_request"
    assert problem in (result.error or "")


async def test_through_the_gateway_the_answer_has_annotations_and_tool_use(gateways: list[str]) -> None:
    body = {
        "model": "fusion/research",
        "messages": [{"role": "user", "content": "Kestrel Bridge opened"}],
        "fusion": {
            "tools": [{"type": "web_search", "max_results": 2}, {"type": "web_fetch"}],
            "max_tool_calls": 3,
        },
    }
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(f"{gateways[0]}/v1/chat/completions", json=body)

    assert response.status_code == 200, response.text
    reply = response.json()
    message = reply["choices"][0]["message"]
    assert "\n\nSources:\n" in message["content"]
    assert message["annotations"]
    for note in message["annotations"]:
        citation = note["url_citation"]
        assert message["content"][citation["start_index"] : citation["end_index"]].startswith("[")
    assert reply["usage"]["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 1}
    assert KESTREL in [source["url"] for source in reply["fusion"]["sources"]]


async def test_a_member_that_is_fusion_itself_is_refused_not_looped(
    client: FusionClient, gateways: list[str]
) -> None:
    result = await client.fuse(ask("Loop?", "fusion-itself", "fast", tools=None))

    (itself,) = [m for m in result.members if m.model == "fusion-itself"]
    assert itself.status == "error"
    assert itself.error_status == 403
    assert "Fusion cannot call itself" in (itself.error or "")
    assert result.status == "partial"  # the other member's answer stands
    assert result.failure_reason == "some_members_failed"
