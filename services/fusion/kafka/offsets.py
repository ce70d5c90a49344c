"""Which offsets a consumer may commit while its work finishes out of order. Pure bookkeeping.

Tasks of one partition run side by side and finish in any order; an offset is committed only when
every task before it has finished, so a worker that dies mid-call leaves its unfinished tasks to be
delivered again (at least once; the judge keeps the first answer per member).
"""

from collections import defaultdict
from typing import Generic, TypeVar

P = TypeVar("P")


class OffsetTracker(Generic[P]):
    def __init__(self) -> None:
        self._running: defaultdict[P, set[int]] = defaultdict(set)
        self._highest: dict[P, int] = {}
        self._committed: dict[P, int] = {}

    def start(self, partition: P, offset: int) -> None:
        self._running[partition].add(offset)
        self._highest[partition] = max(offset, self._highest.get(partition, -1))

    def finish(self, partition: P, offset: int) -> int | None:
        """The offset to commit now (the next one to read), or None when it has not moved."""
        running = self._running[partition]
        running.discard(offset)
        committable = min(running) if running else self._highest[partition] + 1
        if committable <= self._committed.get(partition, -1):
            return None
        self._committed[partition] = committable
        return committable

    def in_flight(self) -> int:
        return sum(len(offsets) for offsets in self._running.values())
