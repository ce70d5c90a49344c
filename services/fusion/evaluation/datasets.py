"""Evaluation datasets: the item types, the JSONL reader, the data that ships, and the prompts.

A dataset file is JSONL, one item a line, in one of four formats: short answers graded against a gold
answer, multiple choice graded by letter, rubric items graded by a grader model against weighted
criteria, and pairwise prompts where a grader model compares two answers. The format comes from an
optional first line `{"_meta": {"name": ..., "format": ..., "source": ...}}`, or else from the fields of
the first item; every item must then agree with it. A DRACO file as downloaded (rows of `id`,
`problem`, a JSON-encoded rubric in `answer`, and `domain`) is recognised and read as a rubric dataset.

Everything read is checked and bounded, and a bad line raises DatasetError naming the file, the line
and the field, so that a hand-written dataset can be fixed without guessing.
"""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

Format = Literal["short", "choice", "rubric", "pairwise"]
FORMATS: tuple[Format, ...] = get_args(Format)
LETTERS = "ABCDEFGHIJ"
"""Option letters, in order: a choice item has at most this many options."""

DRACO_SOURCE = (
    "DRACO by Perplexity AI, MIT licence (https://huggingface.co/datasets/perplexity-ai/draco, "
    "mirrored at https://github.com/valyuAI/valyu-benchmarks)"
)

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_ITEMS = 10_000
MAX_ID_CHARS = 200
MAX_QUESTION_CHARS = 20_000
MAX_ANSWER_CHARS = 500
MAX_ALIASES = 32
MAX_OPTION_CHARS = 1_000
MAX_SECTIONS = 32
MAX_CRITERIA = 300
"""Criteria in one rubric item, over all its sections."""
MAX_CRITERION_CHARS = 2_000
MAX_WEIGHT = 100_000.0

_QUESTION_KEYS = ("question", "prompt", "problem")


@dataclass(frozen=True)
class Criterion:
    id: str
    text: str
    weight: float
    """Positive: a requirement the response should meet. Negative: an error to penalise when present."""


@dataclass(frozen=True)
class Section:
    name: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    domain: str | None = None
    answer: str | None = None
    """short: the gold answer; choice: the letter of the correct option, "A".."J"."""
    aliases: tuple[str, ...] = ()
    """short only: other spellings of the gold answer that also count as correct."""
    options: tuple[str, ...] = ()
    """choice only: the options, lettered A, B, ... in this order."""
    sections: tuple[Section, ...] = ()
    """rubric only."""


