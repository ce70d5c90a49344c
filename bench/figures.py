"""The benchmarks' arithmetic, free of I/O: percentiles, target verdicts, and whether memory stayed flat."""

import math
from typing import Literal

Sense = Literal["≤", "≥"]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 to 1) of `values`; NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


def meets(value: float, target: float, sense: Sense) -> bool:
    """Whether a measured figure meets its target (a NaN, nothing measured, never does)."""
    return value <= target if sense == "≤" else value >= target


FLAT_MB = 1.0
"""How much a service's memory may grow over the second half of the soak and still count as flat.
Python's allocator and the judge's bounded memory of released request ids grow in steps while they
fill, in the soak's first minutes (the seventh round's judge: one step of 1.4 MB, 75–90 s in). A leak
grows for as long as requests flow: 100 bytes per request at 200 requests/s is 3 MB in 150 s."""


def start_middle_end(samples: list[float]) -> tuple[float, float, float]:
    """A soak's first, middle and last memory samples (MB, taken at even intervals)."""
    return samples[0], samples[(len(samples) - 1) // 2], samples[-1]


def second_half_growth_mb(samples: list[float]) -> float:
    """What memory grew from the soak's middle sample to its last (NaN: fewer than two samples)."""
    if len(samples) < 2:
        return math.nan
    _, middle, end = start_middle_end(samples)
    return end - middle


def stayed_flat(samples: list[float]) -> bool:
    return meets(second_half_growth_mb(samples), FLAT_MB, "≤")
