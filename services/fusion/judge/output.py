"""The judge's results, exactly once: each result and a marker that its request is released are
committed in one Kafka transaction.

Readers of results use `read_committed`, so a judge that dies mid-way leaves no result behind. The
consumed offsets are committed after the transaction, in the background, and only past requests
already released (see `Ledger`): the judge that takes over reads again from the last commit, and the
markers, loaded before it handles a partition, tell it which of those requests are already released.
Committing the offsets inside the transaction as well cost two more round trips on every result
(AddOffsetsToTxn, TxnOffsetCommit) for no stronger guarantee. Results ready at the same time share
one transaction.
"""

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.producer import sender as aiokafka_sender
from fusion_contracts import FusedResult, PanelPlan, limits, topics
from opentelemetry import propagate

from fusion.judge.ledger import Ledger
from fusion.kafka.broker import publish_span
from fusion.kafka.codec import encode
from fusion.kafka.commits import BackgroundCommits
from fusion.observability.tracing import tracing_enabled
from fusion.settings import Settings

log = structlog.get_logger(__name__)

GROUP = "fusion-judges"
MAX_BATCH = 200
RETRY_S = 1.0
TXN_RETRY_BACKOFF_MS = 5
REFUSED_TXN_START_RETRY_S = 0.002
"""How soon a transaction whose first partitions were refused asks again. The broker answers a
commit before it has written the commit's markers, and until they are written it refuses the next
transaction (CONCURRENT_TRANSACTIONS), which happens whenever results follow each other closely.
aiokafka then waits a fixed 20 ms (its `BACKOFF_OVERRIDE`), and every result queued behind that
transaction waits with it. The markers follow the commit closely, so one retry after 2 ms is nearly
always enough. On a cluster whose markers take longer to write (replicated partitions), it asks
every 2 ms until they are: a few more small requests to the transaction coordinator, and no change
to what is committed."""


@dataclass
class _Pending:
    plan: PanelPlan
    result: FusedResult
    headers: list[tuple[str, bytes]]
    done: "asyncio.Future[bool]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def retry_refused_transactions_sooner() -> None:
    """Sets aiokafka's wait after a refused first AddPartitionsToTxn (for the whole process: the
    judge's producer is its only transactional one)."""
    if not hasattr(aiokafka_sender, "BACKOFF_OVERRIDE"):
        log.warning("aiokafka has no BACKOFF_OVERRIDE any more; a refused transaction waits its default")
        return
    aiokafka_sender.BACKOFF_OVERRIDE = REFUSED_TXN_START_RETRY_S


class TransactionalResults:
    def __init__(self, settings: Settings, ledger: Ledger, owns: "OwnedPartitions") -> None:
        self._settings = settings
        self._ledger = ledger
        self._owns = owns
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._commits = BackgroundCommits()
        self._traced = tracing_enabled()

    async def start(self) -> None:
        retry_refused_transactions_sooner()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            transactional_id=f"fusion-judge-{self._settings.instance_id}",
            enable_idempotence=True,
            max_request_size=limits.MAX_MESSAGE_BYTES,
            # aiokafka's wait before retrying any refused transactional request other than a
            # transaction's first partitions (those: `REFUSED_TXN_START_RETRY_S`). The default
            # (100 ms) would add that much to every result whose transaction is refused once.
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
        )
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="judge-results")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._commits.flush()
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, plan: PanelPlan, result: FusedResult) -> bool:
        """Waits until the result is committed; False when its partition moved to another judge."""
        headers: dict[str, str] = {}
        if self._traced:  # the context the result's span will be a child of (`publish_span`)
            propagate.inject(headers)
        pending = _Pending(plan, result, [(k, v.encode()) for k, v in headers.items()])
        await self._queue.put(pending)
        return await pending.done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            await self._commit_until_done(batch)

    async def _commit_until_done(self, batch: list[_Pending]) -> None:
        while True:
            owned = [item for item in batch if self._owns.request(item.plan.request_id)]
            for item in batch:
                if item not in owned and not item.done.done():
                    item.done.set_result(False)  # its new owner releases it again
            if not owned:
                return
            try:
                await self._transaction(owned)
            except KafkaError as error:
                log.warning("result transaction failed; retrying", error=repr(error), results=len(owned))
                await asyncio.sleep(RETRY_S)
                continue
            partitions = {
                p for item in owned if (p := self._ledger.partition_of(item.plan.request_id)) is not None
            }
            for item in owned:
                self._ledger.close(item.plan.request_id)
                item.done.set_result(True)
            self._commit_offsets_soon(partitions)
            return

    async def _transaction(self, batch: list[_Pending]) -> None:
        producer = self._producer
        assert producer is not None
        async with producer.transaction():
            for item in batch:
                await self._send(producer, item)

    def _commit_offsets_soon(self, partitions: set[int]) -> None:
        """Past every request released so far on these partitions, for those still assigned."""
        consumer = self._owns.consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for partition, offset in self._ledger.committable(partitions).items()
            if (tp := TopicPartition(topics.ANSWERS, partition)) in assigned
        }
        self._commits.due(consumer, offsets)

    async def _send(self, producer: AIOKafkaProducer, item: _Pending) -> None:
        reply_to = item.plan.reply_to
        topic = reply_to.topic if reply_to else topics.RESULTS
        key = topics.request_key(item.plan.request_id)
        with publish_span(topic, self._traced, parent=item.headers) as headers:
            await producer.send(
                topic,
                encode(item.result),
                key=key,
                partition=reply_to.partition if reply_to else None,
                headers=headers,
            )
        await producer.send(topics.RELEASED, b"", key=key)


class OwnedPartitions:
    """Whether this judge still owns a request's answers partition: asked of the consumer itself at
    the moment of publishing, so no rebalance callback can be late for it."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.consumer: AIOKafkaConsumer | None = None

    def request(self, request_id: str) -> bool:
        partition = self._ledger.partition_of(request_id)
        if partition is None or self.consumer is None:
            return False
        return TopicPartition(topics.ANSWERS, partition) in self.consumer.assignment()


class ReleasedMarkers:
    """Loads a partition's released markers before the judge reads its first message from it."""

    def __init__(self, settings: Settings, adopt: "Callable[[set[str]], None]") -> None:
        self._settings = settings
        self._adopt = adopt
        self._loaded: set[int] = set()
        self._lock = asyncio.Lock()

    async def ensure(self, partitions: set[int]) -> None:
        """Loads the markers of those of `partitions` not loaded yet, all with one reader."""
        if partitions <= self._loaded:
            return
        async with self._lock:
            missing = partitions - self._loaded
            if not missing:
                return
            released = await released_requests(self._settings, missing)
            self._adopt(released)
            self._loaded |= missing
            log.info(
                "answers partitions taken over", partitions=sorted(missing), already_released=len(released)
            )

    def forget(self, partitions: set[int]) -> None:
        self._loaded -= partitions


async def released_requests(settings: Settings, partitions: set[int]) -> set[str]:
    """The request ids already released on these partitions, from the markers topic."""
    if not partitions:
        return set()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topics.RELEASED, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        released: set[str] = set()
        remaining = {tp for tp in assigned if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for records in batches.values():
                released.update(record.key.decode() for record in records if record.key)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return released
    finally:
        await consumer.stop()
