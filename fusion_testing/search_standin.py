"""A stand-in for the four search APIs `web_search` speaks, for tests only.

It answers from a list of documents given at start (`[{"url", "title", "content"}]`): a document
matches a query when its title or content holds one of the query's words (case-insensitive), and the
documents that hold more of them come first. Each API keeps its own shape, key header and limits:

    GET  /searxng/search?q=…&format=json              no key; 403 unless format=json
    GET  /brave/res/v1/web/search?q=…&count=1..20      X-Subscription-Token: <key>
    POST /tavily/search {query, max_results 0..20, include_domains, exclude_domains}
                                                      Authorization: Bearer <key>
    POST /exa/search {query, numResults 1..100, includeDomains, excludeDomains, contents}
                                                      x-api-key: <key>
    GET  /last/<api>    the last request that API received: {"headers", "params", "body"}
    GET  /health        200 once it serves

A request without the expected key gets 401 with the API's kind of error body, which quotes the key it
was given (as a careless API might): a caller must keep it out of its own errors. Brave's descriptions
mark the query's words with <strong>, as Brave does. With `delay_s` every search answers that late.

Tests start it in a thread with `running_search_standin`; as a process, from the repository's root:

    python -m fusion_testing.search_standin --port 8098 --documents docs.json [--key K] [--delay-ms N]
"""

import argparse
import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import uvicorn

from fusion_testing.serving import served_in_thread

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Document = dict[str, str]
Reply = tuple[int, dict[str, Any] | str]
"""A status and a JSON body (or a text one)."""

