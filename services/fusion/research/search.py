"""The `web_search` tool: one query to the search API the catalog names, its hits as numbered text
and sources.

The four API shapes are pure functions in `fusion.research.search_apis`. `WebSearch` sends
the request, bounds the reply, maps every failure to one `ToolError` line without the key, and filters
the hits by the tool's domains (also when the API filtered them itself: its notion of a domain may
differ from `domain_matches`).
"""

import asyncio
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
from fusion_contracts import Source, ToolSpec
from fusion_contracts.limits import MAX_TOOL_RESULTS

from fusion.catalog import Catalog, SearchBackend
from fusion.research.base import CALLER, CALLER_HEADER, ToolError, ToolOutput, domain_matches
from fusion.research.search_apis import (
    API_MAX_RESULTS,
    APIS,
    SNIPPET_CHARS,
    Hit,
    Query,
    SearchRequest,
)

DEFAULT_RESULTS = 5
"""Results per call when neither the model nor the tool's spec asks for a number."""
MAX_QUERY_CHARS = 400
"""Brave's limit on a query, and a generous one for the others."""
TITLE_CHARS = 500  # Source.title's limit
_URL_CHARS = 2_000  # Source.url's limit
_FILTER_HEADROOM = 5
"""Extra results asked for when hits are filtered by domain, so that the count still fits after."""
_MAX_REPLY_BYTES = 4 * 1024 * 1024
"""A search reply larger than this is a broken or hostile backend, not results."""
_ERROR_CHARS = 200


# --- Filtering and output ---------------------------------------------------------------------------


