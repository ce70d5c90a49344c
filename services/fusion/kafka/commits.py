"""Offset commits for work that finishes out of order, sent in the background and coalesced.

A handler that hands its work to a background task marks the message `started`, and calls what that
returns once the work is done. An offset is committable only when every message before it on its
partition is done (see `OffsetTracker`), so a process that dies mid-work has that work delivered again
(at least once). Commits go out one at a time, each with the newest committable offset of every
partition, at most every `interval_s`: one commit per message cost the broker a request per message.
A crash loses at most the last interval's commits, whose messages are then delivered again.
"""

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from fusion.concurrency import BoundedPool
from fusion.kafka.offsets import OffsetTracker

log = structlog.get_logger(__name__)

COMMIT_INTERVAL_S = 0.1


class BackgroundCommits:
    """Offsets due for commit, sent one commit at a time, at most every `interval_s`, each with the
    newest offset due per partition."""

    def __init__(self, interval_s: float = COMMIT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._due: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def due(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        self._consumer = consumer
        self._due.update(offsets)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._commit_while_due(), name="offset-commits")

    async def _commit_while_due(self) -> None:
        while self._due:
            await self._commit()
            await asyncio.sleep(self._interval_s)

    async def _commit(self) -> None:
        due, self._due = self._due, {}
        assert self._consumer is not None
        try:
            await self._consumer.commit(due)
        except KafkaError as error:  # revoked in a rebalance: its new owner starts from the last commit
            log.info("offsets not committed", partitions=len(due), error=str(error))

    async def flush(self) -> None:
        """Commits what is due without waiting out the interval (at shutdown, once work has drained)."""
        self._interval_s = 0.0
        if self._task is not None:
            await self._task
        if self._due:
            await self._commit()


class OffsetCommitter:
    """Commits each message's offset once it and every message before it on its partition are done."""

    def __init__(self, interval_s: float = COMMIT_INTERVAL_S) -> None:
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._commits = BackgroundCommits(interval_s)

    @property
    def in_flight(self) -> int:
        return self._offsets.in_flight()

    def started(self, record: ConsumerRecord[bytes, bytes], consumer: object) -> Callable[[], None]:
        """Marks the record's work started; returns what to call once it is done."""
        partition = TopicPartition(record.topic, record.partition)
        offset = record.offset
        self._offsets.start(partition, offset)

        def finished() -> None:
            committable = self._offsets.finish(partition, offset)
            if committable is None or not isinstance(consumer, AIOKafkaConsumer):
                return  # nothing new, or FastStream's in-memory test broker: nothing to commit
            self._commits.due(consumer, {partition: committable})

        return finished

    async def flush(self) -> None:
        await self._commits.flush()


async def drain_and_commit(pool: BoundedPool, committer: OffsetCommitter, what: str) -> None:
    """At shutdown: lets the background work finish (cancelling what outlives 25 s), then commits
    the offsets of what did finish."""
    left = await pool.drain(timeout_s=25.0)
    if left:
        log.warning(f"{what} cancelled at shutdown", count=left)
    await committer.flush()
