"""From a judge's reply to typed values: the analysis (with the answers it names mapped back to panel
members), the one-pass answer, the choice. Pure functions.

Replies are read leniently, because small judges drift from the shape asked for: the first JSON object
counts, a point may be a plain string instead of an object, an answer may be named 2, "2" or
"Answer 2", and what cannot be read is dropped. A reply with nothing usable is a `JudgeReplyError`.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from fusion_contracts import Analysis, AnswerRef, Contradiction, Coverage, Insight, Stance

from fusion.judge.json_reply import JudgeReplyError, first_json_object
from fusion.judge.prompts import ANALYSIS_FIELDS, LabelledAnswer

_MAX_POINTS = 8
_MAX_POINT_CHARS = 600
_LABEL = re.compile(r"^\s*(?:answer\s*)?#?(\d+)\s*$", re.IGNORECASE)
_NAMED = re.compile(r"\bAnswer\s+#?(\d+)\b")


@dataclass(frozen=True, slots=True)
class Panel:
    """The answers as the judge saw them, and whose they are."""

    answers: list[LabelledAnswer]
    models: dict[int, str]
    """Member index -> model."""

    def ref(self, value: Any) -> AnswerRef | None:
        """The member behind a label the judge wrote (2, "2", "Answer 2"); None when it names none."""
        if isinstance(value, str) and (match := _LABEL.match(value)):
            value = int(match[1])
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= len(self.answers):
            return None
        index = self.answers[value - 1].member_index
        return AnswerRef(member=index, model=self.models[index])

    def refs(self, value: Any) -> list[AnswerRef]:
        values = value if isinstance(value, list) else [value]
        found = [ref for item in values if (ref := self.ref(item)) is not None]
        return list({ref.member: ref for ref in found}.values())

    def name(self, text: str) -> str:
        """`text` with each "Answer N" written as the member it is."""

        def named(match: re.Match[str]) -> str:
            ref = self.ref(int(match[1]))
            return f"member {ref.member} ({ref.model})" if ref else match[0]

        return _NAMED.sub(named, text)


@dataclass(frozen=True, slots=True)
class Selection:
    member: int | None
    """The chosen member's index; None when the judge found no answer better than the others."""
    correction: str | None
    reason: str


def _string(value: Any) -> str | None:
    text = value.strip()[:_MAX_POINT_CHARS] if isinstance(value, str) else ""
    return text or None


def _strings(value: Any, panel: Panel) -> list[str]:
    values = value if isinstance(value, list) else [value]
    points = [panel.name(text) for item in values if (text := _string(item))]
    return points[:_MAX_POINTS]


def _items(value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value] if value else []
    return items[:_MAX_POINTS]


def _who(refs: list[AnswerRef]) -> str:
    return ", ".join(f"member {ref.member} ({ref.model})" for ref in refs)


def _contradictions(value: Any, panel: Panel) -> tuple[list[str], list[Contradiction]]:
    texts, details = [], []
    for item in _items(value):
        if not isinstance(item, dict):
            texts.extend(_strings(item, panel))
            continue
        topic = _string(item.get("topic"))
        if topic is None:
            continue
        stances = [
            Stance(stance=panel.name(stance), answers=panel.refs(entry.get("answers")))
            for entry in _items(item.get("stances"))
            if isinstance(entry, dict) and (stance := _string(entry.get("stance")))
        ]
        verdict = _string(item.get("verdict"))
        details.append(
            Contradiction(
                topic=panel.name(topic), stances=stances, verdict=panel.name(verdict) if verdict else None
            )
        )
        sides = " vs ".join(f"{s.stance} ({_who(s.answers) or 'no answer named'})" for s in stances)
        texts.append(f"{panel.name(topic)}: {sides}" if sides else panel.name(topic))
    return texts, details


def _coverage(value: Any, panel: Panel) -> tuple[list[str], list[Coverage]]:
    texts, details = [], []
    for item in _items(value):
        if not isinstance(item, dict):
            texts.extend(_strings(item, panel))
        elif point := _string(item.get("point")):
            refs = panel.refs(item.get("answers"))
            details.append(Coverage(point=panel.name(point), answers=refs))
            texts.append(f"{panel.name(point)} ({_who(refs)})" if refs else panel.name(point))
    return texts, details


