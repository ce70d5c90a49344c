"""The judge's prompts and the JSON schemas of its replies. Pure functions.

Panel answers reach the judge anonymised ("Answer 1..N", in an order shuffled per request so that
position says nothing about the model) and fenced as data. Every fence (an answer, a message of the
conversation, the analysis) carries a random nonce drawn for the fusion, which nothing the request
or the panel carries can predict, and text inside a fence is defused (see `fusion.fences`).
"""

import random
from dataclasses import dataclass
from typing import Any

from fusion_contracts import ChatMessage

from fusion.fences import Fences

ANALYSIS_FIELDS = ("consensus", "contradictions", "partial_coverage", "unique_insights", "blind_spots")
_SCHEMA_MAX_POINTS = 4
_SCHEMA_MAX_POINT_CHARS = 300


@dataclass(frozen=True, slots=True)
class LabelledAnswer:
    label: int
    """The number the judge sees: "Answer {label}"."""
    member_index: int
    text: str


def label_answers(request_id: str, answers: dict[int, str]) -> list[LabelledAnswer]:
    """Numbers the answers 1..N in an order that depends only on the request id (so a judge that
    takes the request over shows the same order)."""
    order = sorted(answers)
    random.Random(request_id).shuffle(order)
    return [LabelledAnswer(label, index, answers[index]) for label, index in enumerate(order, start=1)]


def render_conversation(fences: Fences, messages: list[ChatMessage]) -> str:
    return "\n".join(
        fences.wrap("message", message.content, f' role="{message.role}"') for message in messages
    )


def render_answers(fences: Fences, answers: list[LabelledAnswer]) -> str:
    return "\n\n".join(fences.wrap("answer", answer.text, f' n="{answer.label}"') for answer in answers)


# --- schemas --------------------------------------------------------------------------------------


def _text(max_length: int | None = _SCHEMA_MAX_POINT_CHARS) -> dict[str, Any]:
    """A string; a long `maxLength` makes llama.cpp's grammar too large to compile, so the answer and
    the correction have none (the judge's `max_tokens` bounds them)."""
    return {"type": "string", "maxLength": max_length} if max_length else {"type": "string"}


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items, "maxItems": _SCHEMA_MAX_POINTS}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _labels(count: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": max(count, 1)}


def analysis_schema(count: int) -> dict[str, Any]:
    """JSON Schema of the analysis of `count` answers, for providers that constrain output to a schema.
    The bounds keep a small model's constrained output short enough to finish within its token limit."""
    stance = _object({"stance": _text(), "answers": _list(_labels(count))})
    return _object(
        {
            "consensus": _list(_text()),
            "contradictions": _list(
                _object({"topic": _text(), "stances": _list(stance), "verdict": _text()})
            ),
            "partial_coverage": _list(_object({"point": _text(), "answers": _list(_labels(count))})),
            "unique_insights": _list(_object({"insight": _text(), "answer": _labels(count)})),
            "blind_spots": _list(_text()),
        }
    )


def once_schema(count: int) -> dict[str, Any]:
    """The answer, then the analysis it rests on, in one object. The answer comes first so that a judge
    that runs out of tokens in its analysis has still answered, and so that it streams at once."""
    analysis = analysis_schema(count)
    schema = _object({"answer": _text(None), **analysis["properties"]})
    return schema


def select_schema(count: int) -> dict[str, Any]:
    """The choice first (0: no answer is better than the others), so that a judge that rambles in its
    reason until its token limit has still chosen; then the reason and a correction."""
    choice = {"type": "integer", "minimum": 0, "maximum": max(count, 1)}
    return _object({"best": choice, "reason": _text(), "correction": _text(None)})


# --- messages -------------------------------------------------------------------------------------

# The replies' shapes in words, not as JSON with placeholder text: small judges copy placeholders.
_ANALYSIS_KEYS = (
    'the keys "consensus" (a list of points the answers agree on), "contradictions" (a list of objects '
    'with "topic", "stances" — a list of objects with "stance" and "answers", the numbers of the answers '
    'that hold it — and "verdict", which side is right if you can tell), "partial_coverage" (a list of '
    'objects with "point" and "answers", the numbers of the answers that cover it), "unique_insights" '
    '(a list of objects with "insight" and "answer", the number of the one answer that made it) and '
    '"blind_spots" (a list of points every answer missed). Any list may be empty'
)


def _user(fences: Fences, conversation: list[ChatMessage], answers: list[LabelledAnswer]) -> str:
    return (
        f"The request:\n{render_conversation(fences, conversation)}\n\n"
        f"The answers:\n{render_answers(fences, answers)}"
    )


def analysis_messages(
    fences: Fences, conversation: list[ChatMessage], answers: list[LabelledAnswer]
) -> list[ChatMessage]:
    system = (
        "You are the judge of a panel of AI assistants that answered the same request independently. "
        + fences.rule()
        + f" Compare the answers and reply with one JSON object with {_ANALYSIS_KEYS}. Reply with the "
        "JSON object only."
    )
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=_user(fences, conversation, answers)),
    ]


def final_messages(
    fences: Fences,
    conversation: list[ChatMessage],
    answers: list[LabelledAnswer],
    analysis: str | None,
) -> list[ChatMessage]:
    """`analysis`: the analysis as the judge wrote it, naming answers by their numbers (the result's
    analysis names the members, which the judge must not see)."""
    system = (
        "You write the single best answer to the user's request, using several draft answers and an "
        "analysis of them. " + fences.rule() + " Keep what the drafts agree on, settle their "
        "contradictions, include unique insights that are correct, and cover blind spots. Write only the "
        "answer itself, addressed to the user: do not mention drafts, answers, a panel or a judge, and "
        "do not repeat any tag."
    )
    analysis_text = analysis or "(none)"
    # The request comes last, right before the instruction: small models otherwise answer a draft.
    user = (
        f"Draft answers:\n{render_answers(fences, answers)}\n\n"
        f"Analysis of the drafts:\n{fences.wrap('analysis', analysis_text)}\n\n"
        f"The request:\n{render_conversation(fences, conversation)}\n\n"
        "Write the best answer to this request."
    )
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]


def once_messages(
    fences: Fences, conversation: list[ChatMessage], answers: list[LabelledAnswer]
) -> list[ChatMessage]:
    system = (
        "You are the judge of a panel of AI assistants that answered the same request independently. "
        + fences.rule()
        + " Compare the answers and write the single best answer to the request: keep what they agree "
        "on, settle contradictions, include correct unique insights, cover blind spots. Reply with one "
        'JSON object: first "answer", that answer, addressed to the user, without mentioning the panel; '
        f"then {_ANALYSIS_KEYS}, naming answers by their numbers. Reply with the JSON object only."
    )
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=_user(fences, conversation, answers)),
    ]


def select_messages(
    fences: Fences, conversation: list[ChatMessage], answers: list[LabelledAnswer]
) -> list[ChatMessage]:
    system = (
        "You are the judge of a panel of AI assistants that answered the same request independently. "
        + fences.rule()
        + " Choose the answer that best and most correctly serves the request. Reply with one JSON "
        'object with the keys "best" (the number of that answer, or 0 if none is better than the '
        'others), "reason" (why, in one sentence) and "correction" (the chosen answer rewritten only if '
        "it has a clear error, else an empty string). Reply with the JSON object only."
    )
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=_user(fences, conversation, answers)),
    ]
