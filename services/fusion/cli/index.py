"""`fusion index add | search | list | remove`: the local document index that `search_documents`
reads (FUSION_DOCUMENT_INDEX, or --index FILE)."""

import argparse
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from fusion.catalog import Catalog
from fusion.research.documents import AddReport, DocumentIndex, DocumentIndexError, Skipped
from fusion.settings import Settings

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
PROGRESS_FROM_FILES = 20
"""Fewer files are indexed too quickly for a progress bar to help."""
SHOWN_SKIPPED = 20


def add_parser(commands: Any) -> None:
    index = commands.add_parser("index", help="index your documents for the search_documents tool")
    actions = index.add_subparsers(dest="index_command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--index",
        type=Path,
        metavar="FILE",
        help="the index file (default: FUSION_DOCUMENT_INDEX, else .cache/documents.sqlite)",
    )

    add = actions.add_parser(
        "add",
        parents=[where],
        help="index files and directories (Markdown, text, HTML, PDF); changed files are re-indexed",
    )
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add.add_argument("--no-progress", action="store_true", help="no progress bar")
    add.set_defaults(run=run_add)

    search = actions.add_parser("search", parents=[where], help="the passages that best match a query")
    search.add_argument("query")
    search.add_argument("--limit", type=_count, default=5, metavar="N", help="passages to show (default 5)")
    search.set_defaults(run=run_search)

    listing = actions.add_parser("list", parents=[where], help="the indexed files and their passages")
    listing.set_defaults(run=run_list)

    remove = actions.add_parser(
        "remove", parents=[where], help="forget files, or every file under a directory"
    )
    remove.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    remove.set_defaults(run=run_remove)


def run_add(args: argparse.Namespace, settings: Settings, _catalog: Catalog) -> int:
    index = _index(args, settings)
    try:
        with _progress(enabled=not args.no_progress) as on_progress:
            report = index.add(args.paths, on_progress)
    except DocumentIndexError as error:
        return _fail(error)
    except KeyboardInterrupt:  # every file indexed so far is committed
        print("fusion index: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(_summary(report, index))
    _print_skipped("skipped", report.skipped)
    _print_skipped("failed", report.failed)
    return EXIT_FAILED if report.failed else 0


def run_search(args: argparse.Namespace, settings: Settings, _catalog: Catalog) -> int:
    try:
        passages = _index(args, settings).search(args.query, args.limit)
    except DocumentIndexError as error:
        return _fail(error)
    if not passages:
        print(f"no passage matches {args.query!r}", file=sys.stderr)
    for rank, passage in enumerate(passages, start=1):
        page = f", page {passage.page}" if passage.page is not None else ""
        print(f"{rank}. {passage.title} ({passage.path}{page}) score {passage.score:.2f}")
        paragraphs = [textwrap.fill(paragraph, 100) for paragraph in passage.text.split("\n\n")]
        print(textwrap.indent("\n\n".join(paragraphs), "   "), end="\n\n")
    return 0


def run_list(args: argparse.Namespace, settings: Settings, _catalog: Catalog) -> int:
    index = _index(args, settings)
    try:
        documents = index.documents()
    except DocumentIndexError as error:
        return _fail(error)
    for document in documents:
        print(f"{document.passages:6}  {document.kind:8}  {document.path}  {document.title}")
    total = sum(document.passages for document in documents)
    print(f"{len(documents)} documents, {total} passages in {index.path}")
    return 0


def run_remove(args: argparse.Namespace, settings: Settings, _catalog: Catalog) -> int:
    try:
        removed = _index(args, settings).remove(args.paths)
    except DocumentIndexError as error:
        return _fail(error)
    for path in removed:
        print(f"removed {path}")
    unknown = [path for path in args.paths if not any(_names(path, gone) for gone in removed)]
    for path in unknown:
        print(f"fusion index: not in the index: {path}", file=sys.stderr)
    return EXIT_FAILED if unknown else 0


def _index(args: argparse.Namespace, settings: Settings) -> DocumentIndex:
    return DocumentIndex(args.index or settings.document_index)


@contextmanager
def _progress(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """An `on_progress(done, total)` that shows a bar on stderr's terminal when there are many files."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task: TaskID | None = None

        def on_progress(done: int, total: int) -> None:
            nonlocal task
            if total < PROGRESS_FROM_FILES:
                return
            if task is None:
                task = progress.add_task("indexing", total=total)
            progress.update(task, completed=done)

        yield on_progress


def _summary(report: AddReport, index: DocumentIndex) -> str:
    return (
        f"{len(report.added)} added, {len(report.updated)} updated, {len(report.unchanged)} unchanged, "
        f"{len(report.skipped)} skipped, {len(report.failed)} failed; "
        f"{report.passages} passages written to {index.path}"
    )


def _print_skipped(what: str, entries: list[Skipped]) -> None:
    for entry in entries[:SHOWN_SKIPPED]:
        print(f"{what}: {entry.path}: {entry.reason}", file=sys.stderr)
    if len(entries) > SHOWN_SKIPPED:
        print(f"{what}: … and {len(entries) - SHOWN_SKIPPED} more", file=sys.stderr)


def _names(named: Path, removed: Path) -> bool:
    target = named.expanduser().resolve()
    return removed == target or removed.is_relative_to(target)


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 1 and 100")
    return value


def _fail(error: Exception) -> int:
    print(f"fusion index: {error}", file=sys.stderr)
    return EXIT_FAILED
