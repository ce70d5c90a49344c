"""fusion.judge.replies: a judge's JSON read leniently, its answer numbers mapped back to members."""

import json

import pytest
from fusion.judge.json_reply import JudgeReplyError
from fusion.judge.prompts import LabelledAnswer
from fusion.judge.replies import AnswerStream, Panel, parse_analysis, parse_once, parse_selection
from fusion_contracts import AnswerRef

# The judge saw member 2 as Answer 1, member 0 as Answer 2, member 1 as Answer 3.
PANEL = Panel(
    [LabelledAnswer(1, 2, "c"), LabelledAnswer(2, 0, "a"), LabelledAnswer(3, 1, "b")],
    {0: "alpha", 1: "beta", 2: "gamma"},
)
GAMMA, ALPHA, BETA = (
    AnswerRef(member=2, model="gamma"),
    AnswerRef(member=0, model="alpha"),
    AnswerRef(member=1, model="beta"),
)


def test_structured_analysis_names_who_said_what() -> None:
    reply = {
        "consensus": ["Answer 1 and Answer 3 say scattering"],
        "contradictions": [
            {
                "topic": "the cause",
                "stances": [
                    {"stance": "scattering", "answers": [1, 3]},
                    {"stance": "the ocean", "answers": ["Answer 2"]},
                ],
                "verdict": "Answer 1 is right",
            }
        ],
        "partial_coverage": [{"point": "wavelengths", "answers": ["3", 9]}],
        "unique_insights": [{"insight": "sunsets are red", "answer": 2}],
        "blind_spots": ["ozone"],
    }
    analysis = parse_analysis(json.dumps(reply), PANEL)
    assert analysis.consensus == ["member 2 (gamma) and member 1 (beta) say scattering"]
    (contradiction,) = analysis.contradiction_details
    assert contradiction.topic == "the cause"
    assert [(s.stance, s.answers) for s in contradiction.stances] == [
        ("scattering", [GAMMA, BETA]),
        ("the ocean", [ALPHA]),
    ]
    assert contradiction.verdict == "member 2 (gamma) is right"
    assert analysis.contradictions == [
        "the cause: scattering (member 2 (gamma), member 1 (beta)) vs the ocean (member 0 (alpha))"
    ]
    assert [(c.point, c.answers) for c in analysis.partial_coverage_details] == [("wavelengths", [BETA])]
    assert analysis.partial_coverage == ["wavelengths (member 1 (beta))"]
    assert [(i.insight, i.answer) for i in analysis.unique_insight_details] == [("sunsets are red", ALPHA)]
    assert analysis.unique_insights == ["sunsets are red (member 0 (alpha))"]
    assert analysis.blind_spots == ["ozone"]


def test_plain_string_points_as_older_judges_wrote_them_still_read() -> None:
    text = (
        'Sure! Here it is {not json}:\n```json\n{"consensus": "they all say scattering", '
        '"contradictions": ["Answer 2 blames the ocean"], "unique_insights": ["Answer 3: wavelength"], '
        '"blind_spots": ["  "]}\n```'
    )
    analysis = parse_analysis(text, PANEL)
    assert analysis.consensus == ["they all say scattering"]
    assert analysis.contradictions == ["member 0 (alpha) blames the ocean"]
    assert analysis.unique_insights == ["member 1 (beta): wavelength"]
    assert analysis.blind_spots == []
    assert analysis.contradiction_details == []


def test_unreadable_items_are_dropped_and_points_bounded() -> None:
    analysis = parse_analysis(
        json.dumps(
            {
                "consensus": ["kept", {"nested": "x"}, None, "x" * 1000] + ["more"] * 20,
                "unique_insights": [{"insight": "no such answer", "answer": 7}, {"answer": 1}],
                "contradictions": [{"stances": []}],
            }
        ),
        PANEL,
    )
    assert analysis.consensus[:2] == ["kept", "x" * 600]
    assert len(analysis.consensus) == 8
    assert analysis.unique_insight_details == []
    assert analysis.contradiction_details == []


