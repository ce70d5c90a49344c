"""The four search APIs' shapes, pure: for each, the request a query becomes and the hits read out of
its decoded JSON reply (each parser raises ValueError when the envelope is not the API's), and the
registry `APIS` that `fusion.research.search` picks from.

    SearXNG  GET  {base}/search?q=…&format=json                 results[].url/title/content
    Brave    GET  {base}/res/v1/web/search?q=…&count=…           web.results[].url/title/description
             (X-Subscription-Token: key)
    Tavily   POST {base}/search {query, max_results, include_domains, exclude_domains}
             (Authorization: Bearer key)                         results[].url/title/content
    Exa      POST {base}/search {query, numResults, includeDomains, excludeDomains, contents}
             (x-api-key: key)                                    results[].url/title/highlights|text
"""

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

SNIPPET_CHARS = 500
"""A hit's snippet is cut to this: the model reads many of them, and fetches a page for more."""
API_MAX_RESULTS = 20
"""Results any of the four APIs is asked for at most (Brave's and Tavily's own limit)."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result as every API gives it: where, what it is called, and a bit of its text."""

    url: str
    title: str
    snippet: str


@dataclass(frozen=True, slots=True)
class Query:
    """What one search asks for. `count` is how many results to ask the API for (filtering may keep
    fewer); the domains are the tool's, passed to the APIs that filter natively."""

    text: str
    count: int
    allowed_domains: tuple[str, ...] | None = None
    excluded_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One HTTP request to a search API: `path` joins the backend's base URL."""

    method: Literal["GET", "POST"]
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    """Sent as JSON (POST)."""
    headers: dict[str, str] = field(default_factory=dict)
    """The API's own headers (its key among them); the backend's configured ones are added to them."""


# --- Request builders -------------------------------------------------------------------------------


def _bare(domains: Iterable[str]) -> list[str]:
    """Domains as the hosted APIs take them: "*.example.com" and ".example.com" as "example.com"."""
    bare = (domain.strip().lower().removeprefix("*.").strip(".") for domain in domains)
    return [domain for domain in bare if domain]


def searxng_request(query: Query, key: str = "") -> SearchRequest:
    """SearXNG takes no key and no result count (it answers a page); `format=json` must be enabled
    in the instance's settings (`search.formats`), or it answers 403."""
    return SearchRequest("GET", "/search", params={"q": query.text, "format": "json"})


def brave_request(query: Query, key: str) -> SearchRequest:
    """Brave filters no domains itself; `count` is 1..20."""
    params = {"q": query.text, "count": str(min(query.count, API_MAX_RESULTS))}
    return SearchRequest("GET", "/res/v1/web/search", params=params, headers={"X-Subscription-Token": key})


def tavily_request(query: Query, key: str) -> SearchRequest:
    body: dict[str, Any] = {"query": query.text, "max_results": min(query.count, API_MAX_RESULTS)}
    if query.allowed_domains is not None:
        body["include_domains"] = _bare(query.allowed_domains)
    if query.excluded_domains:
        body["exclude_domains"] = _bare(query.excluded_domains)
    return SearchRequest("POST", "/search", body=body, headers={"Authorization": f"Bearer {key}"})


def exa_request(query: Query, key: str) -> SearchRequest:
    """Asks for highlights only, cut to a snippet's length (text as well would be billed twice)."""
    body: dict[str, Any] = {
        "query": query.text,
        "numResults": min(query.count, API_MAX_RESULTS),
        "contents": {"highlights": {"maxCharacters": SNIPPET_CHARS}},
    }
    if query.allowed_domains is not None:
        body["includeDomains"] = _bare(query.allowed_domains)
    if query.excluded_domains:
        body["excludeDomains"] = _bare(query.excluded_domains)
    return SearchRequest("POST", "/search", body=body, headers={"x-api-key": key})


# --- Reply parsers: each raises ValueError when the envelope is not the API's ---------------------


def _field(container: object, name: str, kind: type, where: str) -> Any:
    if not isinstance(container, dict):
        raise ValueError(f"{where} is not an object")
    value = container.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{where}.{name} is missing or not a {kind.__name__}")
    return value


def _text(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _hits(
    results: list[Any], snippet: Callable[[dict[str, Any]], object], clean: Callable[[object], str] = _text
) -> list[Hit]:
    """The results that name a URL; one that does not is skipped, not fatal."""
    return [
        Hit(url=item["url"].strip(), title=clean(item.get("title")), snippet=clean(snippet(item)))
        for item in results
        if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"].strip()
    ]


def searxng_hits(body: object) -> list[Hit]:
    return _hits(_field(body, "results", list, "reply"), lambda item: item.get("content"))


_TAG = re.compile(r"<[^>]{0,100}>")


def _unmarked(value: object) -> str:
    """Brave's descriptions mark the query's words (<strong>) and escape entities: plain text here."""
    return _text(html.unescape(_TAG.sub("", value))) if isinstance(value, str) else ""


def brave_hits(body: object) -> list[Hit]:
    """Brave leaves `web` out of a reply with no web results."""
    if not isinstance(body, dict):
        raise ValueError("reply is not an object")
    if "web" not in body:
        return []
    results = _field(body["web"], "results", list, "reply.web")
    return _hits(results, lambda item: item.get("description"), clean=_unmarked)


def tavily_hits(body: object) -> list[Hit]:
    return _hits(_field(body, "results", list, "reply"), lambda item: item.get("content"))


def _exa_snippet(item: dict[str, Any]) -> str:
    """Its highlights, or its text when it has none (a request that asked for text)."""
    highlights = item.get("highlights")
    if isinstance(highlights, list):
        joined = " … ".join(_text(part) for part in highlights if isinstance(part, str) and part.strip())
        if joined:
            return joined
    return _text(item.get("text"))


def exa_hits(body: object) -> list[Hit]:
    return _hits(_field(body, "results", list, "reply"), _exa_snippet)


# --- The APIs and the tool --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchApi:
    """How to talk to one search API."""

    build: Callable[[Query, str], SearchRequest]
    parse: Callable[[object], list[Hit]]
    default_base_url: str | None
    needs_key: bool


APIS: dict[str, SearchApi] = {
    "searxng": SearchApi(searxng_request, searxng_hits, default_base_url=None, needs_key=False),
    "brave": SearchApi(brave_request, brave_hits, "https://api.search.brave.com", needs_key=True),
    "tavily": SearchApi(tavily_request, tavily_hits, "https://api.tavily.com", needs_key=True),
    "exa": SearchApi(exa_request, exa_hits, "https://api.exa.ai", needs_key=True),
}
