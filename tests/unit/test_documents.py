"""The document index behind `search_documents`, the tool, and `fusion index`.

The corpus in tests/data/corpus describes a made-up Halvorsen Observatory, one fact per file a search
can only find there:

- halvorsen-observatory.md (2 passages): founded by Ingrid Halvorsen, "a shipping heiress"; opened
  in 1923; the copper dome turns on bronze wheels moved by a crank (second passage).
- visitor-guide.txt: the café is called Nordlys Kaffebar.
- directors.rst: the third director was Margit Øyen.
- instruments.html: the Aurvandil Refractor, its objective lens ground by the optician Oskar
  Lindqvist; its navigation ("Home | Visit | History") and footer ("All rights reserved") are
  boilerplate.
- annual-report-1931.pdf (2 pages, title in its metadata): on page 2 the comet designated C/1931 K2,
  seen until it faded below the reach of the Aurvandil Refractor.
"""

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from fusion.cli.main import main
from fusion.research.base import Tool, ToolError
from fusion.research.document_search import SearchDocuments, search_documents
from fusion.research.document_text import PASSAGE_MAX_CHARS, split_passages
from fusion.research.documents import DocumentIndex, DocumentIndexError, match_expression
from fusion.settings import Settings
from fusion_contracts import Source, ToolSpec

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
TITLES = {
    "halvorsen-observatory.md": "The Halvorsen Observatory",
    "visitor-guide.txt": "Visiting the Halvorsen Observatory",
    "directors.rst": "Directors of the Halvorsen Observatory",
    "instruments.html": "The instruments of the Halvorsen Observatory",
    "annual-report-1931.pdf": "Halvorsen Observatory Annual Report 1931",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A copy of the corpus the test may change."""
    return Path(shutil.copytree(CORPUS, tmp_path / "corpus"))


@pytest.fixture
def index(tmp_path: Path, corpus: Path) -> DocumentIndex:
    index = DocumentIndex(tmp_path / "index" / "documents.sqlite")
    index.add([corpus])
    return index


# Adding.


def test_adds_every_format_with_title_kind_and_passages(tmp_path: Path, corpus: Path) -> None:
    index = DocumentIndex(tmp_path / "new" / "documents.sqlite")

    report = index.add([corpus])

    assert sorted(path.name for path in report.added) == sorted(TITLES)
    assert (report.updated, report.unchanged, report.skipped, report.failed) == ([], [], [], [])
    documents = {document.path.name: document for document in index.documents()}
    assert {name: document.title for name, document in documents.items()} == TITLES
    kinds = {name: document.kind for name, document in documents.items()}
    assert kinds == {
        "halvorsen-observatory.md": "markdown",
        "visitor-guide.txt": "text",
        "directors.rst": "text",
        "instruments.html": "html",
        "annual-report-1931.pdf": "pdf",
    }
    assert documents["halvorsen-observatory.md"].passages == 2
    assert documents["annual-report-1931.pdf"].passages == 2  # one a page
    assert report.passages == sum(document.passages for document in documents.values())
    assert all(document.path == corpus / document.path.name for document in documents.values())


def test_readding_unchanged_files_indexes_nothing(index: DocumentIndex, corpus: Path) -> None:
    touched = corpus / "directors.rst"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))

    report = index.add([corpus])

    assert (report.added, report.updated, report.passages) == ([], [], 0)
    assert sorted(path.name for path in report.unchanged) == sorted(TITLES)
    assert len(index.documents()) == len(TITLES)


def test_a_changed_file_replaces_its_passages(index: DocumentIndex, corpus: Path) -> None:
    guide = corpus / "visitor-guide.txt"
    guide.write_text(
        "Visiting the observatory\n\nThe café is now called Polarlys Bakeri.\n", encoding="utf-8"
    )

    report = index.add([guide])

    assert (report.added, report.updated, report.passages) == ([], [guide], 1)
    assert index.search("Nordlys Kaffebar") == []
    [found] = index.search("Polarlys Bakeri")
    assert found.path == guide
    assert found.title == "Visiting the observatory"
    assert {document.path.name: document.passages for document in index.documents()}["visitor-guide.txt"] == 1


def test_remove_forgets_files_and_directories(index: DocumentIndex, corpus: Path) -> None:
    assert index.remove([corpus / "visitor-guide.txt"]) == [corpus / "visitor-guide.txt"]
    assert index.search("Nordlys Kaffebar") == []
    assert len(index.documents()) == len(TITLES) - 1
    assert index.remove([corpus / "visitor-guide.txt"]) == []

    assert len(index.remove([corpus])) == len(TITLES) - 1
    assert index.documents() == []
    assert index.search("Aurvandil") == []


def test_other_files_are_skipped_and_broken_ones_fail_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    (folder / ".git").mkdir(parents=True)
    (folder / "notes.md").write_text("# Notes\n\nThe pier was rebuilt in 1954.\n", encoding="utf-8")
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / ".hidden.md").write_text("# Hidden\n\nsecret\n", encoding="utf-8")
    (folder / ".git" / "HEAD.md").write_text("# Git\n\nref\n", encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a PDF")
    (folder / "empty.txt").write_text("\n\n", encoding="utf-8")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    index = DocumentIndex(tmp_path / "documents.sqlite")

    report = index.add([folder, tmp_path / "missing.md", folder / "photo.png"])

    assert report.added == [folder / "notes.md"]
    assert [(skipped.path.name, skipped.reason) for skipped in report.skipped] == [
        ("photo.png", "not indexed: .png")
    ]
    failed = {skipped.path.name: skipped.reason for skipped in report.failed}
    assert failed.keys() == {"broken.pdf", "empty.txt", "binary.txt", "missing.md", "photo.png"}
    assert failed["broken.pdf"].startswith("unreadable PDF")
    assert failed["empty.txt"] == "no text found"
    assert failed["binary.txt"] == "binary content"
    assert failed["missing.md"] == "no such file or directory"
    assert index.search("secret ref") == []


# Searching.


@pytest.mark.parametrize(
    ("query", "name", "fact", "page"),
    [
        ("shipping heiress", "halvorsen-observatory.md", "Ingrid Halvorsen", None),
        ("what is the café called", "visitor-guide.txt", "Nordlys Kaffebar", None),
        ("third director", "directors.rst", "Margit Øyen", None),
        ("who ground the objective lens", "instruments.html", "Oskar Lindqvist", None),
        ("comet designated", "annual-report-1931.pdf", "C/1931 K2", 2),
    ],
)
def test_search_finds_each_formats_fact(
    index: DocumentIndex, query: str, name: str, fact: str, page: int | None
) -> None:
    best = index.search(query)[0]

    assert best.path == index.path.parents[1] / "corpus" / name  # absolute, in the copy indexed
    assert best.title == TITLES[name]
    assert fact in best.text
    assert best.page == page


def test_bm25_ranks_the_passage_with_the_most_matching_words_first(index: DocumentIndex) -> None:
    results = index.search("Aurvandil Refractor lens ground", limit=5)

    assert [(passage.path.name, passage.page) for passage in results] == [
        ("instruments.html", None),
        ("annual-report-1931.pdf", 2),  # names the refractor, but not its lens
    ]
    assert results[0].score > results[1].score

    best = index.search("copper dome crank bronze wheels")[0]
    assert (best.path.name, best.position) == ("halvorsen-observatory.md", 2)


def test_html_boilerplate_is_left_out(index: DocumentIndex) -> None:
    assert index.search("Aurvandil")  # the page's main text is there
    for boilerplate in ("Home", "All rights reserved"):  # the navigation bar, the footer
        assert all(passage.path.suffix != ".html" for passage in index.search(boilerplate)), boilerplate


def test_the_limit_bounds_the_results(index: DocumentIndex) -> None:
    assert len(index.search("Halvorsen observatory", limit=3)) == 3
    assert len(index.search("Halvorsen observatory", limit=100)) == 7  # every passage names it


@pytest.mark.parametrize(
    "query",
    [
        '"',
        'a"b',
        "AND OR NOT",
        "*",
        "Aurv*",
        "col:x",
        "title:Halvorsen",
        "NEAR(",
        "NEAR(comet refractor, 2)",
        "^comet",
        "-comet +lens",
        "(((",
        "{title text}: comet",
        "comet" * 2_000,
        "comet " * 2_000,
        "天文台 ✨ Sørvik Øyen",
        "\x00\x1f\u202e",
        "_",
        "",
        "   ",
    ],
)
def test_hostile_queries_never_raise(index: DocumentIndex, query: str) -> None:
    results = index.search(query)

    assert isinstance(results, list)
    assert len(results) <= 5


def test_operators_in_a_query_are_plain_words(index: DocumentIndex) -> None:
    assert match_expression('col:x NEAR( "Aurvandil" *') == '"col" OR "x" OR "near" OR "aurvandil"'
    assert match_expression("*** ^ ( )") is None
    assert index.search('"Aurvandil"')[0].path.name in {"instruments.html", "annual-report-1931.pdf"}
    assert index.search("Sørvik")[0].path.name in {"halvorsen-observatory.md", "visitor-guide.txt"}
    assert index.search("") == []


def test_passages_are_bounded_and_keep_every_word() -> None:
    paragraphs = [f"Paragraph {n} says something about the dome and the lens. " * 6 for n in range(12)]
    one_run_on = "word " * 1_000  # no sentence end at all
    text = "\n\n".join([*paragraphs, one_run_on])

    passages = split_passages(text)

    assert all(len(passage) <= PASSAGE_MAX_CHARS for passage in passages)
    assert all(len(passage) >= 300 for passage in passages[:-1])
    assert " ".join(passages).split() == text.split()


# The index file.


def test_a_missing_index_is_a_clear_tool_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "documents.sqlite"
    index = DocumentIndex(missing)

    with pytest.raises(
        ToolError, match=r"no document index at .*nowhere/documents\.sqlite: run `fusion index add"
    ):
        index.search("comet")
    with pytest.raises(DocumentIndexError):
        index.documents()
    with pytest.raises(DocumentIndexError):
        index.remove([tmp_path])
    assert not missing.exists()
    assert not missing.parent.exists()


def test_an_index_of_another_format_version_is_refused(index: DocumentIndex) -> None:
    with sqlite3.connect(index.path) as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")

    with pytest.raises(DocumentIndexError, match="has format version 2, this Fusion reads version 1"):
        index.search("comet")
    with pytest.raises(DocumentIndexError, match="format version 2"):
        index.add([CORPUS])


def test_a_file_that_is_not_an_index_is_refused_and_left_alone(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("just some text, long enough to be looked at by SQLite " * 20, encoding="utf-8")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")

    with pytest.raises(DocumentIndexError, match="not a document index"):
        DocumentIndex(text).search("comet")
    with pytest.raises(DocumentIndexError, match="not a document index"):
        DocumentIndex(other).add([CORPUS])
    with sqlite3.connect(other) as db:
        assert [name for (name,) in db.execute("SELECT name FROM sqlite_master")] == ["accounts"]


def test_searches_go_on_while_another_connection_writes(index: DocumentIndex) -> None:
    writer = sqlite3.connect(index.path, isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM documents")  # not committed

        assert index.search("Aurvandil")
        assert len(index.documents()) == len(TITLES)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# The tool.


def test_the_tools_schema_bounds_its_arguments(index: DocumentIndex) -> None:
    tool: Tool = SearchDocuments(index, max_results=3)
    validator = jsonschema.Draft202012Validator(tool.parameters)
    jsonschema.Draft202012Validator.check_schema(tool.parameters)

    assert tool.name == "search_documents"
    assert validator.is_valid({"query": "comet"})
    assert validator.is_valid({"query": "comet", "max_results": 3})
    for bad in (
        {},
        {"query": ""},
        {"query": "x" * 501},
        {"query": "comet", "max_results": 4},
        {"query": "comet", "max_results": 0},
        {"query": "comet", "other": 1},
    ):
        assert not validator.is_valid(bad), bad


async def test_the_tool_returns_numbered_passages_and_file_sources(
    index: DocumentIndex, corpus: Path
) -> None:
    output = await SearchDocuments(index).run({"query": "Aurvandil Refractor lens ground"})

    html, pdf = corpus / "instruments.html", corpus / "annual-report-1931.pdf"
    assert output.text.startswith(f"[1] {TITLES['instruments.html']} (instruments.html)\n")
    assert f"\n\n[2] {TITLES['annual-report-1931.pdf']} (annual-report-1931.pdf, page 2)\n" in output.text
    assert "Oskar Lindqvist" in output.text
    assert "C/1931 K2" in output.text
    assert "[3]" not in output.text
    assert output.sources == (
        Source(url=html.as_uri(), title=TITLES["instruments.html"]),
        Source(url=pdf.as_uri(), title=TITLES["annual-report-1931.pdf"]),
    )
    assert all(source.url.startswith("file:///") for source in output.sources)


async def test_sources_are_one_per_document(index: DocumentIndex) -> None:
    output = await SearchDocuments(index, max_results=20).run({"query": "Halvorsen observatory"})

    numbers = _cited(output.text)
    assert len(numbers) == 7  # seven passages...
    assert len(output.sources) == len(TITLES)  # ...of five documents, one source each
    assert len({source.url for source in output.sources}) == len(TITLES)
    assert sorted(set(numbers)) == list(range(1, len(TITLES) + 1))  # a passage cites its document
    for number, title in zip(numbers, _titles(output.text), strict=True):
        assert output.sources[number - 1].title == title


async def test_max_results_is_bounded_by_the_spec(index: DocumentIndex, tmp_path: Path) -> None:
    tool = search_documents(
        Settings(document_index=index.path), ToolSpec(type="search_documents", max_results=2)
    )

    assert tool.parameters["properties"]["max_results"]["maximum"] == 2
    many = await tool.run({"query": "Halvorsen observatory", "max_results": 10})
    one = await tool.run({"query": "Halvorsen observatory", "max_results": 1})
    default = await search_documents(Settings(document_index=index.path), None).run({"query": "observatory"})

    assert len(_cited(many.text)) == 2
    assert len(_cited(one.text)) == 1
    assert len(_cited(default.text)) == 5


async def test_the_tools_text_fits_its_share_of_the_result(index: DocumentIndex) -> None:
    output = await SearchDocuments(index, max_results=7, result_chars=3_000).run({"query": "Halvorsen"})

    assert len(_cited(output.text)) == 7
    assert len(output.text) <= 3_000


def _cited(text: str) -> list[int]:
    """The document number of each passage, in order ("[n] title (file)" heads each passage)."""
    return [int(n) for n in re.findall(r"^\[(\d+)\] ", text, re.MULTILINE)]


def _titles(text: str) -> list[str]:
    return re.findall(r"^\[\d+\] (.*) \([^()]*\)$", text, re.MULTILINE)


async def test_the_tool_says_when_nothing_matches(index: DocumentIndex) -> None:
    output = await SearchDocuments(index).run({"query": "quasar spectroscopy"})

    assert output.text == "No passage of the indexed documents matches 'quasar spectroscopy'."
    assert output.sources == ()


async def test_the_tool_without_an_index_raises_a_tool_error(tmp_path: Path) -> None:
    tool = search_documents(Settings(document_index=tmp_path / "none.sqlite"), None)

    with pytest.raises(ToolError, match="no document index at"):
        await tool.run({"query": "comet"})


async def test_concurrent_tool_calls_each_get_their_answer(index: DocumentIndex) -> None:
    tool = SearchDocuments(index, max_results=1)
    queries = ["shipping heiress", "Nordlys Kaffebar", "third director", "comet designated"] * 4

    outputs = await asyncio.gather(*(tool.run({"query": query}) for query in queries))

    names = [output.sources[0].url.rsplit("/", 1)[1] for output in outputs]
    expected = ["halvorsen-observatory.md", "visitor-guide.txt", "directors.rst", "annual-report-1931.pdf"]
    assert names == expected * 4


# The CLI.


def test_cli_adds_searches_lists_and_removes(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cli.sqlite"
    monkeypatch.setenv("FUSION_DOCUMENT_INDEX", str(path))

    assert main(["index", "add", str(corpus)]) == 0
    assert "5 added, 0 updated, 0 unchanged, 0 skipped, 0 failed; 7 passages" in capsys.readouterr().out
    assert main(["index", "add", str(corpus)]) == 0
    assert "0 added, 0 updated, 5 unchanged" in capsys.readouterr().out

    assert main(["index", "search", "Comet Brekke", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"1. {TITLES['annual-report-1931.pdf']} ({corpus / 'annual-report-1931.pdf'}, page 2)"
    )
    assert "C/1931 K2" in out
    assert "\n2. " not in out

    assert main(["index", "list"]) == 0
    out = capsys.readouterr().out
    assert all(str(corpus / name) in out for name in TITLES)
    assert f"5 documents, 7 passages in {path}" in out

    assert main(["index", "remove", str(corpus / "directors.rst")]) == 0
    assert capsys.readouterr().out == f"removed {corpus / 'directors.rst'}\n"
    assert main(["index", "remove", str(corpus / "directors.rst")]) == 1
    assert "not in the index" in capsys.readouterr().err


def test_cli_index_option_and_failures(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "option.sqlite"

    assert (
        main(["index", "add", str(corpus / "directors.rst"), str(tmp_path / "gone.md"), "--index", str(path)])
        == 1
    )
    captured = capsys.readouterr()
    assert "1 added" in captured.out
    assert f"failed: {tmp_path / 'gone.md'}: no such file or directory" in captured.err

    assert main(["index", "search", "comet", "--index", str(tmp_path / "none.sqlite")]) == 1
    captured = capsys.readouterr()
    assert f"fusion index: no document index at {tmp_path / 'none.sqlite'}" in captured.err
    assert "Traceback" not in captured.err


def test_the_fusion_command_fails_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "FUSION_DOCUMENT_INDEX": str(tmp_path / "none.sqlite")}
    done = subprocess.run(
        [sys.executable, "-m", "fusion.cli.main", "index", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert done.stderr.startswith("fusion index: no document index at")
    assert "Traceback" not in done.stderr
