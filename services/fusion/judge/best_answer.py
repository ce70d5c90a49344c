"""Which panel answer stands for the panel when the judge cannot write one (the most central one), and
whether a judge's correction of an answer is an edit of it. Word overlap: pure functions."""

import re

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


def _similarity(a: set[str], b: set[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def most_central(texts: list[str]) -> int:
    """Index of the answer most alike the others (word overlap); ties go to the longer answer."""
    if not texts:
        raise ValueError("no answers to choose from")
    words = [_words(text) for text in texts]

    def score(index: int) -> tuple[float, int]:
        overlap = sum(_similarity(words[index], other) for j, other in enumerate(words) if j != index)
        return overlap, len(texts[index])

    return max(range(len(texts)), key=score)


EDIT_OVERLAP = 0.5
"""A correction shares at least this much of its words (Jaccard) with the answer it corrects."""


def is_an_edit(correction: str, answer: str) -> bool:
    """Whether `correction` reads as an edit of `answer`, not a text of its own: a weak judge asked to
    correct an answer often writes something else entirely (a comment on the task, say)."""
    return _similarity(_words(correction), _words(answer)) >= EDIT_OVERLAP
