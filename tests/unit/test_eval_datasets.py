"""fusion.evaluation.datasets: the JSONL reader, DRACO files, the data that ships, and the prompts."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fusion.evaluation.datasets import (
    DRACO_SOURCE,
    LETTERS,
    Dataset,
    DatasetError,
    Format,
    Item,
    load_dataset,
    load_draco,
    prompt_for,
    shipped,
)
from fusion.evaluation.grading import normalise

SHORT: dict[str, Any] = {
    "id": "s1",
    "question": "Capital of France?",
    "answer": "Paris",
    "aliases": ["paris"],
}
CHOICE: dict[str, Any] = {
    "id": "c1",
    "question": "Capital of France?",
    "options": ["Lyon", "Paris"],
    "answer": "B",
}
RUBRIC: dict[str, Any] = {
    "id": "r1",
    "question": "Explain tides.",
    "sections": [
        {
            "name": "Accuracy",
            "criteria": [
                {"id": "moon", "text": "Names the Moon's gravity", "weight": 10},
                {"id": "wind", "text": "Says tides are caused by wind", "weight": -5},
            ],
        }
    ],
}
PAIRWISE: dict[str, Any] = {"id": "p1", "prompt": "Write a haiku about rain.", "domain": "creative"}


def draco_row(id_: str = "0c2c", weight: Any = 10) -> dict[str, Any]:
    """A row as DRACO ships it: the rubric JSON-encoded in `answer`, criteria worded as requirements."""
    rubric = {
        "id": "some-rubric",
        "sections": [
            {
                "id": "factual-accuracy",
                "title": "Factual Accuracy",
                "criteria": [
                    {"id": "states-x", "weight": weight, "requirement": "States X"},
                    {"id": "claims-y", "weight": -15, "requirement": "Claims Y"},
                ],
            },
            {
                "id": "citation-quality",
                "title": "Citation Quality",
                "criteria": [{"id": "cites-z", "weight": 5, "requirement": "Cites Z"}],
            },
        ],
    }
    return {"id": id_, "problem": "Research X.", "answer": json.dumps(rubric), "domain": "Academic"}


def write(tmp_path: Path, *rows: Any) -> Path:
    path = tmp_path / "set.jsonl"
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- reading and detection ---


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (SHORT, "short"),
        (CHOICE, "choice"),
        (RUBRIC, "rubric"),
        (PAIRWISE, "pairwise"),
        (draco_row(), "rubric"),
    ],
)
def test_format_is_detected_from_the_fields(tmp_path: Path, row: dict[str, Any], expected: Format) -> None:
    dataset = load_dataset(write(tmp_path, row))
    assert dataset.format == expected
    assert dataset.name == "set"
    assert len(dataset.items) == 1


def test_items_are_read_with_their_fields(tmp_path: Path) -> None:
    short = load_dataset(write(tmp_path, SHORT)).items[0]
    assert short == Item(id="s1", question="Capital of France?", answer="Paris", aliases=("paris",))
    choice = load_dataset(write(tmp_path, {**CHOICE, "answer": " b "})).items[0]
    assert choice.options == ("Lyon", "Paris")
    assert choice.answer == "B"
    rubric = load_dataset(write(tmp_path, RUBRIC)).items[0]
    assert [c.weight for c in rubric.sections[0].criteria] == [10.0, -5.0]
    pairwise = load_dataset(write(tmp_path, PAIRWISE)).items[0]
    assert pairwise.question == "Write a haiku about rain."
    assert pairwise.domain == "creative"


def test_meta_line_names_the_dataset_and_fixes_the_format(tmp_path: Path) -> None:
    meta = {"_meta": {"name": "capitals", "format": "pairwise", "source": "Written by hand, CC0"}}
    dataset = load_dataset(write(tmp_path, meta, SHORT))
    assert dataset == Dataset(
        name="capitals",
        format="pairwise",
        items=(Item(id="s1", question="Capital of France?"),),
        source="Written by hand, CC0",
    )


def test_an_explicit_format_reads_every_item_as_that_format(tmp_path: Path) -> None:
    dataset = load_dataset(write(tmp_path, SHORT, {**SHORT, "id": "s2"}), "pairwise")
    assert dataset.format == "pairwise"
    assert all(item.answer is None for item in dataset.items)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT, "", "   ", {**SHORT, "id": "s2"})
    assert [item.id for item in load_dataset(path).items] == ["s1", "s2"]


def test_integer_ids_and_answers_are_read_as_text(tmp_path: Path) -> None:
    item = load_dataset(write(tmp_path, {"id": 7, "question": "2 + 2?", "answer": 4})).items[0]
    assert (item.id, item.answer) == ("7", "4")


# --- errors ---


def test_bad_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT, {**SHORT, "id": "s2"}, '{"id": "s3", "question": ')
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}, line 3: not valid JSON"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("bad", "line", "field"),
    [
        ({"id": "s2", "question": "Q?", "answer": ""}, 2, "answer"),
        ({"id": "s2", "question": "Q?", "answer": "A", "aliases": "Paris"}, 2, "aliases"),
        ({"question": "Q?", "answer": "A"}, 2, "id"),
        ({"id": "s2", "question": ["Q?"], "answer": "A"}, 2, "question"),
        ({"id": "s2", "question": "Q?", "answer": "x" * 501}, 2, "answer"),
    ],
)
def test_bad_short_item_names_line_and_field(
    tmp_path: Path, bad: dict[str, Any], line: int, field: str
) -> None:
    with pytest.raises(DatasetError, match=rf"line {line}, field '{field}'"):
        load_dataset(write(tmp_path, SHORT, bad), "short")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"answer": "C"}, "answer"),  # two options: A or B only
        ({"answer": "AB"}, "answer"),
        ({"options": ["Paris"]}, "options"),
        ({"options": ["Paris", "paris"]}, "options"),
        ({"options": [f"option {n}" for n in range(11)]}, "options"),
    ],
)
def test_bad_choice_item(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(DatasetError, match=rf"line 1, field '{field}'"):
        load_dataset(write(tmp_path, {**CHOICE, **change}))


@pytest.mark.parametrize(
    ("criterion", "field"),
    [
        ({"id": "x", "text": "T", "weight": "10"}, "sections[0].criteria[2].weight"),
        ({"id": "x", "text": "T", "weight": True}, "sections[0].criteria[2].weight"),
        ({"id": "x", "text": "T", "weight": float("inf")}, "sections[0].criteria[2].weight"),
        ({"id": "x", "text": "T"}, "sections[0].criteria[2].weight"),
        ({"id": "x", "weight": 3}, "sections[0].criteria[2].text"),
        ({"id": "moon", "text": "T", "weight": 3}, "sections"),  # repeats the criterion id "moon"
    ],
)
def test_bad_rubric_criterion(tmp_path: Path, criterion: dict[str, Any], field: str) -> None:
    section = RUBRIC["sections"][0]
    row = {**RUBRIC, "sections": [{**section, "criteria": [*section["criteria"], criterion]}]}
    with pytest.raises(DatasetError, match=rf"line 1, field '{re.escape(field)}'"):
        load_dataset(write(tmp_path, row))


def test_a_rubric_needs_criteria(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no criteria"):
        load_dataset(write(tmp_path, {**RUBRIC, "sections": [{"name": "S", "criteria": []}]}))


def test_repeated_ids_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT, {**SHORT, "id": "s2"}, SHORT)
    with pytest.raises(DatasetError, match=r"line 3, field 'id': 's1' is also the id on line 1"):
        load_dataset(path)


def test_mixed_formats_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="line 2: looks like a choice item, but the first item is a short"):
        load_dataset(write(tmp_path, SHORT, CHOICE))


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [{"_meta": {"name": "empty"}}],
        [[1, 2, 3]],
        [{"id": "x"}],
        [{"_meta": {"format": "essay"}}, SHORT],
        [SHORT, {"_meta": {"name": "late"}}],
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, rows: list[Any]) -> None:
    with pytest.raises(DatasetError):
        load_dataset(write(tmp_path, *rows))


def test_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot be read"):
        load_dataset(tmp_path / "nothing.jsonl")


def test_unknown_format_argument_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown format"):
        load_dataset(write(tmp_path, SHORT), "essay")  # type: ignore[arg-type]


# --- DRACO ---


def test_a_draco_file_is_read_as_rubrics(tmp_path: Path) -> None:
    path = write(tmp_path, draco_row("a"), draco_row("b"))
    dataset = load_draco(path)
    assert dataset.name == "draco"
    assert dataset.format == "rubric"
    assert dataset.source == DRACO_SOURCE
    item = dataset.items[0]
    assert (item.id, item.question, item.domain) == ("a", "Research X.", "Academic")
    assert [section.name for section in item.sections] == ["Factual Accuracy", "Citation Quality"]
    first = item.sections[0].criteria[1]
    assert (first.id, first.text, first.weight) == ("claims-y", "Claims Y", -15.0)
    # load_dataset recognises the same file, with the same items.
    recognised = load_dataset(path)
    assert recognised.items == dataset.items
    assert recognised.source == DRACO_SOURCE


def test_load_draco_refuses_other_rows(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="line 2, field 'answer': is not a DRACO row"):
        load_draco(write(tmp_path, draco_row(), SHORT))


def test_a_draco_row_with_a_broken_rubric_names_the_line(tmp_path: Path) -> None:
    broken = {**draco_row("b"), "answer": '{"sections": [}'}
    with pytest.raises(DatasetError, match="line 2, field 'answer': is not a JSON-encoded rubric"):
        load_draco(write(tmp_path, draco_row("a"), broken))
    with pytest.raises(DatasetError, match=r"line 1, field 'sections\[0\]\.criteria\[0\]\.weight'"):
        load_draco(write(tmp_path, draco_row("a", weight="ten")))


# --- the data that ships ---


def test_every_shipped_dataset_loads_with_unique_ids() -> None:
    expected = {"short": "short", "choice": "choice", "draco-sample": "rubric", "pairwise-sample": "pairwise"}
    assert set(shipped()) == set(expected)
    for name, path in shipped().items():
        dataset = load_dataset(path)
        assert dataset.format == expected[name], name
        ids = [item.id for item in dataset.items]
        assert len(ids) == len(set(ids)), name
        assert all(item.question for item in dataset.items), name


def test_shipped_short_set() -> None:
    items = load_dataset(shipped()["short"]).items
    assert len(items) >= 150
    assert len({normalise(item.question) for item in items}) == len(items)  # no question twice
    for item in items:
        assert item.answer is not None
        assert item.domain
        assert all(normalise(gold) for gold in (item.answer, *item.aliases)), item.id
        assert len(item.answer) <= 40, item.id  # short answers


def test_shipped_choice_set() -> None:
    items = load_dataset(shipped()["choice"]).items
    assert len(items) >= 60
    for item in items:
        assert len(item.options) == 4, item.id
        assert item.answer in tuple(LETTERS[:4]), item.id
    letters = [item.answer for item in items]
    counts = {letter: letters.count(letter) for letter in "ABCD"}
    assert max(counts.values()) - min(counts.values()) <= 2, counts


def test_shipped_draco_sample_is_attributed_and_has_negative_criteria() -> None:
    dataset = load_draco(shipped()["draco-sample"])
    assert len(dataset.items) == 3
    assert dataset.source is not None
    assert "Perplexity" in dataset.source
    assert "MIT" in dataset.source
    for item in dataset.items:
        weights = [criterion.weight for section in item.sections for criterion in section.criteria]
        assert len(weights) >= 30
        assert any(weight < 0 for weight in weights)
        assert any(weight > 0 for weight in weights)


def test_shipped_pairwise_sample() -> None:
    assert len(load_dataset(shipped()["pairwise-sample"]).items) == 12


def test_readme_examples_load_as_their_formats(tmp_path: Path) -> None:
    readme = (shipped()["short"].parent / "README.md").read_text(encoding="utf-8")
    sections = re.findall(r"\*\*(\w+)\*\*:.*?```json\n(.*?)\n```", readme, flags=re.DOTALL)
    assert [name for name, _ in sections] == ["short", "choice", "rubric", "pairwise"]
    for name, example in sections:
        assert load_dataset(write(tmp_path, example)).format == name


# --- prompts ---


def test_prompt_for_short_asks_for_a_bare_answer() -> None:
    item = Item(id="s", question="What is the capital of France?", answer="Paris")
    assert prompt_for(item, "short") == (
        "What is the capital of France?\nAnswer with just the answer, in a few words."
    )


def test_prompt_for_choice_letters_the_options() -> None:
    item = Item(id="c", question="Capital of France?", answer="B", options=("Lyon", "Paris", "Nice"))
    assert prompt_for(item, "choice") == (
        "Capital of France?\nA) Lyon\nB) Paris\nC) Nice\nAnswer with the letter of the correct option."
    )


@pytest.mark.parametrize("format_", ["rubric", "pairwise"])
def test_prompt_for_open_formats_is_the_question(format_: Format) -> None:
    assert prompt_for(Item(id="p", question="Write a haiku."), format_) == "Write a haiku."
