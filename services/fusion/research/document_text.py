"""A document's text, pure: its title and sections read from a file's bytes (Markdown, text, HTML
by its main text, PDF page by page), and the passages an index stores."""

import io
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pypdf
import trafilatura
from pypdf.errors import PyPdfError

KINDS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
"""What is indexed, by file suffix (case-insensitive)."""

PASSAGE_CHARS = 1000
"""A passage closes once it reaches this length..."""
PASSAGE_MAX_CHARS = 1200
"""...and never grows past this one."""
TITLE_CHARS = 200


class Unreadable(Exception):
    """A file whose text cannot be had; the message says why."""


@dataclass(frozen=True, slots=True)
class Extracted:
    title: str
    sections: list[tuple[int | None, str]]
    """(page or None, text): one per PDF page, one for any other file."""


# Extraction: a title and the text of each section (PDF page), from a file's bytes.


def extract(path: Path, data: bytes) -> Extracted:
    kind = KINDS[path.suffix.lower()]
    if kind == "pdf":
        return _pdf(path, data)
    if b"\x00" in data[:8192]:
        raise Unreadable("binary content")
    text = data.decode("utf-8-sig", errors="replace")
    if kind == "html":
        return _html(path, text)
    if kind == "markdown":
        return _markdown(path, text)
    return Extracted(_first_line(text) or path.stem, [(None, text)])


def _markdown(path: Path, text: str) -> Extracted:
    title = None
    front = re.match(r"---\r?\n(.*?)\r?\n---\r?\n", text, re.DOTALL)
    if front is not None:  # YAML front matter: its title, and none of it in the passages
        text = text[front.end() :]
        found = re.search(r"^title:\s*[\"']?(.+?)[\"']?\s*$", front.group(1), re.MULTILINE)
        title = found.group(1) if found else None
    heading = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
    title = title or (heading.group(1) if heading else None)
    return Extracted(_clip(title or path.stem), [(None, text)])


def _html(path: Path, html: str) -> Extracted:
    # Main text only, without navigation and boilerplate; a page too small for trafilatura's
    # heuristics falls back to all of its text.
    text = trafilatura.extract(html, include_comments=False, favor_recall=True) or trafilatura.html2txt(html)
    title = trafilatura.extract_metadata(html).title
    # trafilatura writes one paragraph a line; passages are cut at blank lines.
    return Extracted(_clip(title or path.stem), [(None, text.replace("\n", "\n\n"))])


def _pdf(path: Path, data: bytes) -> Extracted:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("encrypted PDF")
        pages: list[tuple[int | None, str]] = [
            (number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)
        ]
        title = reader.metadata.title if reader.metadata is not None else None
    except (PyPdfError, ValueError, KeyError, IndexError, TypeError) as error:
        # pypdf reports most damage as PyPdfError; some malformed files surface as the others.
        raise Unreadable(f"unreadable PDF: {error}") from None
    first = next((line for _, text in pages if (line := _first_line(text))), None)
    return Extracted(_clip(title or "") or first or path.stem, pages)


def _first_line(text: str) -> str | None:
    """The first line with a letter or digit in it (an RST title's over- and underlines have none)."""
    line = next((line for line in text.splitlines() if re.search(r"\w", line)), None)
    return _clip(line) if line is not None else None


def _clip(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


# Passages and queries: pure functions.

_RULE = re.compile(r"^\s*([=\-~^\"'`#*+_.:<>])\1{2,}\s*$")
"""A line of one repeated punctuation mark: RST under- and overlines, Markdown rules."""
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_passages(text: str) -> list[str]:
    """`text` as passages of about PASSAGE_CHARS and at most PASSAGE_MAX_CHARS: whole paragraphs
    (blank-line separated, whitespace collapsed) where they fit, else sentences, else words."""
    pieces: list[tuple[str, str]] = []  # (text, what joins it to the piece before)
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if not _RULE.match(line)]
        paragraph = " ".join(" ".join(lines).split())
        if len(paragraph) <= PASSAGE_MAX_CHARS:
            parts = [paragraph] if paragraph else []
        else:
            sentences = _SENTENCE_END.split(paragraph)
            parts = [part for sentence in sentences for part in textwrap.wrap(sentence, PASSAGE_MAX_CHARS)]
        pieces += [(part, " " if i else "\n\n") for i, part in enumerate(parts)]
    passages: list[str] = []
    current = ""
    for piece, joiner in pieces:
        if current and (
            len(current) >= PASSAGE_CHARS or len(current) + len(joiner) + len(piece) > PASSAGE_MAX_CHARS
        ):
            passages.append(current)
            current = ""
        current = current + joiner + piece if current else piece
    if current:
        passages.append(current)
    return passages