@pytest.mark.parametrize("text", ["", "no json here", "[1, 2, 3]", "{broken"])
def test_no_json_object_is_judge_invalid_json(text: str) -> None:
    with pytest.raises(JudgeReplyError, match="no JSON object") as raised:
        parse_analysis(text, PANEL)
    assert raised.value.reason == "judge_invalid_json"


@pytest.mark.parametrize("text", ["{}", '{"verdict": "ok"}', '{"consensus": [], "blind_spots": [""]}'])
def test_json_without_a_filled_field_is_a_schema_mismatch(text: str) -> None:
    with pytest.raises(JudgeReplyError, match="none of the expected keys") as raised:
        parse_analysis(text, PANEL)
    assert raised.value.reason == "judge_schema_mismatch"


@pytest.mark.parametrize(
    ("cut", "consensus"),
    [
        ('{"consensus": ["a", "b",', ["a", "b"]),
        ('{"consensus": ["a"], "blind', ["a"]),
        ('{"consensus": ["a"], "blind_spots":', ["a"]),
        ('prose first {"consensus": ["with \\"quotes\\" and {braces}', ['with "quotes" and {braces}']),
    ],
)
def test_json_cut_at_a_token_limit_is_repaired(cut: str, consensus: list[str]) -> None:
    assert parse_analysis(cut, PANEL).consensus == consensus


def test_once_reply_gives_the_answer_and_its_analysis() -> None:
    answer, analysis, error = parse_once('{"consensus": ["Answer 1 is right"], "answer": " Paris. "}', PANEL)
    assert answer == "Paris."
    assert analysis is not None
    assert analysis.consensus == ["member 2 (gamma) is right"]
    assert error is None


def test_once_reply_with_an_empty_analysis_keeps_the_answer_and_says_why() -> None:
    answer, analysis, error = parse_once('{"consensus": [], "answer": "Paris."}', PANEL)
    assert (answer, analysis) == ("Paris.", None)
    assert error is not None
    assert error.reason == "judge_schema_mismatch"


@pytest.mark.parametrize("text", ['{"consensus": ["x"]}', '{"answer": "  "}', '{"answer": 3}'])
def test_once_reply_without_an_answer_is_a_schema_mismatch(text: str) -> None:
    with pytest.raises(JudgeReplyError) as raised:
        parse_once(text, PANEL)
    assert raised.value.reason == "judge_schema_mismatch"


@pytest.mark.parametrize(("best", "member"), [(1, 2), ("2", 0), ("Answer 3", 1), (0, None)])
def test_selection_maps_the_choice_to_its_member(best: object, member: int | None) -> None:
    selection = parse_selection(json.dumps({"best": best, "reason": "clear"}), PANEL)
    assert selection.member == member
    assert selection.reason == "clear"
    assert selection.correction is None


def test_selection_keeps_a_correction() -> None:
    selection = parse_selection('{"best": 2, "reason": "", "correction": " Paris, not Lyon. "}', PANEL)
    assert (selection.member, selection.correction) == (0, "Paris, not Lyon.")


@pytest.mark.parametrize("best", [4, -1, "Answer 9", None, True, "best"])
def test_selection_of_no_answer_is_a_schema_mismatch(best: object) -> None:
    with pytest.raises(JudgeReplyError) as raised:
        parse_selection(json.dumps({"best": best}), PANEL)
    assert raised.value.reason == "judge_schema_mismatch"


def test_answer_stream_decodes_the_answer_as_it_arrives() -> None:
    reply = json.dumps({"consensus": ['say "answer": "no"'], "answer": 'Line 1\n"quoted" é 😀 \\ done'})
    stream = AnswerStream()
    pieces = [stream.feed(reply[i : i + 3]) for i in range(0, len(reply), 3)]
    assert "".join(pieces) == 'Line 1\n"quoted" é 😀 \\ done'


def test_answer_stream_gives_nothing_before_the_answer_or_after_it() -> None:
    stream = AnswerStream()
    assert stream.feed('{"consensus": ["x"], "ans') == ""
    assert stream.feed('wer": "Pa') == "Pa"
    assert stream.feed('ris", "extra": "no"}') == "ris"
    assert stream.feed(" trailing") == ""