def _host(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return parts.hostname if parts.scheme in ("http", "https") else None


def filter_hits(
    hits: Iterable[Hit], count: int, allowed: Iterable[str] | None = None, excluded: Iterable[str] = ()
) -> list[Hit]:
    """The first `count` hits with a web URL on an allowed domain (any when `allowed` is None) and no
    excluded one, each URL once."""
    allowed_list = None if allowed is None else list(allowed)
    excluded_list = list(excluded)
    kept: list[Hit] = []
    seen: set[str] = set()
    for hit in hits:
        host = _host(hit.url)
        if host is None or hit.url in seen or len(hit.url) > _URL_CHARS:
            continue
        if allowed_list is not None and not domain_matches(host, allowed_list):
            continue
        if domain_matches(host, excluded_list):
            continue
        seen.add(hit.url)
        kept.append(hit)
        if len(kept) == count:
            break
    return kept


def format_hits(query: str, hits: list[Hit]) -> ToolOutput:
    """Numbered results as the model reads them, with one source per hit in the same order."""
    if not hits:
        return ToolOutput(text=f"No web results for: {query}")
    blocks = []
    for number, hit in enumerate(hits, start=1):
        lines = [f"[{number}] {hit.title[:TITLE_CHARS] or '(untitled)'}", hit.url]
        if hit.snippet:
            lines.append(hit.snippet[:SNIPPET_CHARS])
        blocks.append("\n".join(lines))
    sources = tuple(Source(url=hit.url, title=hit.title[:TITLE_CHARS]) for hit in hits)
    return ToolOutput(text="\n\n".join(blocks), sources=sources)


# --- The tool --------------------------------------------------------------------------------------


def _error_message(body: object, depth: int = 0) -> str:
    """The reason in an error reply, whatever the API's envelope: Brave's {"error": {"detail"}},
    Tavily's {"detail": {"error"}}, Exa's {"error"}; the whole body otherwise."""
    if isinstance(body, dict) and depth < 3:
        for key in ("detail", "error", "message"):
            if key in body:
                return _error_message(body[key], depth + 1)
    return body if isinstance(body, str) else str(body)


class WebSearch:
    """The `web_search` tool over one search backend of the catalog. Owns its HTTP client: `aclose()`."""

    name = "web_search"

    def __init__(
        self,
        backend_name: str,
        backend: SearchBackend,
        spec: ToolSpec,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._backend_name = backend_name
        self._backend = backend
        self._api = APIS[backend.api]
        self._allowed = None if spec.allowed_domains is None else tuple(spec.allowed_domains)
        self._excluded = tuple(spec.excluded_domains)
        self._limit = spec.max_results or MAX_TOOL_RESULTS
        self._default = spec.max_results or DEFAULT_RESULTS
        base_url = backend.base_url or self._api.default_base_url
        if base_url is None:  # the catalog refuses a searxng backend without one
            raise ToolError(f"search backend {backend_name!r} has no base_url")
        self._base_url = base_url.rstrip("/")
        # Redirects are not followed: a key in X-Subscription-Token or x-api-key would go with them.
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(backend.timeout_s),
            follow_redirects=False,
            headers={"accept": "application/json", "user-agent": "fusion"},
        )

    @property
    def backend(self) -> str:
        """The name of the catalog's search backend it uses."""
        return self._backend_name

    @property
    def description(self) -> str:
        text = (
            "Search the web. Returns numbered results, each with its title, URL and a snippet; "
            "cite a result by its URL, and fetch a page to read more than the snippet."
        )
        if self._allowed is not None:
            text += " Results come only from: " + ", ".join(self._allowed) + "."
        if self._excluded:
            text += " Never from: " + ", ".join(self._excluded) + "."
        return text

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_QUERY_CHARS,
                    "description": "What to search for, as you would type it into a search engine.",
                },
                "max_results": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self._limit,
                    "description": f"How many results (default {self._default}).",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        }

    async def run(self, arguments: dict[str, Any]) -> ToolOutput:
        text = " ".join(str(arguments.get("query", "")).split())[:MAX_QUERY_CHARS]
        if not text:
            raise ToolError("web_search needs a non-empty query")
        wanted = arguments.get("max_results")
        count = wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else self._default
        count = max(1, min(count, self._limit))
        if self._allowed == ():  # an empty allow-list allows no result: no search needed
            return format_hits(text, [])
        filtered = self._allowed is not None or bool(self._excluded)
        asked = min(count + _FILTER_HEADROOM, API_MAX_RESULTS) if filtered else count
        query = Query(text, asked, self._allowed, self._excluded)
        key = self._key()
        body = await self._send(self._api.build(query, key), key)
        try:
            hits = self._api.parse(body)
        except ValueError as error:
            raise self._error(f"answered with an unexpected shape ({error})") from None
        return format_hits(text, filter_hits(hits, count, self._allowed, self._excluded))

    def _key(self) -> str:
        if not self._api.needs_key:
            return ""
        if self._backend.key_env is None:
            raise self._error("needs an API key: name its env var in the catalog (key_env)")
        key = self._backend.api_key()
        if not key:
            raise self._error(f"needs an API key: set {self._backend.key_env}")
        return key

    def _error(self, what: str) -> ToolError:
        return ToolError(f"web_search backend {self._backend_name!r} {what}")

    async def _send(self, request: SearchRequest, key: str) -> object:
        """The reply's JSON; every failure on the way is one ToolError line, the key never in it."""
        headers = {**self._backend.headers, **request.headers, CALLER_HEADER: CALLER}
        try:
            # httpx's timeout bounds each read; this bounds the whole reply, however slowly it drips.
            async with (
                asyncio.timeout(self._backend.timeout_s),
                self._client.stream(
                    request.method,
                    self._base_url + request.path,
                    params=request.params or None,
                    json=request.body,
                    headers=headers,
                ) as response,
            ):
                raw = await self._read(response)
        except (httpx.TimeoutException, TimeoutError):
            raise self._error(f"did not answer within {self._backend.timeout_s:g}s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise self._error(f"is unreachable ({type(error).__name__})") from error
        if response.status_code >= 300:
            raise self._error(f"answered HTTP {response.status_code}: {self._detail(raw, key)}")
        try:
            return json.loads(raw)
        except ValueError:  # not JSON, or not in a Unicode encoding
            raise self._error("answered with malformed JSON") from None

    async def _read(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > _MAX_REPLY_BYTES:
                raise self._error(f"answered with more than {_MAX_REPLY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _detail(raw: bytes, key: str) -> str:
        """The reason the API gave, on one line and short, with the key taken out before the cut (a
        cut through it would leave its first characters)."""
        try:
            text = _error_message(json.loads(raw))
        except ValueError:  # an error page, not JSON
            text = raw.decode("utf-8", errors="replace")
        if key:
            text = text.replace(key, "[redacted]")
        return " ".join(text.split())[:_ERROR_CHARS] or "(no reason given)"

    async def aclose(self) -> None:
        await self._client.aclose()


def web_search(
    catalog: Catalog, spec: ToolSpec, *, transport: httpx.AsyncBaseTransport | None = None
) -> WebSearch:
    """The `web_search` tool for `spec`, over its backend or the catalog's default. A backend this
    catalog does not have is a ToolError (the worker leaves the tool out); `Catalog.tools_problem`
    refuses such requests before they reach a worker with the same catalog."""
    name = spec.backend or catalog.default_search_backend
    if name is None:
        raise ToolError("web_search needs a search backend: set default_search_backend in the catalog")
    backend = catalog.search_backends.get(name)
    if backend is None:
        known = ", ".join(sorted(catalog.search_backends)) or "none"
        raise ToolError(f"unknown search backend {name!r} (the catalog has: {known})")
    return WebSearch(name, backend, spec, transport=transport)
