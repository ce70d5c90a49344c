"""Which panel answer stands for the panel when the judge cannot write one: the most central one."""

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
