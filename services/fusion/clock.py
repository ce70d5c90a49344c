"""Wall-clock helpers. Deadlines are absolute UTC instants shared by every process, so every service
reads the time here: `FUSION_CLOCK_OFFSET_S` shifts this process's clock by that many seconds, which
is how the tests give each process a clock of its own (see docs/delivery-guarantees.md, "Clocks")."""

import os
from datetime import datetime, timedelta

from fusion_contracts.common import utc_now as _true_utc_now

OFFSET = timedelta(seconds=float(os.environ.get("FUSION_CLOCK_OFFSET_S") or 0))


def utc_now() -> datetime:
    return _true_utc_now() + OFFSET


def seconds_until(instant: datetime) -> float:
    return (instant - utc_now()).total_seconds()
