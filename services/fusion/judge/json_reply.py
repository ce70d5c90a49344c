"""Reading JSON out of a judge's reply, which a small model may wrap in prose or cut off. Pure."""

import json
import re
from typing import Any, Literal

Problem = Literal["judge_invalid_json", "judge_schema_mismatch"]


class JudgeReplyError(ValueError):
    """A judge's reply that cannot be read as what was asked: `reason` says how it fails."""

    def __init__(self, reason: Problem, message: str) -> None:
        super().__init__(message)
        self.reason: Problem = reason


def _scan(text: str) -> tuple[bool, str]:
    """Whether `text` ends inside a string, and the closers its open arrays and objects need."""
    closers: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]" and closers:
            closers.pop()
    return in_string, "".join(reversed(closers))


_DANGLING = (
    re.compile(r'(,\s*)?"[^"]*"\s*:\s*$'),  # a key and its colon, no value yet
    re.compile(r'(,\s*)?"[^"]*"\s*$'),  # a key (or a last value) cut after its closing quote
    re.compile(r"[,:]\s*$"),
)


def _repairs(text: str) -> list[str]:
    """Ways to close JSON cut off at a token limit, from the least to the most dropped."""
    in_string, _ = _scan(text)
    base = (text + '"' if in_string else text).rstrip()
    candidates = [base, *(pattern.sub("", base) for pattern in _DANGLING)]
    return [candidate + _scan(candidate)[1] for candidate in candidates]


def first_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model's reply (prose around it is ignored), repaired when the reply
    was cut off at a token limit. `JudgeReplyError` when there is none."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    first = text.find("{")
    for repaired in _repairs(text[first:]) if first != -1 else []:
        try:
            value = json.loads(repaired)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise JudgeReplyError("judge_invalid_json", "the judge's reply contains no JSON object")