@dataclass(frozen=True)
class Dataset:
    name: str
    format: Format
    items: tuple[Item, ...]
    source: str | None = None
    """Attribution and licence of the data, when it is not this project's own."""


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file, the line and the field."""


@dataclass(frozen=True)
class _Where:
    path: Path
    line: int

    def error(self, field: str | None, message: str) -> DatasetError:
        place = f"{self.path}, line {self.line}"
        return DatasetError(f"{place}, field {field!r}: {message}" if field else f"{place}: {message}")


@dataclass(frozen=True)
class _Meta:
    name: str | None = None
    format: Format | None = None
    source: str | None = None


def _string(value: Any, field: str, where: _Where, limit: int, *, integer: bool = False) -> str:
    """A non-empty stripped string of at most `limit` characters (an integer too, when `integer`)."""
    if value is None:
        raise where.error(field, "is missing")
    if integer and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise where.error(field, f"must be a string, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise where.error(field, "is empty")
    if len(text) > limit:
        raise where.error(field, f"is longer than {limit} characters")
    return text


def _list(value: Any, field: str, where: _Where, most: int) -> list[Any]:
    if not isinstance(value, list):
        raise where.error(field, f"must be a list, not {type(value).__name__}")
    if len(value) > most:
        raise where.error(field, f"has more than {most} entries")
    return value


def _base(row: dict[str, Any], where: _Where) -> Item:
    """The fields every format has: id, question (or prompt, or DRACO's problem) and domain."""
    key = next((key for key in _QUESTION_KEYS if key in row), "question")
    domain = row.get("domain")
    return Item(
        id=_string(row.get("id"), "id", where, MAX_ID_CHARS, integer=True),
        question=_string(row.get(key), key, where, MAX_QUESTION_CHARS),
        domain=None if domain is None else _string(domain, "domain", where, MAX_ID_CHARS),
    )


def _short(row: dict[str, Any], where: _Where) -> Item:
    aliases = _list(row.get("aliases", []), "aliases", where, MAX_ALIASES)
    return replace(
        _base(row, where),
        answer=_string(row.get("answer"), "answer", where, MAX_ANSWER_CHARS, integer=True),
        aliases=tuple(_string(alias, "aliases", where, MAX_ANSWER_CHARS, integer=True) for alias in aliases),
    )


def _choice(row: dict[str, Any], where: _Where) -> Item:
    raw = _list(row.get("options"), "options", where, len(LETTERS))
    options = tuple(_string(option, "options", where, MAX_OPTION_CHARS) for option in raw)
    if len(options) < 2:
        raise where.error("options", "must have at least 2 options")
    if len({option.casefold() for option in options}) != len(options):
        raise where.error("options", "has the same option twice")
    letters = LETTERS[: len(options)]
    answer = _string(row.get("answer"), "answer", where, MAX_ANSWER_CHARS).upper()
    if len(answer) != 1 or answer not in letters:
        raise where.error("answer", f"must be one of the option letters {letters[0]}-{letters[-1]}")
    return replace(_base(row, where), answer=answer, options=options)


def _is_draco(row: dict[str, Any]) -> bool:
    """A row as DRACO ships it: the task in `problem`, its rubric JSON-encoded in `answer`."""
    answer = row.get("answer")
    return "problem" in row and isinstance(answer, str) and answer.lstrip().startswith("{")


def _raw_sections(row: dict[str, Any], where: _Where) -> Any:
    if "sections" in row or not _is_draco(row):
        return row.get("sections")
    try:
        rubric = json.loads(row["answer"])
    except json.JSONDecodeError as error:
        raise where.error("answer", f"is not a JSON-encoded rubric ({error.msg})") from None
    if not isinstance(rubric, dict):
        raise where.error("answer", "is not a JSON-encoded rubric object")
    return rubric.get("sections")


def _criterion(raw: Any, field: str, where: _Where) -> Criterion:
    if not isinstance(raw, dict):
        raise where.error(field, "must be an object with id, text (or requirement) and weight")
    weight = raw.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise where.error(f"{field}.weight", "must be a number")
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        raise where.error(f"{field}.weight", f"must be finite and at most {MAX_WEIGHT:g} in size")
    text = raw.get("text", raw.get("requirement"))
    return Criterion(
        id=_string(raw.get("id"), f"{field}.id", where, MAX_ID_CHARS, integer=True),
        text=_string(text, f"{field}.text", where, MAX_CRITERION_CHARS),
        weight=float(weight),
    )


def _section(raw: Any, field: str, where: _Where) -> Section:
    if not isinstance(raw, dict):
        raise where.error(field, "must be an object with a name (or title) and criteria")
    name = raw.get("name", raw.get("title", raw.get("id")))
    criteria = _list(raw.get("criteria"), f"{field}.criteria", where, MAX_CRITERIA)
    return Section(
        name=_string(name, f"{field}.name", where, MAX_ID_CHARS, integer=True),
        criteria=tuple(_criterion(c, f"{field}.criteria[{i}]", where) for i, c in enumerate(criteria)),
    )


def _rubric(row: dict[str, Any], where: _Where) -> Item:
    raw = _list(_raw_sections(row, where), "sections", where, MAX_SECTIONS)
    sections = tuple(_section(section, f"sections[{i}]", where) for i, section in enumerate(raw))
    if len({section.name for section in sections}) != len(sections):
        raise where.error("sections", "has two sections with the same name")
    ids = [criterion.id for section in sections for criterion in section.criteria]
    if not ids:
        raise where.error("sections", "has no criteria")
    if len(ids) > MAX_CRITERIA:
        raise where.error("sections", f"has more than {MAX_CRITERIA} criteria")
    repeated = sorted({id_ for id_ in ids if ids.count(id_) > 1})
    if repeated:
        raise where.error("sections", f"repeats the criterion id {repeated[0]!r}")
    return replace(_base(row, where), sections=sections)


def _pairwise(row: dict[str, Any], where: _Where) -> Item:
    return _base(row, where)


_PARSERS: dict[Format, Callable[[dict[str, Any], _Where], Item]] = {
    "short": _short,
    "choice": _choice,
    "rubric": _rubric,
    "pairwise": _pairwise,
}


def _detect(row: dict[str, Any]) -> Format | None:
    """The format an item's fields say it is in, or None when they say nothing."""
    if "options" in row and "answer" in row:
        return "choice"
    if "sections" in row or _is_draco(row):
        return "rubric"
    if "answer" in row:
        return "short"
    if any(key in row for key in _QUESTION_KEYS):
        return "pairwise"
    return None


def _read_rows(path: Path) -> list[tuple[_Where, dict[str, Any]]]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DatasetError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror})") from None
    rows: list[tuple[_Where, dict[str, Any]]] = []
    # Split on newlines only: a JSON string may hold U+2028, which str.splitlines would split on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = _Where(path, number)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise where.error(None, f"not valid JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(row, dict):
            raise where.error(None, "must be a JSON object")
        rows.append((where, row))
        if len(rows) > MAX_ITEMS + 1:
            raise where.error(None, f"more than {MAX_ITEMS} items")
    if not rows:
        raise DatasetError(f"{path}: no items")
    return rows


