"""What a short answer says: the answer part of a response, normalised so that two ways of writing one
answer compare equal. Pure functions, shared by the judge's `vote` strategy and `fusion eval`'s
grading of short answers."""

import re
import unicodedata
from collections.abc import Sequence

_ARTICLES = frozenset({"a", "an", "the"})
_SMALL_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
)
_SMALL = {word: value for value, word in enumerate(_SMALL_WORDS.split(" "))}
_TENS = {
    word: 10 * value
    for value, word in enumerate(
        ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"), 2
    )
}
_DECIMAL_POINT = "\x00"
_DROPPED = frozenset("'’.")
"""Punctuation removed without a trace, so that "U.S.A." reads "usa" and "don't" reads "dont"."""


def _depunctuate(text: str) -> str:
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000 -> 1000
    text = re.sub(r"(?<=\d)\.(?=\d)", _DECIMAL_POINT, text)  # 2.5 keeps its point
    text = text.replace("%", " percent ")
    chars: list[str] = []
    for char in text:
        if char == _DECIMAL_POINT:
            chars.append(".")
        elif char in _DROPPED:
            continue
        elif unicodedata.category(char)[0] in "PS":  # other punctuation and symbols separate words
            chars.append(" ")
        else:
            chars.append(char)
    return "".join(chars)


def _read_number(words: Sequence[str], start: int) -> tuple[int, int]:
    """The number spelled out by words[start:end], and end; end == start when none starts there."""
    if words[start] == "zero":
        return 0, start + 1
    total = current = 0
    last: str | None = None
    end = index = start
    while index < len(words):
        word = words[index]
        if (
            word in _SMALL
            and word != "zero"
            and (last in (None, "hundred", "thousand") or (last == "tens" and _SMALL[word] < 10))
        ):
            current, last = current + _SMALL[word], "small"
        elif word in _TENS and last in (None, "hundred", "thousand"):
            current, last = current + _TENS[word], "tens"
        elif word == "hundred" and last in (None, "small", "tens") and current < 100:
            current, last = (current or 1) * 100, "hundred"
        elif word == "thousand" and last != "thousand" and total == 0:
            total, current, last = (current or 1) * 1000, 0, "thousand"
        elif word == "and" and last in ("hundred", "thousand") and index + 1 < len(words):
            following = words[index + 1]
            if following not in _TENS and not (following in _SMALL and following != "zero"):
                break
            index += 1
            continue
        else:
            break
        index += 1
        end = index
    return total + current, end


def _numbers(words: Sequence[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(words):
        value, end = _read_number(words, index)
        if end == index:
            out.append(words[index])
            index += 1
        else:
            out.append(str(value))
            index = end
    return out


def normalise(text: str) -> str:
    """Text reduced to what an answer means: lower case, accents off (Unicode NFKD), punctuation
    removed, the articles a/an/the dropped, number words zero to twenty, the tens, hundred and thousand
    written as digits ("twenty-one" -> "21", "a hundred" -> "100"), and single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
    words = [word for word in _depunctuate(plain).split() if word not in _ARTICLES]
    return " ".join(_numbers(words))


THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
"""A reasoning model's thinking, which is not its answer."""
_ANSWER_MARKER = re.compile(r"^[\s#>*_-]*(?:final\s+)?answer(?:\s+is)?\s*[:：]", re.IGNORECASE | re.MULTILINE)
"""An "Answer:" or "Final answer:" at the start of a line (after markdown marks): one in the middle of
a sentence ("a few tweaks to the draft answer: ...") is prose, not the answer."""
_LINE_PREFIX = re.compile(r"^\s*(?:#+\s*|>\s*|[-+•]\s+)*")


def _unmarked(text: str) -> str:
    """Markdown emphasis and code marks removed: **bold**, __bold__, *italic*, `code`."""
    return re.sub(r"\*+|__+|`+", "", text)


def _first_line(text: str) -> str:
    lines = (_LINE_PREFIX.sub("", line).strip() for line in text.splitlines())
    return next((line for line in lines if line), "")


def extract_short(response: str) -> str:
    """The answer part of a response: what follows the last "Answer:" or "Final answer:" that starts
    a line (on its line, or the next non-empty one), else the first non-empty line; markdown marks
    stripped."""
    text = _unmarked(THINKING.sub("", response))
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers:
        answer = _first_line(text[markers[-1].end() :])
        if answer:
            return answer
    return _first_line(text)
