"""Markdown to HTML that is safe to put in a page: model answers are untrusted text.

Raw HTML in the Markdown is escaped (markdown-it with `html=False`), so a model that writes
`<script>` shows that text instead of running it; nh3 then keeps only an allow-list of tags and
attributes, drops links that are not absolute http(s)/mailto (a relative link would point into the
Studio itself) and marks the rest `rel="noopener noreferrer"`.
Images are not rendered (a remote image would tell its server who read the answer): their Markdown
becomes a link."""

from functools import cache

import nh3
from markdown_it import MarkdownIt

__all__ = ["MAX_MARKDOWN_CHARS", "markdown_html"]

MAX_MARKDOWN_CHARS = 200_000
"""More than any answer (`MAX_ANSWER_CHARS`) with room for a conversation; bounds the work per call."""

TAGS = frozenset(
    {
        *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code"),
        *("strong", "em", "s", "del", "sup", "sub", "a", "ul", "ol", "li"),
        *("table", "thead", "tbody", "tr", "th", "td"),
    }
)
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"]).disable("image")


@cache
def _cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(TAGS),
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        url_relative="deny",
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


def markdown_html(text: str) -> str:
    """`text` as sanitized HTML; the input is cut at `MAX_MARKDOWN_CHARS`."""
    return _cleaner().clean(_parser().render(text[:MAX_MARKDOWN_CHARS]))
