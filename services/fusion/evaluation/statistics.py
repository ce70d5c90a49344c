"""The statistics of an evaluation: means, bootstrap confidence intervals, and the sign test.

Pure and standard-library only. Every resampling draws from a `random.Random` seeded by the caller, so
a report computed twice from the same scores says the same thing.
"""

import math
import random
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("the mean of no values")
    return math.fsum(values) / len(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (q in [0, 1]) of the values, interpolating linearly between the two nearest
    ranks, as numpy's default does."""
    if not values:
        raise ValueError("the percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], not {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _check(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The percentile-bootstrap confidence interval of the mean: the means of `resamples` samples
    drawn with replacement, each as large as `values`, cut at their (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles."""
    if not values:
        raise ValueError("the confidence interval of no values")
    _check(resamples, confidence)
    rng = random.Random(seed)
    means = [mean(rng.choices(values, k=len(values))) for _ in range(resamples)]
    tail = (1.0 - confidence) / 2
    return percentile(means, tail), percentile(means, 1.0 - tail)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """The mean of a - b over paired items, and its percentile-bootstrap confidence interval.
    Items are resampled as pairs (a[i] with b[i]), so that what the two share, such as an item's
    difficulty, stays out of the interval's width."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    return mean(differences), bootstrap_ci(differences, resamples=resamples, confidence=confidence, seed=seed)


def sign_test(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sided exact binomial p-value that a and b win equally often, over the pairs where they
    differ (ties are dropped): twice the chance of a split at least as uneven under p = 1/2, at most
    1. It is 1.0 when no pair differs."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    wins = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    losses = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    trials = wins + losses
    if trials == 0:
        return 1.0
    tail = sum(math.comb(trials, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / (1 << trials))
