"""fusion.judge.best_answer.most_central: the answer that stands for the panel without a judge."""

import pytest
from fusion.judge.best_answer import most_central


def test_picks_the_answer_most_similar_to_the_others() -> None:
    texts = [
        "The sky is blue because of Rayleigh scattering of sunlight.",
        "Bananas are yellow and grow in tropical places.",
        "Rayleigh scattering of sunlight makes the sky blue.",
        "The sky looks blue because sunlight undergoes Rayleigh scattering.",
    ]
    assert most_central(texts) in {0, 2, 3}
    assert most_central(texts) != 1


def test_highest_summed_word_overlap_wins_outlier_first_does_not() -> None:
    # Jaccard sums: [x y z] 0; [a b c d] 3/4 + 2/4 = 1.25; [a b c] 3/4 + 2/3 = 1.42; [a b] 2/3 + 2/4 = 1.17
    texts = ["x y z", "a b c d", "a b c", "a b"]
    assert most_central(texts) == 2


def test_is_case_and_punctuation_insensitive() -> None:
    texts = ["ALPHA, BETA!", "zeta eta", "alpha beta gamma", "alpha. beta?"]
    assert most_central(texts) in {0, 3}


def test_ties_go_to_the_longer_answer() -> None:
    assert most_central(["same words", "same words", "same   words"]) == 2
    assert most_central(["a b", "c dd"]) == 1


def test_single_answer_is_index_zero() -> None:
    assert most_central(["only one"]) == 0


def test_answers_without_words_do_not_crash() -> None:
    assert most_central(["!!!", "???", "..."]) in {0, 1, 2}


def test_empty_raises_value_error() -> None:
    with pytest.raises(ValueError, match="no answers"):
        most_central([])
