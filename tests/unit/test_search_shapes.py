"""fusion.research.search without I/O: each API's request and reply shape, domain filtering, the text
the model reads, and the tool's schema and factory."""

from typing import Any

import pytest
from fusion.catalog import Catalog
from fusion.research.base import ToolError
from fusion.research.search import WebSearch, filter_hits, format_hits, web_search
from fusion.research.search_apis import (
    Hit,
    Query,
    brave_hits,
    brave_request,
    exa_hits,
    exa_request,
    searxng_hits,
    searxng_request,
    tavily_hits,
    tavily_request,
)
from fusion_contracts import Source, ToolSpec

KEY = "test-key-0123"


# --- Requests ---------------------------------------------------------------------------------------


def test_searxng_request_asks_for_json_and_sends_no_key() -> None:
    request = searxng_request(Query("why is the sky blue", 5), KEY)
    assert (request.method, request.path) == ("GET", "/search")
    assert request.params == {"q": "why is the sky blue", "format": "json"}
    assert request.body is None
    assert request.headers == {}


def test_brave_request_sends_the_key_in_its_header_and_caps_count_at_20() -> None:
    request = brave_request(Query("sky", 7), KEY)
    assert (request.method, request.path) == ("GET", "/res/v1/web/search")
    assert request.params == {"q": "sky", "count": "7"}
    assert request.headers == {"X-Subscription-Token": KEY}
    assert brave_request(Query("sky", 25), KEY).params["count"] == "20"


def test_brave_request_leaves_domains_to_the_tool() -> None:
    request = brave_request(Query("sky", 5, ("example.com",), ("spam.test",)), KEY)
    assert set(request.params) == {"q", "count"}


def test_tavily_request_is_a_bearer_post_with_native_domain_filters() -> None:
    request = tavily_request(Query("sky", 8, ("*.Example.com", ".nasa.gov"), ("spam.test",)), KEY)
    assert (request.method, request.path) == ("POST", "/search")
    assert request.headers == {"Authorization": f"Bearer {KEY}"}
    assert request.body == {
        "query": "sky",
        "max_results": 8,
        "include_domains": ["example.com", "nasa.gov"],
        "exclude_domains": ["spam.test"],
    }


def test_tavily_request_without_filters_sends_none_and_never_the_key_in_the_body() -> None:
    request = tavily_request(Query("sky", 30), KEY)
    assert request.body == {"query": "sky", "max_results": 20}
    assert KEY not in str(request.body)


def test_exa_request_uses_x_api_key_camel_case_and_asks_for_highlights() -> None:
    request = exa_request(Query("sky", 6, ("example.com",), ("spam.test",)), KEY)
    assert (request.method, request.path) == ("POST", "/search")
    assert request.headers == {"x-api-key": KEY}
    assert request.body is not None
    assert request.body["query"] == "sky"
    assert request.body["numResults"] == 6
    assert request.body["includeDomains"] == ["example.com"]
    assert request.body["excludeDomains"] == ["spam.test"]
    assert set(request.body["contents"]) == {"highlights"}
    assert request.body["contents"]["highlights"]["maxCharacters"] > 0


# --- Replies ----------------------------------------------------------------------------------------

SEARXNG_REPLY = {
    "query": "sky",
    "number_of_results": 2,
    "results": [
        {"url": "https://a.example/1", "title": "One", "content": "First  result\n text", "engine": "bing"},
        {"url": "https://b.example/2", "title": "Two", "engine": "ddg"},
    ],
    "answers": [],
    "infoboxes": [],
}
BRAVE_REPLY = {
    "type": "search",
    "query": {"original": "sky"},
    "web": {
        "type": "search",
        "results": [
            {
                "title": "Why the <strong>sky</strong> is blue",
                "url": "https://a.example/1",
                "description": "The <strong>sky</strong> looks blue &amp; that&#x27;s Rayleigh.",
                "extra_snippets": ["ignored"],
            }
        ],
    },
}
TAVILY_REPLY = {
    "query": "sky",
    "answer": None,
    "images": [],
    "results": [
        {
            "title": "One",
            "url": "https://a.example/1",
            "content": "Tavily snippet",
            "score": 0.8,
            "raw_content": None,
        }
    ],
    "response_time": "1.67",
}
EXA_REPLY = {
    "requestId": "b5947044c4b78efa9552a7c89b306d95",
    "results": [
        {
            "id": "x",
            "url": "https://a.example/1",
            "title": "One",
            "highlights": ["First part.", "Second part."],
        },
        {"id": "y", "url": "https://b.example/2", "title": "Two", "text": "Only text here."},
        {"id": "z", "url": "https://c.example/3", "title": None},
    ],
}