def _meta(where: _Where, row: dict[str, Any]) -> _Meta:
    meta = row["_meta"]
    if not isinstance(meta, dict):
        raise where.error("_meta", "must be an object with name, format and source")
    name, format_, source = meta.get("name"), meta.get("format"), meta.get("source")
    if format_ is not None and format_ not in FORMATS:
        raise where.error("_meta.format", f"must be one of {', '.join(FORMATS)}")
    return _Meta(
        name=None if name is None else _string(name, "_meta.name", where, MAX_ID_CHARS),
        format=format_,
        source=None if source is None else _string(source, "_meta.source", where, MAX_QUESTION_CHARS),
    )


def _check_detected(rows: list[tuple[_Where, dict[str, Any]]]) -> Format:
    """The format of the first item, when every item has the same; DatasetError otherwise."""
    found: list[Format] = []
    for where, row in rows:
        kind = _detect(row)
        if kind is None:
            raise where.error(None, "has none of question, prompt or problem, so its format is unknown")
        if found and kind != found[0]:
            raise where.error(None, f"looks like a {kind} item, but the first item is a {found[0]} item")
        found.append(kind)
    return found[0]


def _load(path: Path, format: Format | None, *, draco: bool) -> Dataset:
    if format is not None and format not in FORMATS:
        raise DatasetError(f"{path}: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    rows = _read_rows(path)
    meta = _Meta()
    if "_meta" in rows[0][1]:
        meta = _meta(*rows[0])
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"{path}: no items")
    for where, row in rows:
        if "_meta" in row:
            raise where.error("_meta", "is allowed on the first line only")
        if draco and not _is_draco(row):
            raise where.error(
                "answer", "is not a DRACO row: needs problem and a JSON-encoded rubric in answer"
            )
    chosen = format or meta.format or _check_detected(rows)
    parse = _PARSERS[chosen]
    items: list[Item] = []
    lines: dict[str, int] = {}
    for where, row in rows:
        item = parse(row, where)
        if item.id in lines:
            raise where.error("id", f"{item.id!r} is also the id on line {lines[item.id]}")
        lines[item.id] = where.line
        items.append(item)
    found_draco = draco or any(_is_draco(row) for _, row in rows)
    return Dataset(
        name=meta.name or ("draco" if draco else path.stem),
        format=chosen,
        items=tuple(items),
        source=meta.source or (DRACO_SOURCE if found_draco else None),
    )


def load_dataset(path: Path, format: Format | None = None) -> Dataset:
    """Reads a JSONL dataset. Without `format`, the `_meta` line's format or, failing that, the one the
    first item's fields imply: options and answer make a choice item; sections (or a DRACO row) a
    rubric item; an answer alone a short item; a question or prompt alone a pairwise item. A given
    `format` reads every item as that format, ignoring fields it does not use (so a short dataset can
    be run as pairwise)."""
    return _load(path, format, draco=False)


def load_draco(path: Path) -> Dataset:
    """Reads the DRACO benchmark file as a user downloads it (`test.jsonl` of perplexity-ai/draco on
    Hugging Face, mirrored as `datasets/draco.jsonl` in GitHub's valyuAI/valyu-benchmarks) into a
    rubric dataset: a section per rubric axis, a criterion per rubric requirement with its weight."""
    return _load(path, "rubric", draco=True)


_DATA = Path(__file__).parent / "data"
_SHIPPED = {
    "short": "short.jsonl",
    "choice": "choice.jsonl",
    "draco-sample": "draco-sample.jsonl",
    "pairwise-sample": "pairwise-sample.jsonl",
}


def shipped() -> dict[str, Path]:
    """The datasets that ship with Fusion, by name (see data/README.md)."""
    return {name: _DATA / file for name, file in _SHIPPED.items()}


def prompt_for(item: Item, format: Format) -> str:
    """What a configuration is asked for the item. Short and choice prompts ask for a bare answer, so
    that the rule-based grading finds it; rubric and pairwise prompts are the question as it is."""
    if format == "short":
        return f"{item.question}\nAnswer with just the answer, in a few words."
    if format == "choice":
        if not item.options:
            raise ValueError(f"item {item.id!r} has no options")
        options = [f"{letter}) {option}" for letter, option in zip(LETTERS, item.options, strict=False)]
        return "\n".join([item.question, *options, "Answer with the letter of the correct option."])
    return item.question
