"""A transactional producer per consumed partition, so that a partition's new owner fences its old one.

The transactional id belongs to the partition, not to the process: whoever is assigned the partition
opens a producer under its id, which aborts what an earlier holder left open and fences that holder
(a process paused past its session timeout, say), whose next commit is refused. Only the next
assignment of the partition may open it again.

A transaction is bounded in time. aiokafka can wait for ever on a transaction coordinator that a
broker's failure took away (it keeps the coordinator it found, and a producer that started while a
broker was down may never reach that broker again): such a producer is given up on, a new one under
the same id fences it, and `settle` waits until whatever it left is committed or aborted, so the
markers then tell what went out.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from fusion_contracts import limits

from fusion.kafka.security import KafkaConnection, connection

log = structlog.get_logger(__name__)

TXN_RETRY_BACKOFF_MS = 5
"""aiokafka's wait before retrying a refused transactional request. (A transaction's first
partitions, refused while the last commit's markers are still being written, wait aiokafka's own
fixed 20 ms.)"""

REFUSING: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
)
"""Errors of a destination that will never take the message, however often it is sent again."""

COMMIT_TIMEOUT_S = 30.0
"""The longest one transaction may take (a broker's failover takes seconds) before its producer is
given up on and its outcome is `unknown`."""
STOP_TIMEOUT_S = 10.0
"""How long a producer given up on may take to stop; one that takes longer is left to itself (it is
fenced already)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """`committed`; `fenced`: another holder of the id took over, and nothing more may be sent from
    here until `open`; `retry`: not committed, try again; `refused`: not committed, because the
    destination of the messages at these indexes refuses them (the error, by index); `unknown`: the
    transaction did not end in time, its producer is given up on, and it may or may not have
    committed (`settle`, then read the markers)."""

    kind: Literal["committed", "fenced", "retry", "refused", "unknown"]
    refused: dict[int, str] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    value: bytes
    key: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class PartitionProducer:
    """The transactional producer of one consumed partition (`transactional_id`)."""

    def __init__(
        self,
        kafka: str | KafkaConnection,
        transactional_id: str,
        commit_timeout_s: float = COMMIT_TIMEOUT_S,
    ) -> None:
        self._kafka = connection(kafka)
        self.transactional_id = transactional_id
        self._commit_timeout_s = commit_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._opening = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()
        self.fenced = False

    async def open(self, unless_open: bool = False) -> None:
        """(Again) the owner: a new producer under the partition's id, which fences every earlier one
        and aborts what they left open. `unless_open`: only if it has none (and is not fenced) by the
        time it is its turn, for the rebalance listener and the handler may both open it at once."""
        async with self._opening:
            if unless_open and not self.unopened:
                return
            await self._close()
            await self._start()

    async def close(self) -> None:
        async with self._opening:
            await self._close()

    async def _start(self) -> None:
        producer = AIOKafkaProducer(
            **self._kafka.client_args(),
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            max_request_size=limits.MAX_MESSAGE_BYTES,
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()  # or it is left unclosed, with tasks of its own
            raise
        self._producer = producer
        self.fenced = False

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop(producer)

    def _abandon(self) -> None:
        """Gives the producer up without waiting for it: the next `open` fences it."""
        producer, self._producer = self._producer, None
        if producer is not None:
            task = asyncio.create_task(_stop(producer), name=f"stop-{self.transactional_id}")
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

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
        """Sends `messages` in one transaction, each acknowledged before it commits; `unknown` when
        it does not end within the commit timeout (the producer is given up on)."""
        producer = self._producer
        if producer is None or self.fenced:
            return Outcome("fenced" if self.fenced else "retry")
        attempt = asyncio.create_task(self._transact(producer, messages))
        try:
            done, _ = await asyncio.wait({attempt}, timeout=self._commit_timeout_s)
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        if done:
            return attempt.result()
        attempt.cancel()
        attempt.add_done_callback(_read_error)
        log.warning(
            "transaction unfinished; its producer is given up on",
            id=self.transactional_id,
            after_s=self._commit_timeout_s,
            messages=len(messages),
        )
        if producer is self._producer:
            self._abandon()
        return Outcome("unknown")

    async def settle(self) -> Outcome:
        """Holds the id for sure: a producer opened if there is none, and its InitProducerId done (an
        empty transaction waits for it), so whatever an earlier producer under the id left open is
        committed or aborted by now and the markers can be read. `committed` when so."""
        if self.fenced:
            return Outcome("fenced")
        await self.open(unless_open=True)
        return await self.commit([])

    async def _transact(self, producer: AIOKafkaProducer, messages: list[Outgoing]) -> Outcome:
        sent: list[asyncio.Future[Any]] = []
        try:
            async with producer.transaction():
                for message in messages:
                    sent.append(await self._send(producer, message))
                acknowledged = await asyncio.gather(*sent, return_exceptions=True)
                refused = {
                    index: repr(error)
                    for index, error in enumerate(acknowledged)
                    if isinstance(error, REFUSING)
                }
                if refused:
                    raise _Refused(refused)
                if failed := next((e for e in acknowledged if isinstance(e, BaseException)), None):
                    raise failed
        except ProducerFenced:
            _retrieve(sent)
            if producer is not self._producer:  # one given up on, fenced by its successor here
                return Outcome("unknown")
            log.warning("transaction refused: another owner holds the id", id=self.transactional_id)
            self.fenced = True
            return Outcome("fenced")
        except _Refused as refusal:
            log.warning("transaction aborted: a destination refuses a message", errors=refusal.errors)
            return Outcome("refused", refusal.errors)
        except REFUSING as error:  # refused before it was sent (larger than the producer allows)
            log.warning("transaction aborted: a message is refused", error=repr(error))
            return Outcome("refused", {index: repr(error) for index in range(len(messages))})
        except KafkaError as error:  # the broker away, say: nothing was committed
            _retrieve(sent)
            log.warning("transaction failed; retrying", error=repr(error), messages=len(messages))
            return Outcome("retry")
        except Exception:  # whatever it is, the output must go on (retried; /health sees it last)
            _retrieve(sent)
            log.exception("transaction failed unexpectedly; retrying", messages=len(messages))
            return Outcome("retry")
        return Outcome("committed")

    @staticmethod
    async def _send(producer: AIOKafkaProducer, message: Outgoing) -> "asyncio.Future[Any]":
        acknowledged: asyncio.Future[Any] = await producer.send(
            message.topic,
            message.value,
            key=message.key,
            partition=message.partition,
            headers=list(message.headers),
        )
        return acknowledged


async def _stop(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(KafkaError, TimeoutError):
        await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_S)


def _retrieve(sent: list["asyncio.Future[Any]"]) -> None:
    """The acknowledgements of a transaction that failed part-way are of no use: their errors are
    read, now or once they come, so that none is reported as never retrieved."""
    for future in sent:
        future.add_done_callback(_read_error)


def _read_error(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()