def test_searxng_hits_read_url_title_and_content() -> None:
    assert searxng_hits(SEARXNG_REPLY) == [
        Hit("https://a.example/1", "One", "First result text"),
        Hit("https://b.example/2", "Two", ""),
    ]


def test_brave_hits_read_description_as_plain_text() -> None:
    assert brave_hits(BRAVE_REPLY) == [
        Hit("https://a.example/1", "Why the sky is blue", "The sky looks blue & that's Rayleigh.")
    ]


def test_brave_hits_without_web_section_are_none() -> None:
    assert brave_hits({"type": "search", "query": {"original": "zzz"}}) == []


def test_tavily_hits_read_content() -> None:
    assert tavily_hits(TAVILY_REPLY) == [Hit("https://a.example/1", "One", "Tavily snippet")]


def test_exa_hits_prefer_highlights_then_text() -> None:
    assert exa_hits(EXA_REPLY) == [
        Hit("https://a.example/1", "One", "First part. … Second part."),
        Hit("https://b.example/2", "Two", "Only text here."),
        Hit("https://c.example/3", "", ""),
    ]


@pytest.mark.parametrize("parse", [searxng_hits, tavily_hits, exa_hits, brave_hits])
def test_empty_results_are_no_hits(parse: Any) -> None:
    body: dict[str, Any] = {"web": {"results": []}} if parse is brave_hits else {"results": []}
    assert parse(body) == []


@pytest.mark.parametrize("parse", [searxng_hits, tavily_hits, exa_hits])
@pytest.mark.parametrize("body", [[], "results", None, {}, {"results": None}, {"results": {"url": "x"}}])
def test_a_reply_of_another_shape_is_refused(parse: Any, body: object) -> None:
    with pytest.raises(ValueError, match="reply"):
        parse(body)


@pytest.mark.parametrize("body", [[], "web", {"web": []}, {"web": {"results": "none"}}, {"web": {}}])
def test_a_brave_reply_of_another_shape_is_refused(body: object) -> None:
    with pytest.raises(ValueError, match="reply"):
        brave_hits(body)


def test_results_without_a_url_are_skipped_not_fatal() -> None:
    body = {
        "results": ["junk", {"title": "no url"}, {"url": 12}, {"url": "  "}, {"url": "https://ok.example/"}]
    }
    assert tavily_hits(body) == [Hit("https://ok.example/", "", "")]


# --- Filtering and output ---------------------------------------------------------------------------

HITS = [
    Hit("https://www.example.com/a", "A", "a"),
    Hit("https://spam.test/b", "B", "b"),
    Hit("https://docs.example.com/c", "C", "c"),
    Hit("https://www.example.com/a", "A again", "dup"),
    Hit("ftp://example.com/d", "D", "not the web"),
    Hit("https://nasa.gov/e", "E", "e"),
    Hit("https://notexample.com/f", "F", "f"),
]


def test_filter_keeps_every_web_hit_once_in_order() -> None:
    urls = [hit.url for hit in filter_hits(HITS, 10)]
    assert urls == [
        "https://www.example.com/a",
        "https://spam.test/b",
        "https://docs.example.com/c",
        "https://nasa.gov/e",
        "https://notexample.com/f",
    ]


def test_filter_allows_domains_and_their_subdomains_only() -> None:
    kept = filter_hits(HITS, 10, allowed=["example.com"])
    assert [hit.title for hit in kept] == ["A", "C"]


