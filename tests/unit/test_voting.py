"""fusion.judge.voting: which answers say the same thing."""

import pytest
from fusion.judge.voting import tally, texts_agree, vote_key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Paris", "paris"),
        ("The capital of France is **Paris**.", "capital of france is paris"),
        ("Let me think.\nAnswer: Twenty-one", "21"),
        ("B", "option b"),
        ("(B) Paris", "option b"),
        ("B. It is Paris", "option b"),
        ("Because it rains", "because it rains"),
    ],
)
def test_vote_key_is_the_normalised_answer_part(text: str, key: str) -> None:
    assert vote_key(text) == key


def test_answers_that_contain_one_another_agree() -> None:
    votes = tally({0: "Paris", 1: "The capital of France is Paris.", 2: "Lyon", 3: "paris!"})
    assert votes.groups == [[0, 1, 3], [2]]
    assert not votes.unanimous
    assert votes.tied == [[0, 1, 3]]
    assert votes.representative([0, 1, 3]) == 0  # "paris" is the most common key


def test_a_tie_lists_every_largest_group_lowest_index_first() -> None:
    votes = tally({0: "Lyon", 1: "Paris", 2: "Lyon.", 3: "Paris"})
    assert votes.groups == [[0, 2], [1, 3]]
    assert votes.tied == [[0, 2], [1, 3]]


def test_unanimity_needs_two_answers_and_one_group() -> None:
    assert tally({0: "Paris", 1: "It is Paris"}).unanimous
    assert not tally({0: "Paris"}).unanimous
    assert not tally({0: "Paris", 1: "Rome"}).unanimous


def test_numbers_do_not_match_inside_other_numbers() -> None:
    assert tally({0: "1", 1: "21"}).groups == [[0], [1]]


def test_blank_keys_never_agree() -> None:
    assert tally({0: "...", 1: "!!!"}).groups == [[0], [1]]
    assert not texts_agree({0: "...", 1: "..."})


def test_texts_agree_only_when_whole_texts_match() -> None:
    assert texts_agree({0: "The sky is blue.", 1: "the sky is BLUE"})
    assert not texts_agree({0: "The sky is blue.", 1: "The sky is blue. It scatters light."})
    assert not texts_agree({0: "alone"})