DEFAULT_KEY = "standin-search-key"
_WORD = re.compile(r"\w+")
_SEARXNG_PAGE = 20


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _on(url: str, domains: list[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == d.lower() or host.endswith("." + d.lower()) for d in domains)


def _documents(documents: list[Document]) -> list[Document]:
    for document in documents:
        if not all(isinstance(document.get(name), str) for name in ("url", "title", "content")):
            raise ValueError(f"a document needs url, title and content strings: {document!r}")
    return list(documents)


def _bounded(value: object, low: int, high: int, default: int) -> int | None:
    """`value` as an integer within [low, high] (`default` when absent), None when it is not one."""
    if value is None:
        return default
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if low <= number <= high else None


class StandInSearch:
    """The ASGI app: see the module's docstring."""

    def __init__(self, documents: list[Document], key: str = DEFAULT_KEY, delay_s: float = 0.0) -> None:
        self.documents = _documents(documents)
        self.key = key
        self.delay_s = delay_s
        self.last: dict[str, dict[str, Any]] = {}

    def search(
        self, query: str, allowed: list[str] | None = None, excluded: list[str] | None = None
    ) -> list[Document]:
        """The matching documents, most matched words first (the given order between equals)."""
        wanted = _words(query)
        scored = [
            (len(wanted & _words(doc["title"] + " " + doc["content"])), index, doc)
            for index, doc in enumerate(self.documents)
            if (allowed is None or _on(doc["url"], allowed)) and not _on(doc["url"], excluded or [])
        ]
        return [doc for score, _, doc in sorted(scored, key=lambda s: (-s[0], s[1])) if score > 0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        route = _ROUTES.get((method, path))
        if method == "GET" and path == "/health":
            await _reply(send, (200, {"ok": True}))
        elif method == "GET" and path.startswith("/last/"):
            last = self.last.get(path.removeprefix("/last/"))
            await _reply(send, (200, last) if last else (404, {"error": f"no request to {path[6:]} yet"}))
        elif route is None:
            await _reply(send, (404, {"error": f"no route {method} {path}"}))
        else:
            api, answer = route
            raw = await _body(receive)
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
            }
            params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            self.last[api] = {"headers": headers, "params": params, "body": body}
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            await _reply(send, answer(self, headers, params, body))

    def searxng(self, headers: dict[str, str], params: dict[str, str], body: object) -> Reply:
        if params.get("format") != "json":
            return 403, "<html><body>Forbidden</body></html>"  # what SearXNG says to a format it has off
        query = params.get("q", "")
        results = [
            {"url": doc["url"], "title": doc["title"], "content": doc["content"], "engine": "standin"}
            for doc in self.search(query)[:_SEARXNG_PAGE]
        ]
        return 200, {"query": query, "number_of_results": len(results), "results": results, "answers": []}

    def brave(self, headers: dict[str, str], params: dict[str, str], body: object) -> Reply:
        token = headers.get("x-subscription-token", "")
        if token != self.key:
            detail = f"The provided subscription token is invalid: {token}"
            return 401, {
                "type": "ErrorResponse",
                "error": {"code": "SUBSCRIPTION_TOKEN_INVALID", "detail": detail},
            }
        count = _bounded(params.get("count"), 1, 20, 20)
        if count is None:
            return 422, {"type": "ErrorResponse", "error": {"code": "VALIDATION", "detail": "count: 1 to 20"}}
        query = params.get("q", "")
        marked = re.compile("|".join(map(re.escape, _words(query))) or "$^", re.IGNORECASE)
        results = [
            {
                "title": doc["title"],
                "url": doc["url"],
                "description": marked.sub(lambda m: f"<strong>{m.group()}</strong>", doc["content"]),
            }
            for doc in self.search(query)[:count]
        ]
        return 200, {
            "type": "search",
            "query": {"original": query},
            "web": {"type": "search", "results": results},
        }

    def tavily(self, headers: dict[str, str], params: dict[str, str], body: object) -> Reply:
        authorization = headers.get("authorization", "")
        if authorization != f"Bearer {self.key}":
            return 401, {"detail": {"error": f"Unauthorized: missing or invalid API key: {authorization}"}}
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 400, {"detail": {"error": "query is required"}}
        count = _bounded(body.get("max_results"), 0, 20, 5)
        if count is None:
            return 400, {"detail": {"error": "max_results must be between 0 and 20"}}
        found = self.search(body["query"], body.get("include_domains") or None, body.get("exclude_domains"))
        results = [
            {
                "title": doc["title"],
                "url": doc["url"],
                "content": doc["content"],
                "score": 0.5,
                "raw_content": None,
            }
            for doc in found[:count]
        ]
        return 200, {
            "query": body["query"],
            "answer": None,
            "images": [],
            "results": results,
            "response_time": 0.01,
        }

    def exa(self, headers: dict[str, str], params: dict[str, str], body: object) -> Reply:
        key = headers.get("x-api-key", "")
        if key != self.key:
            return 401, {"requestId": "standin", "error": f"Invalid API key: {key}", "tag": "INVALID_API_KEY"}
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 400, {"requestId": "standin", "error": "query is required"}
        count = _bounded(body.get("numResults"), 1, 100, 10)
        if count is None:
            return 400, {"requestId": "standin", "error": "numResults must be between 1 and 100"}
        contents = body.get("contents")
        contents = contents if isinstance(contents, dict) else {}
        found = self.search(body["query"], body.get("includeDomains") or None, body.get("excludeDomains"))
        return 200, {"requestId": "standin", "results": [_exa_result(doc, contents) for doc in found[:count]]}


def _exa_result(doc: Document, contents: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"id": doc["url"], "url": doc["url"], "title": doc["title"]}
    if highlights := contents.get("highlights"):
        limit = highlights.get("maxCharacters", 2000) if isinstance(highlights, dict) else 2000
        result["highlights"] = [doc["content"][:limit]]
        result["highlightScores"] = [0.5]
    if contents.get("text"):
        result["text"] = doc["content"]
    return result


_ROUTES: dict[tuple[str, str], tuple[str, Callable[..., Reply]]] = {
    ("GET", "/searxng/search"): ("searxng", StandInSearch.searxng),
    ("GET", "/brave/res/v1/web/search"): ("brave", StandInSearch.brave),
    ("POST", "/tavily/search"): ("tavily", StandInSearch.tavily),
    ("POST", "/exa/search"): ("exa", StandInSearch.exa),
}


async def _body(receive: Receive) -> bytes:
    body = b""
    while True:
        event = await receive()
        body += bytes(event.get("body", b""))
        if not event.get("more_body"):
            return body


async def _reply(send: Send, reply: Reply) -> None:
    status, payload = reply
    if isinstance(payload, str):
        body, content_type = payload.encode(), b"text/html"
    else:
        body, content_type = json.dumps(payload).encode(), b"application/json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running_search_standin(
    documents: list[Document], port: int = 0, key: str = DEFAULT_KEY, delay_s: float = 0.0
) -> Iterator[str]:
    """The stand-in served on 127.0.0.1 by a background thread (on a free port when `port` is 0), from
    when it serves to the end of the block: yields its base URL (a backend's base_url is that plus
    "/searxng", "/brave", "/tavily" or "/exa")."""
    app = StandInSearch(documents, key=key, delay_s=delay_s)
    with served_in_thread(app, port, "the search stand-in", lifespan="on") as bound:
        yield f"http://127.0.0.1:{bound}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--documents", type=Path, required=True, help="a JSON list of {url, title, content}")
    parser.add_argument("--key", default=DEFAULT_KEY, help="the key the hosted APIs expect")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="how late every search answers")
    args = parser.parse_args()
    documents = json.loads(args.documents.read_text(encoding="utf-8"))
    app = StandInSearch(documents, key=args.key, delay_s=args.delay_ms / 1000)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
