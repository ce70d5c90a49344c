"""Sources and `[n]` citations, from a member's tools to the fused answer. Pure functions.

A member's sources are numbered from 1 in the order its tools returned them (one number per URL),
and its answer cites them as `[n]`. The judge sees the panel's sources merged (deduplicated by URL,
in member order) with every answer's citations renumbered to the merged list, and the fused answer
ends with the list of the sources it cites.
"""

import re
from collections.abc import Mapping, Sequence

from fusion_contracts import Source, limits

_CITATION = re.compile(r"(?<![\w\]\[])\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
"""`[3]` or `[1, 4]`, not an index such as `a[1]` or a link's `[text][1]`."""
_LISTED = re.compile(r"^\[(\d{1,3})\]", re.MULTILINE)
_TRAILING_LIST = re.compile(
    r"\n\s*(?:#{1,6}\s*|\*\*)?(?:sources|references)(?:\*\*)?\s*:?\s*(?:\*\*)?\s*\n(?:.*\n?)*\Z",
    re.IGNORECASE,
)


class SourceBook:
    """One member's sources, numbered from 1 (one number per URL), at most `limits.MAX_SOURCES`."""

    def __init__(self) -> None:
        self.sources: list[Source] = []
        self._numbers: dict[str, int] = {}

    def add(self, source: Source) -> int | None:
        """The source's number; None once the book is full."""
        number = self._numbers.get(source.url)
        if number is None and len(self.sources) < limits.MAX_SOURCES:
            self.sources.append(source)
            number = self._numbers[source.url] = len(self.sources)
        return number

    def cite(self, text: str, sources: Sequence[Source]) -> str:
        """A tool's text with its sources numbered in this book. A tool lists its results as lines
        starting `[k]` (k from 1, for `sources[k-1]`): those get the book's numbers. A text without
        such lines (a fetched page) is headed by the numbers of its sources."""
        numbers = {k: self.add(source) for k, source in enumerate(sources, start=1)}
        if not sources:
            return text
        if _LISTED.search(text):
            return _LISTED.sub(lambda m: f"[{numbers.get(int(m[1])) or '?'}]", text)
        heads = [
            f"[{n}] {s.title or s.url} <{s.url}>" for s, n in zip(sources, numbers.values(), strict=True) if n
        ]
        return "Cite as: " + "; ".join(heads) + "\n\n" + text


def renumber(text: str, mapping: dict[int, int]) -> str:
    """`text` with every citation's numbers mapped; a number with no source is dropped, and a
    citation left with none is removed."""

    def replace(match: re.Match[str]) -> str:
        numbers = [mapping.get(int(part)) for part in match[1].split(",")]
        kept = list(dict.fromkeys(n for n in numbers if n is not None))
        return f"[{', '.join(map(str, kept))}]" if kept else ""

    return _CITATION.sub(replace, text)


def merge(answers: Mapping[int, tuple[str, Sequence[Source]]]) -> tuple[list[Source], dict[int, str]]:
    """The panel's sources deduplicated by URL (members in index order), and each answer's text with
    its citations renumbered to that list. An answer with no sources is left as it is."""
    merged = SourceBook()
    texts: dict[int, str] = {}
    for index in sorted(answers):
        text, sources = answers[index]
        if not sources:
            texts[index] = text
            continue
        mapping = {k: n for k, source in enumerate(sources, start=1) if (n := merged.add(source)) is not None}
        texts[index] = renumber(text, mapping)
    return merged.sources, texts


def cited(text: str) -> list[int]:
    """The source numbers `text` cites, in order of first citation."""
    numbers = (int(part) for match in _CITATION.finditer(text) for part in match[1].split(","))
    return list(dict.fromkeys(numbers))


def source_list(sources: Sequence[Source]) -> str:
    """The numbered list a prompt shows: "[n] title <url>"."""
    return "\n".join(f"[{n}] {s.title or s.url} <{s.url}>" for n, s in enumerate(sources, start=1))


def with_source_list(answer: str, sources: Sequence[Source], *, replace_own: bool = True) -> str:
    """The answer ending with the sources it cites (a list it ended with itself replaced, unless
    `replace_own` is False), within `limits.MAX_ANSWER_CHARS`. An answer that cites none of
    `sources` is returned as it is."""
    body = (_TRAILING_LIST.sub("", answer) if replace_own else answer).rstrip()
    numbers = sorted(n for n in cited(body) if 1 <= n <= len(sources))
    if not numbers:
        return answer
    listed = "\n\nSources:\n" + "\n".join(
        f"[{n}] {sources[n - 1].title or sources[n - 1].url} <{sources[n - 1].url}>" for n in numbers
    )
    listed = listed[: limits.MAX_ANSWER_CHARS // 2]
    return body[: limits.MAX_ANSWER_CHARS - len(listed)] + listed
