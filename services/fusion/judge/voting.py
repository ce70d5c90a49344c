"""Which panel answers say the same thing: the `vote` strategy's tally and every strategy's agreement
test. Pure functions.

For `vote`, an answer is reduced to its key: the answer part of the response (after a line that starts
with "Answer:", else its first line), normalised as `fusion eval` grades short answers, or the option
letter when it starts with one ("B", "(B) Paris"). Two answers agree when their keys are equal or one
is a whole-word part of the other ("paris" and "capital is paris"). The other strategies call answers
in agreement only when their whole texts are equal once normalised.
"""

import re
from collections import Counter
from dataclasses import dataclass

from fusion.answer_text import extract_short, normalise

_OPTION = re.compile(r"^\(?([A-J])(?:[).:](?:\s|$)|\s*$)")


def vote_key(text: str) -> str:
    extracted = extract_short(text)
    if option := _OPTION.match(extracted):
        return f"option {option[1].lower()}"
    return normalise(extracted)


def _same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and (f" {a} " in f" {b} " or f" {b} " in f" {a} ")


@dataclass(frozen=True, slots=True)
class Tally:
    groups: list[list[int]]
    """Member indexes of the answers that agree, the largest group first (ties: the lowest index)."""
    keys: dict[int, str]

    @property
    def unanimous(self) -> bool:
        return len(self.groups) == 1 and len(self.groups[0]) > 1

    @property
    def tied(self) -> list[list[int]]:
        """The groups that share the largest size: more than one is a tie."""
        return [group for group in self.groups if len(group) == len(self.groups[0])]

    def representative(self, group: list[int]) -> int:
        """The group's answer to stand for it: the one with the most common key, then the lowest index."""
        counts = Counter(self.keys[index] for index in group)
        return min(group, key=lambda index: (-counts[self.keys[index]], index))


def tally(answers: dict[int, str]) -> Tally:
    keys = {index: vote_key(text) for index, text in answers.items()}
    groups: list[list[int]] = []
    for index in sorted(answers):
        home = next((group for group in groups if any(_same(keys[index], keys[j]) for j in group)), None)
        if home is None:
            groups.append([index])
        else:
            home.append(index)
    return Tally(groups=sorted(groups, key=lambda group: (-len(group), group[0])), keys=keys)


def texts_agree(answers: dict[int, str]) -> bool:
    """Whether two or more answers are all the same text, once normalised."""
    texts = {normalise(text) for text in answers.values()}
    return len(answers) > 1 and len(texts) == 1 and "" not in texts
