"""`search_documents`: passages of the user's own documents, from the local index that
`fusion index add` builds (fusion.research.documents)."""

import asyncio
from typing import Any

from fusion_contracts import Source, ToolSpec
from fusion_contracts.limits import MAX_TOOL_RESULTS

from fusion.research.base import ToolOutput
from fusion.research.documents import DocumentIndex, Passage
from fusion.settings import Settings

__all__ = ["DEFAULT_MAX_RESULTS", "MAX_QUERY_CHARS", "SearchDocuments", "search_documents"]

DEFAULT_MAX_RESULTS = 5
MAX_QUERY_CHARS = 400
"""As web_search's: a longer maxLength makes llama.cpp's argument grammar large (docs/research.md)."""
MIN_PASSAGE_CHARS = 200
"""However many passages share the result, each keeps at least this much of its text."""


class SearchDocuments:
    """Searches the index at `index` for passages; at most `max_results` a call, and a text that fits
    in `result_chars` (each passage is shortened to its share rather than the last ones lost)."""

    name = "search_documents"
    description = (
        "Search the user's own documents (a local index of their Markdown, text, HTML and PDF files) "
        "by keywords. Returns the best-matching passages, numbered, each with its document's title, "
        "file name and page; cite a passage by its number."
    )

    def __init__(
        self, index: DocumentIndex, *, max_results: int = DEFAULT_MAX_RESULTS, result_chars: int = 8_000
    ) -> None:
        self._index = index
        self._max_results = max(1, min(max_results, MAX_TOOL_RESULTS))
        self._result_chars = result_chars

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_QUERY_CHARS,
                    "description": "Keywords to look for: names, terms, distinctive words.",
                },
                "max_results": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self._max_results,
                    "description": f"Passages to return (default {self._max_results}).",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        }

    async def run(self, arguments: dict[str, Any]) -> ToolOutput:
        query = str(arguments["query"])[:MAX_QUERY_CHARS]
        limit = max(1, min(int(arguments.get("max_results", self._max_results)), self._max_results))
        # SQLite blocks: off the event loop, on a connection of the worker thread's own.
        passages = await asyncio.to_thread(self._index.search, query, limit)
        if not passages:
            return ToolOutput(f"No passage of the indexed documents matches {query!r}.")
        return ToolOutput(render(passages, self._result_chars), sources(passages))


def render(passages: list[Passage], result_chars: int) -> str:
    """Passages, "[n] title (file name, page p)" over the text, within `result_chars`. `n` numbers
    the passage's document in `sources(passages)` (two passages of one document share it), so a
    member cites the document."""
    share = max(MIN_PASSAGE_CHARS, result_chars // len(passages))
    numbers = {source.url: n for n, source in enumerate(sources(passages), start=1)}
    entries = []
    for passage in passages:
        number = numbers[passage.path.as_uri()]
        where = passage.path.name + (f", page {passage.page}" if passage.page is not None else "")
        header = f"[{number}] {passage.title} ({where})"
        entries.append(f"{header}\n{_shorten(passage.text, share - len(header) - 3)}")
    return "\n\n".join(entries)


def sources(passages: list[Passage]) -> tuple[Source, ...]:
    """One source per document, in the order the passages give them."""
    seen: dict[str, Source] = {}
    for passage in passages:
        url = passage.path.as_uri()
        if url not in seen:
            seen[url] = Source(url=url, title=passage.title)
    return tuple(seen.values())


def _shorten(text: str, limit: int) -> str:
    limit = max(limit, MIN_PASSAGE_CHARS)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def search_documents(settings: Settings, spec: ToolSpec | None = None) -> SearchDocuments:
    """The tool over `settings.document_index`, returning up to the spec's `max_results` passages."""
    if spec is not None and spec.type != "search_documents":
        raise ValueError(f"a {spec.type} spec is not for search_documents")
    max_results = spec.max_results if spec is not None and spec.max_results is not None else None
    return SearchDocuments(
        DocumentIndex(settings.document_index),
        max_results=max_results or DEFAULT_MAX_RESULTS,
        result_chars=settings.tool_result_chars,
    )