def _insights(value: Any, panel: Panel) -> tuple[list[str], list[Insight]]:
    texts, details = [], []
    for item in _items(value):
        if not isinstance(item, dict):
            texts.extend(_strings(item, panel))
        elif (insight := _string(item.get("insight"))) and (ref := panel.ref(item.get("answer"))):
            details.append(Insight(insight=panel.name(insight), answer=ref))
            texts.append(f"{panel.name(insight)} ({_who([ref])})")
    return texts, details


def read_analysis(data: dict[str, Any], panel: Panel) -> Analysis:
    """The analysis in a decoded reply. `JudgeReplyError` when none of its fields holds a point."""
    contradictions, contradiction_details = _contradictions(data.get("contradictions"), panel)
    coverage, coverage_details = _coverage(data.get("partial_coverage"), panel)
    insights, insight_details = _insights(data.get("unique_insights"), panel)
    analysis = Analysis(
        consensus=_strings(data.get("consensus"), panel),
        contradictions=contradictions,
        partial_coverage=coverage,
        unique_insights=insights,
        blind_spots=_strings(data.get("blind_spots"), panel),
        contradiction_details=contradiction_details,
        partial_coverage_details=coverage_details,
        unique_insight_details=insight_details,
    )
    if not any(getattr(analysis, name) for name in ANALYSIS_FIELDS):
        raise JudgeReplyError(
            "judge_schema_mismatch", "the judge's analysis has none of the expected keys filled"
        )
    return analysis


def parse_analysis(text: str, panel: Panel) -> Analysis:
    return read_analysis(first_json_object(text), panel)


def parse_once(text: str, panel: Panel) -> tuple[str, Analysis | None, JudgeReplyError | None]:
    """The answer of a one-pass reply, its analysis, and why the analysis could not be read (if so).
    `JudgeReplyError` when there is no answer."""
    data = first_json_object(text)
    answer = data.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise JudgeReplyError("judge_schema_mismatch", "the judge's reply has no answer")
    try:
        return answer.strip(), read_analysis(data, panel), None
    except JudgeReplyError as error:
        return answer.strip(), None, error


def parse_selection(text: str, panel: Panel) -> Selection:
    """The judge's choice. `JudgeReplyError` when it names no answer of the panel and is not 0."""
    data = first_json_object(text)
    best = data.get("best")
    reason = _string(data.get("reason")) or ""
    if best in (0, "0"):
        return Selection(member=None, correction=None, reason=reason)
    ref = panel.ref(best)
    if ref is None:
        raise JudgeReplyError(
            "judge_schema_mismatch", f"the judge chose {str(best)[:40]!r}, which is no answer"
        )
    correction = data.get("correction")
    corrected = correction.strip() if isinstance(correction, str) and correction.strip() else None
    return Selection(member=ref.member, correction=corrected, reason=reason)


_ANSWER_KEY = re.compile(r'"answer"\s*:\s*"')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}
_SURROGATE = re.compile(r"\\u[dD][89abAB]")


class AnswerStream:
    """Decodes the "answer" string of a one-pass reply as its JSON arrives, for streaming: nothing
    until the key appears, never half an escape sequence, nothing after the closing quote."""

    def __init__(self) -> None:
        self._raw = ""
        self._at: int | None = None  # where decoding resumes, once the answer has begun
        self._closed = False

    def feed(self, delta: str) -> str:
        """The answer's text that `delta` completes."""
        self._raw += delta
        if self._at is None:
            match = _ANSWER_KEY.search(self._raw)
            if match is None:
                return ""
            self._at = match.end()
        out: list[str] = []
        raw, at = self._raw, self._at
        while not self._closed and at < len(raw):
            char = raw[at]
            if char == '"':
                self._closed = True
            elif char != "\\":
                out.append(char)
                at += 1
            elif at + 1 >= len(raw):
                break
            elif raw[at + 1] != "u":
                out.append(_ESCAPES.get(raw[at + 1], raw[at + 1]))
                at += 2
            else:
                size = 12 if _SURROGATE.match(raw, at) else 6  # a surrogate pair takes two
                if at + size > len(raw):
                    break
                try:
                    out.append(json.loads(f'"{raw[at : at + size]}"'))
                except ValueError:
                    self._closed = True  # not JSON: the reply itself will say so
                    break
                at += size
        self._at = at
        return "".join(out)
