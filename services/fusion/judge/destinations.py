"""Where a result may go: the plan's `reply_to` when it names an allowed topic that exists, with a
partition it has; `fusion.results` otherwise, so one request's bad `reply_to` never holds up the
results behind it."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import structlog
from aiokafka.errors import KafkaError
from fusion_contracts import ReplyTo, topics

log = structlog.get_logger(__name__)

LOOKUP_TIMEOUT_S = 5.0
REMEMBER_S = 30.0

PartitionsOf = Callable[[str], Awaitable[set[int] | None]]


@dataclass(frozen=True, slots=True)
class Destination:
    topic: str
    partition: int | None
    refused: str | None = None
    """Why the `reply_to` was not used, when it was not."""


def allowed(topic: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(topic, pattern) for pattern in patterns)


def check(reply_to: ReplyTo | None, patterns: Sequence[str], partitions: set[int] | None) -> Destination:
    """Pure: the destination of a result, given the reply topic's partitions (None: no such topic)."""
    if reply_to is None:
        return Destination(topics.RESULTS, None)
    if not allowed(reply_to.topic, patterns):
        return Destination(topics.RESULTS, None, f"reply_to topic {reply_to.topic!r} is not allowed")
    if not partitions:
        return Destination(topics.RESULTS, None, f"reply_to topic {reply_to.topic!r} does not exist")
    if reply_to.partition is not None and reply_to.partition not in partitions:
        return Destination(
            topics.RESULTS,
            None,
            f"reply_to partition {reply_to.partition} of {reply_to.topic!r} does not exist",
        )
    return Destination(reply_to.topic, reply_to.partition)


class Destinations:
    """Checks each `reply_to` against the allowed topics and the broker's metadata, remembered for a
    while, so a missing topic costs one bounded lookup every `REMEMBER_S`, not one per result."""

    def __init__(
        self, patterns: Sequence[str], partitions_of: PartitionsOf, lookup_timeout_s: float = LOOKUP_TIMEOUT_S
    ) -> None:
        self._patterns = tuple(patterns)
        self._partitions_of = partitions_of
        self._lookup_timeout_s = lookup_timeout_s
        self._known: dict[str, tuple[float, set[int] | None]] = {}

    async def of(self, reply_to: ReplyTo | None) -> Destination:
        if reply_to is None or not allowed(reply_to.topic, self._patterns):
            return check(reply_to, self._patterns, None)
        destination = check(reply_to, self._patterns, await self._partitions(reply_to.topic))
        if destination.refused:
            log.warning("result sent to fusion.results instead", reason=destination.refused)
        return destination

    async def _partitions(self, topic: str) -> set[int] | None:
        now = time.monotonic()
        known = self._known.get(topic)
        if known is not None and now - known[0] < REMEMBER_S:
            return known[1]
        try:
            partitions = await asyncio.wait_for(self._partitions_of(topic), self._lookup_timeout_s)
        except (KafkaError, TimeoutError):
            partitions = None
        self._known[topic] = (now, partitions)
        return partitions
