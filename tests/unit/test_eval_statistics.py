"""fusion.evaluation.statistics: means, percentiles, bootstrap intervals and the sign test."""

import pytest
from fusion.evaluation.statistics import bootstrap_ci, mean, paired_bootstrap, percentile, sign_test

SEVENTY_PERCENT = [1.0] * 70 + [0.0] * 30


def test_mean() -> None:
    assert mean([1.0, 2.0, 3.0, 6.0]) == 3.0
    assert mean(SEVENTY_PERCENT) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no values"):
        mean([])


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.0, 1.0), (1.0, 5.0), (0.5, 3.0), (0.25, 2.0), (0.1, 1.4), (0.9, 4.6)],
)
def test_percentile_interpolates_linearly(q: float, expected: float) -> None:
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], q) == pytest.approx(expected)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 1.5)


def test_bootstrap_of_constant_data_is_a_point() -> None:
    assert bootstrap_ci([0.5] * 40) == (0.5, 0.5)


def test_bootstrap_of_seventy_percent_brackets_it_sensibly() -> None:
    low, high = bootstrap_ci(SEVENTY_PERCENT)
    assert low < 0.7 < high
    # The normal approximation gives 0.7 ± 1.96 * sqrt(0.7 * 0.3 / 100) = 0.7 ± 0.09.
    assert 0.58 < low < 0.64
    assert 0.76 < high < 0.82
    assert 0.14 < high - low < 0.22


def test_bootstrap_narrows_as_confidence_drops() -> None:
    low95, high95 = bootstrap_ci(SEVENTY_PERCENT, confidence=0.95)
    low50, high50 = bootstrap_ci(SEVENTY_PERCENT, confidence=0.5)
    assert low95 < low50 < high50 < high95


def test_bootstrap_is_reproducible_by_seed() -> None:
    assert bootstrap_ci(SEVENTY_PERCENT, seed=3) == bootstrap_ci(SEVENTY_PERCENT, seed=3)
    draws = {bootstrap_ci(SEVENTY_PERCENT, resamples=50, seed=seed) for seed in range(10)}
    assert len(draws) > 1


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([1.0], resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.0)


def test_paired_bootstrap_of_a_constant_difference() -> None:
    a = [0.2, 0.9, 0.4, 0.7, 0.1]
    b = [value - 0.1 for value in a]
    difference, (low, high) = paired_bootstrap(a, b)
    assert difference == pytest.approx(0.1)
    assert low == pytest.approx(0.1)
    assert high == pytest.approx(0.1)


def test_paired_bootstrap_resamples_pairs_together() -> None:
    # Items differ wildly in difficulty, but a beats b by exactly 0.1 on each: resampling the pairs
    # together keeps the interval a point, where resampling a and b apart would not.
    a = [float(index % 2) * 0.8 + 0.1 for index in range(50)]
    b = [value - 0.1 for value in a]
    _, (low, high) = paired_bootstrap(a, b)
    assert high - low == pytest.approx(0.0, abs=1e-12)


def test_paired_bootstrap_of_a_real_improvement() -> None:
    a = [1.0] * 60 + [0.0] * 40
    b = [1.0] * 40 + [0.0] * 60  # b is right on a subset of a's items
    difference, (low, high) = paired_bootstrap(a, b)
    assert difference == pytest.approx(0.2)
    assert 0.0 < low < 0.2 < high


def test_paired_bootstrap_needs_pairs() -> None:
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap([1.0, 0.0], [1.0])


def test_sign_test_exact_values() -> None:
    assert sign_test([1.0] * 10, [0.0] * 10) == pytest.approx(2 * 0.5**10)
    assert sign_test([0.0] * 10, [1.0] * 10) == pytest.approx(2 * 0.5**10)
    # 9 wins, 1 loss: 2 * (C(10,0) + C(10,1)) / 2**10 = 22 / 1024.
    assert sign_test([1.0] * 9 + [0.0], [0.0] * 9 + [1.0]) == pytest.approx(22 / 1024)
    # 1 win, 1 loss: the tail is the whole distribution.
    assert sign_test([1.0, 0.0], [0.0, 1.0]) == 1.0
    # 5 wins, 0 losses: 2 / 32.
    assert sign_test([1.0] * 5, [0.0] * 5) == pytest.approx(0.0625)


def test_sign_test_drops_ties() -> None:
    wins = [1.0] * 10
    assert sign_test([*wins, 0.5, 0.5], [0.0] * 10 + [0.5, 0.5]) == pytest.approx(2 * 0.5**10)


def test_sign_test_without_untied_pairs_is_one() -> None:
    assert sign_test([0.5, 1.0], [0.5, 1.0]) == 1.0
    assert sign_test([], []) == 1.0


def test_sign_test_of_many_pairs_stays_a_probability() -> None:
    assert 0.0 <= sign_test([1.0] * 3000, [0.0] * 3000) < 1e-300


def test_sign_test_needs_pairs() -> None:
    with pytest.raises(ValueError, match="length"):
        sign_test([1.0], [])
