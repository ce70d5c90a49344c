"""A run's memory, in one SQLite file: every answer (item × configuration) and every grader reply is
kept once, as soon as it arrives, so a rerun skips what is done and a crash loses nothing."""

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    dataset TEXT NOT NULL,
    item_id TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    config_name TEXT NOT NULL,
    request_id TEXT NOT NULL,
    status TEXT NOT NULL,
    answer TEXT,
    answer_source TEXT,
    error TEXT,
    cost_usd TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    judge_tokens INTEGER NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (dataset, item_id, config_digest)
);
CREATE TABLE IF NOT EXISTS grades (
    key TEXT PRIMARY KEY,
    grader TEXT NOT NULL,
    reply TEXT NOT NULL,
    cost_usd TEXT NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (datetime('now'))
);
"""


@dataclass(frozen=True)
class Answer:
    """What one configuration answered to one item: the result's status, answer and figures."""

    request_id: str
    status: str
    answer: str | None
    answer_source: str | None
    error: str | None
    cost_usd: Decimal
    latency_ms: float
    input_tokens: int
    output_tokens: int
    judge_tokens: int


@dataclass(frozen=True)
class Grade:
    reply: str
    cost_usd: Decimal


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def answer(self, dataset: str, item_id: str, digest: str) -> Answer | None:
        row = self._db.execute(
            "SELECT request_id, status, answer, answer_source, error, cost_usd, latency_ms,"
            " input_tokens, output_tokens, judge_tokens FROM answers"
            " WHERE dataset = ? AND item_id = ? AND config_digest = ?",
            (dataset, item_id, digest),
        ).fetchone()
        if row is None:
            return None
        return Answer(row[0], row[1], row[2], row[3], row[4], Decimal(row[5]), *row[6:])

    def put_answer(self, dataset: str, item_id: str, digest: str, name: str, answer: Answer) -> None:
        fields = asdict(answer)
        fields["cost_usd"] = str(answer.cost_usd)
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (dataset, item_id, config_digest, config_name, request_id,"
                " status, answer, answer_source, error, cost_usd, latency_ms, input_tokens,"
                " output_tokens, judge_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dataset, item_id, digest, name, *fields.values()),
            )

    def grade(self, key: str) -> Grade | None:
        row = self._db.execute("SELECT reply, cost_usd FROM grades WHERE key = ?", (key,)).fetchone()
        return Grade(row[0], Decimal(row[1])) if row is not None else None

    def put_grade(self, key: str, grader: str, grade: Grade) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO grades (key, grader, reply, cost_usd) VALUES (?, ?, ?, ?)",
                (key, grader, grade.reply, str(grade.cost_usd)),
            )

    def counts(self) -> dict[str, int]:
        answers = self._db.execute("SELECT count(*) FROM answers").fetchone()[0]
        grades = self._db.execute("SELECT count(*) FROM grades").fetchone()[0]
        return {"answers": int(answers), "grades": int(grades)}


def grade_key(grader_digest: str, messages: list[dict[str, str]], repeat: int) -> str:
    """A grader reply is cached under what the grader was asked, by which grader, and which repeat."""
    text = json.dumps([grader_digest, messages, repeat], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
