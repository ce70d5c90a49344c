"""Your own documents, offline: a full-text index in one SQLite file (FTS5), built by `fusion index add`
and read by the `search_documents` tool.

Markdown, text (.txt, .rst), HTML and PDF files are cut into passages of about a thousand characters
at paragraph and sentence boundaries (`fusion.research.document_text`); a search ranks passages by
BM25. Every call opens its own
connection, so one `DocumentIndex` may be used from several threads, and the file is in WAL mode so
searches go on while another process adds."""

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fusion.research.base import ToolError
from fusion.research.document_text import KINDS, Unreadable, extract, split_passages

SCHEMA_VERSION = 1
"""The index's format: an index written in another is refused with a clear error, never misread."""

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_SEARCH_RESULTS = 100
MAX_QUERY_TERMS = 32
MAX_TERM_CHARS = 100
BUSY_TIMEOUT_S = 10.0
"""How long a writer waits for another writer's transaction (one file) before giving up."""

_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        kind TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL
    )""",
    """CREATE TABLE passages (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents (id),
        position INTEGER NOT NULL,
        page INTEGER
    )""",
    "CREATE INDEX passages_by_document ON passages (document_id)",
    # rowid = passages.id. Porter stems English words, so "telescopes" finds "telescope".
    """CREATE VIRTUAL TABLE passages_text USING fts5 (
        title, text, tokenize = 'porter unicode61 remove_diacritics 2'
    )""",
]
_RANK = "bm25(passages_text, 0.5, 1.0)"
"""BM25 with column weights: a title is shared by every passage of its file, so it counts for less."""


class DocumentIndexError(ToolError):
    """The index cannot be used: missing, not an index, of another format, or SQLite failed."""


@dataclass(frozen=True, slots=True)
class Passage:
    path: Path
    title: str
    text: str
    position: int
    """The passage's place in its file, from 1."""
    page: int | None
    """The PDF page it comes from, from 1; None for other files."""
    score: float
    """BM25, higher is better (only comparable within one search)."""


@dataclass(frozen=True, slots=True)
class IndexedDocument:
    path: Path
    title: str
    kind: str
    passages: int


@dataclass(frozen=True, slots=True)
class Skipped:
    path: Path
    reason: str


@dataclass(slots=True)
class AddReport:
    added: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    """Changed since they were indexed: their old passages were replaced."""
    unchanged: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    """Files of a kind that is not indexed, met while walking a directory."""
    failed: list[Skipped] = field(default_factory=list)
    """Paths named or found that could not be indexed: missing, unreadable, without text."""
    passages: int = 0
    """Passages written by this call."""


@dataclass(frozen=True, slots=True)
class _Known:
    """A file as it was when it was indexed."""

    id: int
    size: int
    mtime_ns: int
    sha256: str


class DocumentIndex:
    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()

    def add(self, paths: Iterable[Path], on_progress: Callable[[int, int], None] | None = None) -> AddReport:
        """Index the files named and those under the directories named; `on_progress(done, total)`
        after each file. Each file is its own transaction, so readers see the index grow."""
        report = AddReport()
        files = _collect(paths, report)
        with self._connect(create=True) as db:
            for done, path in enumerate(files, start=1):
                _add_file(db, path, report)
                if on_progress is not None:
                    on_progress(done, len(files))
        return report

    def search(self, query: str, limit: int = 5) -> list[Passage]:
        """The passages that best match `query`'s words, best first. Any text is a valid query: its
        words are looked for and nothing in it is an FTS5 operator."""
        expression = match_expression(query)
        if expression is None:
            return []
        with self._connect() as db:
            rows = db.execute(
                f"SELECT d.path, d.title, t.text, p.position, p.page, {_RANK} AS rank"
                " FROM passages_text AS t"
                " JOIN passages AS p ON p.id = t.rowid JOIN documents AS d ON d.id = p.document_id"
                " WHERE passages_text MATCH ? ORDER BY rank LIMIT ?",
                (expression, max(1, min(limit, MAX_SEARCH_RESULTS))),
            ).fetchall()
        return [
            Passage(Path(path), title, text, position, page, -rank)
            for path, title, text, position, page, rank in rows
        ]

    def remove(self, paths: Iterable[Path]) -> list[Path]:
        """Forget the files named and every indexed file under the directories named, whether or not
        they still exist; returns what was removed."""
        targets = [path.expanduser().resolve() for path in paths]
        with self._connect() as db:
            rows = db.execute("SELECT id, path FROM documents ORDER BY path").fetchall()
            gone = [(id_, Path(name)) for id_, name in rows if _under(Path(name), targets)]
            with _transaction(db):
                for id_, _ in gone:
                    _delete(db, id_)
        return [path for _, path in gone]

    def documents(self) -> list[IndexedDocument]:
        """Every indexed file with its passage count, by path."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT d.path, d.title, d.kind, count(p.id) FROM documents AS d"
                " LEFT JOIN passages AS p ON p.document_id = d.id GROUP BY d.id ORDER BY d.path"
            ).fetchall()
        return [IndexedDocument(Path(path), title, kind, count) for path, title, kind, count in rows]

    @contextmanager
    def _connect(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for one call (in autocommit: transactions are explicit); SQLite's errors
        come out as `DocumentIndexError`s."""
        if not create and not self.path.is_file():
            raise DocumentIndexError(f"no document index at {self.path}: run `fusion index add PATH…`")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # mode=rw: a search never leaves an empty index behind.
            uri = f"{self.path.as_uri()}?mode={'rwc' if create else 'rw'}"
            db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise DocumentIndexError(f"cannot open the document index at {self.path}: {error}") from None
        try:
            self._check_schema(db, create)
            yield db
        except sqlite3.Error as error:
            raise DocumentIndexError(f"document index at {self.path}: {error}") from None
        finally:
            db.close()

    def _check_schema(self, db: sqlite3.Connection, create: bool) -> None:
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            raise DocumentIndexError(f"{self.path} is not a document index (not an SQLite file)") from None
        if not tables and create:
            db.execute("PRAGMA journal_mode = WAL")  # kept by the file: readers never wait for a writer
            with _transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        if "meta" not in tables:
            raise DocumentIndexError(f"{self.path} is not a document index")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = row[0] if row is not None else "none"
        if version != str(SCHEMA_VERSION):
            raise DocumentIndexError(
                f"the document index at {self.path} has format version {version}, this Fusion reads "
                f"version {SCHEMA_VERSION}: delete it and run `fusion index add PATH…` again"
            )


