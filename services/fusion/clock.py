"""Wall-clock helpers. Deadlines are absolute UTC instants shared by every process."""

from datetime import datetime

from fusion_contracts.common import utc_now

__all__ = ["seconds_until", "utc_now"]


def seconds_until(instant: datetime) -> float:
    return (instant - utc_now()).total_seconds()
