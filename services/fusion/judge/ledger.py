"""Which offsets of `fusion.answers` the judge may commit: only past every request it has not yet
released. Pure bookkeeping.

Each consumed message belongs to a request (or to nothing: a dead letter, a late answer). While a
request is open, its messages must be read again after a crash, so a partition's committable offset
is its lowest open message; once every request is released, it is one past the highest offset read.
"""

from collections import defaultdict
from collections.abc import Set as AbstractSet


class Ledger:
    def __init__(self) -> None:
        self._open: defaultdict[int, dict[int, str]] = defaultdict(dict)
        self._highest: dict[int, int] = {}
        self._by_request: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)

    def record(self, partition: int, offset: int, request_id: str | None) -> None:
        """A message read; `request_id` None for one that holds nothing open."""
        self._highest[partition] = max(offset, self._highest.get(partition, -1))
        if request_id is not None:
            self._open[partition][offset] = request_id
            self._by_request[request_id].append((partition, offset))

    def partition_of(self, request_id: str) -> int | None:
        places = self._by_request.get(request_id)
        return places[0][0] if places else None

    def committable(self, partitions: AbstractSet[int]) -> dict[int, int]:
        """Per partition read so far, the offset to commit: its lowest open message, and never past
        what was read since the partition was last (re)assigned."""
        result = {}
        for partition in partitions:
            if partition not in self._highest:
                continue
            read_up_to = self._highest[partition] + 1
            result[partition] = min(min(self._open[partition], default=read_up_to), read_up_to)
        return result

    def close(self, request_id: str) -> None:
        for partition, offset in self._by_request.pop(request_id, []):
            self._open[partition].pop(offset, None)

    def requests_on(self, partitions: AbstractSet[int]) -> set[str]:
        return {request_id for p in partitions for request_id in self._open.get(p, {}).values()}

    def resync(self, partitions: AbstractSet[int], keep: AbstractSet[str]) -> None:
        """Partitions revoked and perhaps coming back, to be read again from their last commit: the
        open messages of requests other than `keep` are dropped, and nothing is committable until
        the partition is read again."""
        for partition in partitions:
            self._highest.pop(partition, None)
        for request_id in self.requests_on(partitions) - keep:
            self.close(request_id)

    def forget(self, partitions: set[int]) -> set[str]:
        """Drops revoked partitions; returns the requests that were open on them."""
        dropped: set[str] = set()
        for partition in partitions:
            dropped.update(self._open.pop(partition, {}).values())
            self._highest.pop(partition, None)
        for request_id in dropped:
            self._by_request.pop(request_id, None)
        return dropped
