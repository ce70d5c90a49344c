"""A transactional producer per consumed partition, so that a partition's new owner fences its old one.

The transactional id belongs to the partition, not to the process: whoever is assigned the partition
opens a producer under its id, which aborts what an earlier holder left open and fences that holder
(a process paused past its session timeout, say), whose next commit is refused. Only the next
assignment of the partition may open it again.
"""

import contextlib
from dataclasses import dataclass
from typing import Literal

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from fusion_contracts import limits

log = structlog.get_logger(__name__)

TXN_RETRY_BACKOFF_MS = 5
"""aiokafka's wait before retrying a refused transactional request. (A transaction's first
partitions, refused while the last commit's markers are still being written, wait aiokafka's own
fixed 20 ms.)"""

Outcome = Literal["committed", "fenced", "retry"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    value: bytes
    key: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class PartitionProducer:
    """The transactional producer of one consumed partition (`transactional_id`)."""

    def __init__(self, bootstrap: str, transactional_id: str) -> None:
        self._bootstrap = bootstrap
        self.transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self.fenced = False

    async def open(self) -> None:
        """(Again) the owner: a new producer under the partition's id, which fences every earlier one
        and aborts what they left open."""
        await self.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            max_request_size=limits.MAX_MESSAGE_BYTES,
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
        )
        await producer.start()
        self._producer = producer
        self.fenced = False

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()

    @property
    def is_open(self) -> bool:
        return self._producer is not None and not self.fenced

    @property
    def unopened(self) -> bool:
        return self._producer is None and not self.fenced

    async def partitions_for(self, topic: str) -> set[int] | None:
        """The topic's partitions as the cluster's metadata has them (None: no such topic, or not
        open)."""
        if self._producer is None:
            return None
        partitions: set[int] | None = await self._producer.partitions_for(topic)
        return partitions

    async def commit(self, messages: list[Outgoing]) -> Outcome:
        """Sends `messages` in one transaction. `fenced`: another holder of the id took over, and
        nothing more may be sent from here until `open`; `retry`: not committed, try again."""
        producer = self._producer
        if producer is None or self.fenced:
            return "fenced" if self.fenced else "retry"
        try:
            async with producer.transaction():
                for message in messages:
                    await producer.send(
                        message.topic,
                        message.value,
                        key=message.key,
                        partition=message.partition,
                        headers=list(message.headers),
                    )
        except ProducerFenced:
            log.warning("transaction refused: another owner holds the id", id=self.transactional_id)
            self.fenced = True
            return "fenced"
        except KafkaError as error:
            log.warning("transaction failed; retrying", error=repr(error), messages=len(messages))
            return "retry"
        return "committed"