def test_filter_excludes_domains() -> None:
    kept = filter_hits(HITS, 10, excluded=["spam.test", "*.example.com"])
    assert [hit.title for hit in kept] == ["E", "F"]


def test_filter_stops_at_the_count_after_filtering() -> None:
    assert [hit.title for hit in filter_hits(HITS, 2, excluded=["spam.test"])] == ["A", "C"]


def test_an_empty_allow_list_allows_nothing() -> None:
    assert filter_hits(HITS, 10, allowed=[]) == []


def test_format_numbers_hits_and_gives_one_source_each() -> None:
    output = format_hits(
        "sky", [Hit("https://a.example/1", "One", "first"), Hit("https://b.example/2", "", "")]
    )
    assert output.text == "[1] One\nhttps://a.example/1\nfirst\n\n[2] (untitled)\nhttps://b.example/2"
    assert output.sources == (
        Source(url="https://a.example/1", title="One"),
        Source(url="https://b.example/2"),
    )


def test_format_without_hits_says_so() -> None:
    output = format_hits("zzz qqq", [])
    assert output.text == "No web results for: zzz qqq"
    assert output.sources == ()


def test_format_cuts_long_snippets_and_titles() -> None:
    output = format_hits("x", [Hit("https://a.example/", "T" * 900, "s" * 5000)])
    title_line, _, snippet = output.text.split("\n")
    assert len(title_line) < 520
    assert len(snippet) <= 500
    assert len(output.sources[0].title) == 500


# --- The tool's schema and its factory --------------------------------------------------------------


def catalog(**backends: dict[str, Any]) -> Catalog:
    return Catalog.model_validate(
        {
            "default_preset": "p",
            "providers": {"prov": {"api": "openai", "base_url": "http://prov.test/v1"}},
            "models": {"m": {"provider": "prov", "id": "m"}},
            "presets": {"p": {"panel": [{"model": "m"}], "judge": {"model": "m"}}},
            "search_backends": backends,
            "default_search_backend": next(iter(backends), None),
        }
    )


SEARX = {"api": "searxng", "base_url": "http://searx.test"}


def test_parameters_bound_max_results_by_the_spec() -> None:
    tool = WebSearch("s", catalog(s=SEARX).search_backends["s"], ToolSpec(type="web_search", max_results=3))
    schema = tool.parameters
    assert tool.name == "web_search"
    assert schema["required"] == ["query"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["query"] == {
        **schema["properties"]["query"],
        "minLength": 1,
        "maxLength": 400,
    }
    assert schema["properties"]["max_results"]["maximum"] == 3


def test_parameters_without_a_spec_bound_allow_twenty() -> None:
    tool = WebSearch("s", catalog(s=SEARX).search_backends["s"], ToolSpec(type="web_search"))
    assert tool.parameters["properties"]["max_results"]["maximum"] == 20
    assert "default 5" in tool.parameters["properties"]["max_results"]["description"]


def test_description_names_the_domains_the_results_come_from() -> None:
    spec = ToolSpec(type="web_search", allowed_domains=["nasa.gov"], excluded_domains=["spam.test"])
    description = WebSearch("s", catalog(s=SEARX).search_backends["s"], spec).description
    assert "nasa.gov" in description
    assert "spam.test" in description


async def test_the_factory_picks_the_spec_backend_over_the_default() -> None:
    cat = catalog(first=SEARX, second={"api": "brave"})
    tool = web_search(cat, ToolSpec(type="web_search", backend="second"))
    try:
        assert tool.backend == "second"
    finally:
        await tool.aclose()


def test_the_factory_refuses_a_catalog_without_backends() -> None:
    with pytest.raises(ToolError, match="default_search_backend"):
        web_search(catalog(), ToolSpec(type="web_search"))


def test_the_factory_refuses_an_unknown_backend() -> None:
    with pytest.raises(ToolError, match=r"unknown search backend 'nope' \(the catalog has: s\)"):
        web_search(catalog(s=SEARX), ToolSpec(type="web_search", backend="nope"))