def _add_file(db: sqlite3.Connection, path: Path, report: AddReport) -> None:
    """Index one file unless it is unchanged (same size and mtime, or same content)."""
    try:
        stat = path.stat()
        known = _known(db, path)
        if known is not None and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            report.unchanged.append(path)
            return
        if stat.st_size > MAX_FILE_BYTES:
            raise Unreadable(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if known is not None and known.sha256 == digest:  # touched, not changed
            with _transaction(db):
                db.execute(
                    "UPDATE documents SET size = ?, mtime_ns = ? WHERE id = ?",
                    (stat.st_size, stat.st_mtime_ns, known.id),
                )
            report.unchanged.append(path)
            return
        extracted = extract(path, data)
        passages = [(page, text) for page, section in extracted.sections for text in split_passages(section)]
        if not passages:
            raise Unreadable("no text found" + (" (a scanned PDF?)" if path.suffix.lower() == ".pdf" else ""))
    except OSError as error:
        report.failed.append(Skipped(path, (error.strerror or str(error)).lower()))
        return
    except Unreadable as error:
        report.failed.append(Skipped(path, str(error)))
        return
    with _transaction(db):
        if known is not None:
            _delete(db, known.id)
        document_id = db.execute(
            "INSERT INTO documents (path, title, kind, size, mtime_ns, sha256) VALUES (?, ?, ?, ?, ?, ?)",
            (str(path), extracted.title, KINDS[path.suffix.lower()], stat.st_size, stat.st_mtime_ns, digest),
        ).lastrowid
        for position, (page, text) in enumerate(passages, start=1):
            passage_id = db.execute(
                "INSERT INTO passages (document_id, position, page) VALUES (?, ?, ?)",
                (document_id, position, page),
            ).lastrowid
            db.execute(
                "INSERT INTO passages_text (rowid, title, text) VALUES (?, ?, ?)",
                (passage_id, extracted.title, text),
            )
    (report.updated if known is not None else report.added).append(path)
    report.passages += len(passages)


def _known(db: sqlite3.Connection, path: Path) -> _Known | None:
    row = db.execute(
        "SELECT id, size, mtime_ns, sha256 FROM documents WHERE path = ?", (str(path),)
    ).fetchone()
    return _Known(*row) if row is not None else None


def _delete(db: sqlite3.Connection, document_id: int) -> None:
    db.execute(
        "DELETE FROM passages_text WHERE rowid IN (SELECT id FROM passages WHERE document_id = ?)",
        (document_id,),
    )
    db.execute("DELETE FROM passages WHERE document_id = ?", (document_id,))
    db.execute("DELETE FROM documents WHERE id = ?", (document_id,))


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so two writers queue (busy timeout) instead of one
    # failing half-way.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _under(path: Path, targets: list[Path]) -> bool:
    return any(path == target or path.is_relative_to(target) for target in targets)


def _collect(paths: Iterable[Path], report: AddReport) -> list[Path]:
    """The files to index, absolute and once each: those named, and those under the directories named
    (hidden entries left out, symbolic links to directories not followed)."""
    files: dict[Path, None] = {}
    for named in paths:
        path = named.expanduser().resolve()
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(name for name in dirs if not name.startswith("."))
                for name in sorted(name for name in names if not name.startswith(".")):
                    found = Path(root) / name
                    if found.suffix.lower() in KINDS:
                        files[found.resolve()] = None
                    else:
                        report.skipped.append(Skipped(found, f"not indexed: {found.suffix or 'no suffix'}"))
        elif not path.exists():
            report.failed.append(Skipped(path, "no such file or directory"))
        elif path.suffix.lower() not in KINDS:
            indexed = ", ".join(KINDS)
            report.failed.append(
                Skipped(path, f"not indexed: {path.suffix or 'no suffix'} (indexed: {indexed})")
            )
        else:
            files[path] = None
    return list(files)


def match_expression(query: str) -> str | None:
    """An FTS5 query for any of `query`'s words (BM25 ranks the passages with more of them higher),
    each quoted so that nothing in it is an operator; None when it has no words."""
    terms = [term for term in re.findall(r"\w+", query.lower()) if len(term) <= MAX_TERM_CHARS]
    unique = list(dict.fromkeys(terms))[:MAX_QUERY_TERMS]
    return " OR ".join(f'"{term}"' for term in unique) or None
