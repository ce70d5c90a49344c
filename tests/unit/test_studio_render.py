"""The Studio's Markdown renderer: model answers are hostile until sanitized."""

from html.parser import HTMLParser

import pytest
from fusion.studio.render import MAX_MARKDOWN_CHARS, markdown_html

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)>"


class Elements(HTMLParser):
    """The elements and attributes an HTML fragment really has (text that looks like HTML is text)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    @property
    def tags(self) -> set[str]:
        return {tag for tag, _ in self.found}

    def attributes(self) -> set[str]:
        return {name for _, attrs in self.found for name in attrs}


def test_raw_html_is_shown_as_text_never_as_elements() -> None:
    html = markdown_html(f"Hello {HOSTILE}")

    elements = Elements(html)
    assert elements.tags == {"p"}
    assert not any(name.startswith("on") for name in elements.attributes())
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    "link",
    [
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "[click](vbscript:msgbox(1))",
        "[click](data:text/html;base64,PHNjcmlwdD4=)",
        "<javascript:alert(1)>",
    ],
)
def test_script_links_do_not_become_links(link: str) -> None:
    html = markdown_html(link)

    hrefs = [attrs.get("href") for tag, attrs in Elements(html).found if tag == "a"]
    assert all(href and href.startswith(("http:", "https:", "mailto:")) for href in hrefs)


def test_links_open_without_opener_or_referrer_and_relative_ones_lose_their_target() -> None:
    html = markdown_html("[docs](https://example.com/a?b=1) and [sign out](/studio/logout)")

    links = [attrs for tag, attrs in Elements(html).found if tag == "a"]
    assert links[0] == {"href": "https://example.com/a?b=1", "rel": "noopener noreferrer"}
    assert "href" not in links[1]


def test_images_are_not_loaded() -> None:
    html = markdown_html("![tracker](https://evil.example/pixel.png)")

    assert "img" not in Elements(html).tags


def test_markdown_formatting_is_kept() -> None:
    text = (
        "# Title\n\nSome **bold**, *italic*, ~~old~~ and `code`.\n\n"
        "- one\n- two\n\n1. first\n\n> quoted\n\n```python\nprint('<b>')\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    html = markdown_html(text)

    tags = Elements(html).tags
    assert {"h1", "strong", "em", "s", "code", "ul", "ol", "li", "blockquote", "pre", "table", "td"} <= tags
    assert "print(&#39;&lt;b&gt;&#39;)" in html or "print('&lt;b&gt;')" in html
    assert "class" not in Elements(html).attributes()


def test_the_input_is_bounded() -> None:
    html = markdown_html("a" * (MAX_MARKDOWN_CHARS + 10))

    assert html.count("a") == MAX_MARKDOWN_CHARS
