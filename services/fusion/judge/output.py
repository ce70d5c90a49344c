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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from fusion_contracts import FusedResult, PanelPlan, PanelRejection, limits, topics
from opentelemetry import propagate

from fusion.judge.destinations import Destination, Destinations
from fusion.judge.ledger import Ledger
from fusion.kafka.broker import publish_span
from fusion.kafka.codec import encode
from fusion.kafka.commits import BackgroundCommits
from fusion.kafka.dead_letters import undeliverable
from fusion.kafka.security import KafkaConnection, client_options
from fusion.kafka.stopping import stop_consumer
from fusion.kafka.transactions import Outgoing, PartitionProducer
from fusion.liveness import Progress
from fusion.observability.tracing import tracing_enabled
from fusion.settings import Settings

log = structlog.get_logger(__name__)

GROUP = "fusion-judges"
MAX_BATCH = 200
RETRY_S = 1.0
SETTLE_READ_TIMEOUT_S = 15.0
"""The longest one read of a partition's markers may take while a transaction is settled."""


@dataclass
class _Pending:
    plan: PanelPlan | PanelRejection
    result: FusedResult
    headers: list[tuple[str, bytes]]
    released_as: str
    """The name its marker is written under: its request id, or a duplicate's (`duplicate_key`)."""
    reroute: str | None = None
    """Why its `reply_to` refused it, once it did: it goes to fusion.results."""
    done: "asyncio.Future[bool]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def transactional_id(partition: int) -> str:
    """One id per answers partition, whichever judge holds it: the new owner's producer fences the
    old owner's (a judge paused past its session timeout, say), which then cannot commit a result."""
    return f"fusion-judge-answers-{partition}"


class PartitionOutput:
    """The results of one answers partition, in transactions of its own producer. While the
    partition is being rebalanced its results wait; once the assignment is known they are published
    (the partition came back) or refused (it went to another judge)."""

    def __init__(
        self,
        settings: Settings,
        partition: int,
        committed: Callable[[int, set[str]], None],
        progress: Progress | None = None,
        producer: PartitionProducer | None = None,
    ) -> None:
        self.partition = partition
        self._progress = progress or Progress(settings.stuck_after_s)
        self._settings = settings
        self._committed = committed
        self._pending: list[_Pending] = []
        self._unsettled: list[_Pending] = []
        """A batch whose transaction ended `unknown`: nothing more goes out until the markers say
        which of it did (`_settle`)."""
        self._unsettled_since = 0.0
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._producer = producer or PartitionProducer(
            KafkaConnection.of(settings), transactional_id(partition), settings.judge_transaction_timeout_s
        )
        self._task: asyncio.Task[None] | None = None
        self._traced = tracing_enabled()
        self._destinations = Destinations(settings.reply_topics, self._producer.partitions_for)

    async def open(self, unless_open: bool = False) -> None:
        """(Again) the owner: fences every earlier holder of the partition's id."""
        await self._producer.open(unless_open)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"judge-results-{self.partition}")

    @property
    def fenced(self) -> bool:
        return self._producer.fenced

    @property
    def is_open(self) -> bool:
        return self._producer.is_open

    @property
    def unopened(self) -> bool:
        return self._producer.unopened

    def resume(self) -> None:
        """Publishing may go on: the partition's markers are loaded, so what waits is not a result
        another judge has already published."""
        if self.is_open:
            self._ready.set()

    async def hold(self) -> None:
        """Revoked, for now: no new transaction starts, and the one under way ends first."""
        self._ready.clear()
        async with self._lock:
            pass

    async def close(self) -> None:
        """Another judge owns the partition now: what waits is refused (its new owner fuses it)."""
        self._ready.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._refuse(self._unsettled + self._pending)
        self._unsettled, self._pending = [], []
        await self._producer.close()

    async def publish(
        self, plan: PanelPlan | PanelRejection, result: FusedResult, released_as: str | None = None
    ) -> bool:
        headers: dict[str, str] = {}
        if self._traced:  # the context the result's span will be a child of (`publish_span`)
            propagate.inject(headers)
        pending = _Pending(
            plan, result, [(k, v.encode()) for k, v in headers.items()], released_as or plan.request_id
        )
        self._pending.append(pending)
        self._wake.set()
        try:
            with self._progress.watching(f"result of answers partition {self.partition}"):
                return await pending.done
        except asyncio.CancelledError:
            if pending in self._pending:  # not under way: it will never be sent
                self._pending.remove(pending)
            raise

    def _refuse(self, batch: list[_Pending]) -> None:
        for item in batch:
            if not item.done.done():
                item.done.set_result(False)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._ready.wait()
            if self._unsettled:
                async with self._lock:
                    settled = await self._settle()
                if not settled:
                    await asyncio.sleep(RETRY_S)
                continue
            if not self._pending:
                self._wake.clear()
                continue
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            began = time.time()
            async with self._lock:
                outcome = await self._commit(batch)
            if outcome == "committed":
                self._done(batch)
            elif outcome == "fenced":
                self._give_up(batch)
            elif outcome == "unknown":
                self._unsettled, self._unsettled_since = batch, began
            else:
                self._pending = batch + self._pending
                await asyncio.sleep(RETRY_S)

    def _done(self, batch: list[_Pending]) -> None:
        for item in batch:
            if not item.done.done():
                item.done.set_result(True)
        self._committed(self.partition, {item.released_as for item in batch})

    def _give_up(self, batch: list[_Pending]) -> None:
        """Another judge holds the partition's id now; until the group gives the partition back
        (`open`), nothing of it may be published from here."""
        log.warning("results refused: another judge holds the partition", partition=self.partition)
        self._ready.clear()
        self._refuse(batch + self._unsettled + self._pending)
        self._unsettled, self._pending = [], []

    async def _settle(self) -> bool:
        """After a transaction whose outcome is unknown: a producer that holds the id for sure
        settles it, then the partition's markers say which of its results went out; the others go
        out again. False: not yet (the broker away, say), try again."""
        try:
            outcome = await self._producer.settle()
            if outcome.kind == "fenced":
                self._give_up([])
                return True
            if outcome.kind != "committed":
                return False
            since = self._unsettled_since - self._settings.judge_markers_margin_s
            async with asyncio.timeout(SETTLE_READ_TIMEOUT_S):
                released = await released_since(self._settings, self.partition, since)
        except (KafkaError, TimeoutError) as error:
            log.warning("transaction not settled yet", partition=self.partition, error=repr(error))
            return False
        out = [item for item in self._unsettled if item.released_as in released]
        again = [item for item in self._unsettled if item.released_as not in released]
        self._unsettled = []
        if out:
            self._done(out)
        self._pending = again + self._pending
        log.info("transaction settled", partition=self.partition, published=len(out), again=len(again))
        return True

    async def _commit(self, batch: list[_Pending]) -> Literal["committed", "fenced", "retry", "unknown"]:
        """One transaction for the batch. A result whose destination refuses it (too large for that
        topic, say) goes to fusion.results instead, and the transaction is tried again at once."""
        while True:
            messages = [await self._messages(item) for item in batch]
            outcome = await self._producer.commit([m for item_messages in messages for m in item_messages])
            if outcome.kind != "refused":
                return outcome.kind
            rerouted = False
            first = 0
            for item, item_messages in zip(batch, messages, strict=True):
                for index in range(first, first + len(item_messages)):
                    if index in outcome.refused and item.reroute is None:
                        item.reroute = outcome.refused[index]
                        rerouted = True
                first += len(item_messages)
            if not rerouted:  # fusion.results or the markers refuse it: nothing better to send
                return "retry"

    async def _messages(self, item: _Pending) -> list[Outgoing]:
        """The result, to where its request asked, and the marker that its request is released."""
        place = await self._destinations.of(item.plan.reply_to)
        if item.reroute is not None and place.refused is None:
            place = Destination(topics.RESULTS, None, f"the reply_to topic refused it: {item.reroute}")
        key = topics.request_key(item.plan.request_id)
        with publish_span(place.topic, self._traced, parent=item.headers) as headers:
            result = Outgoing(place.topic, encode(item.result), key, place.partition, tuple(headers))
        marker = Outgoing(topics.RELEASED, b"", item.released_as.encode(), self.partition)
        if place.refused is None:
            return [result, marker]
        # The request named a destination that cannot take it: its result went to fusion.results,
        # and the dead-letter topic says why, for whoever watches it.
        letter = undeliverable(item.plan.reply_to, key, result.value, place.refused)
        return [result, marker, Outgoing(topics.DLQ, encode(letter), key)]


class TransactionalResults:
    """Every owned answers partition's `PartitionOutput`, opened and closed with the assignment."""

    def __init__(self, settings: Settings, ledger: Ledger, progress: Progress) -> None:
        self._settings = settings
        self._progress = progress
        self._ledger = ledger
        self._outputs: dict[int, PartitionOutput] = {}
        self._commits = BackgroundCommits()
        self.consumer: AIOKafkaConsumer | None = None

    async def stop(self) -> None:
        await self._commits.flush()
        for output in list(self._outputs.values()):
            await output.close()
        self._outputs.clear()

    def owns(self, partition: int) -> bool:
        output = self._outputs.get(partition)
        return output is not None and not output.fenced

    async def hold(self, partitions: set[int]) -> None:
        await asyncio.gather(*(self._outputs[p].hold() for p in partitions if p in self._outputs))

    async def assigned(self, partitions: set[int]) -> None:
        """The group's new assignment: outputs of partitions lost are closed, those of partitions
        held are opened anew (their producers fence any earlier holder) and wait for `resume`."""
        for partition in set(self._outputs) - partitions:
            await self._outputs.pop(partition).close()
        for partition in partitions:
            if partition not in self._outputs:
                self._outputs[partition] = self._output(partition)
        await asyncio.gather(*(self._outputs[p].open() for p in partitions))

    async def ensure_open(self, partitions: set[int]) -> None:
        """Opens the outputs of assigned `partitions` that a failed rebalance step left without a
        producer (never one that was fenced: only the next assignment may reopen that)."""
        for partition in partitions:
            if partition not in self._outputs:
                self._outputs[partition] = self._output(partition)
        unopened = [o for p in partitions if (o := self._outputs[p]).unopened]
        await asyncio.gather(*(output.open(unless_open=True) for output in unopened))

    def resume(self, partitions: set[int]) -> None:
        for partition in partitions:
            if output := self._outputs.get(partition):
                output.resume()

    async def publish(
        self, plan: PanelPlan | PanelRejection, result: FusedResult, released_as: str | None = None
    ) -> bool:
        """Waits until the result is committed; False when its partition moved to another judge."""
        partition = self._ledger.partition_of(released_as or plan.request_id)
        output = self._outputs.get(partition) if partition is not None else None
        if output is None or output.fenced:
            return False
        return await output.publish(plan, result, released_as)

    def _output(self, partition: int) -> PartitionOutput:
        return PartitionOutput(self._settings, partition, self._published, self._progress)

    def _published(self, partition: int, request_ids: set[str]) -> None:
        for request_id in request_ids:  # before the commit is worked out: they are open no more
            self._ledger.close(request_id)
        self.commit_soon(partition)

    def commit_soon(self, partition: int) -> None:
        """Past every request released so far on the partition (and whatever else it read that
        holds nothing open, such as dead letters), while it is still assigned."""
        consumer = self.consumer
        if consumer is None:
            return
        tp = TopicPartition(topics.ANSWERS, partition)
        if tp not in consumer.assignment():
            return
        offsets = self._ledger.committable({partition})
        if partition in offsets:
            self._commits.due(consumer, {tp: offsets[partition]})


class ReleasedMarkers:
    """Loads a partition's released markers before the judge reads its first message from it: those
    of requests released since the oldest message it will read again, whatever the history's size."""

    def __init__(
        self,
        settings: Settings,
        adopt: "Callable[[dict[int, set[str]]], None]",
        fusing_since: "Callable[[int], datetime | None]" = lambda _partition: None,
    ) -> None:
        self._settings = settings
        self._adopt = adopt
        self._fusing_since = fusing_since
        self._loaded: set[int] = set()
        self._lock = asyncio.Lock()

    def loaded(self, partitions: set[int]) -> bool:
        return partitions <= self._loaded

    async def ensure(self, consumer: AIOKafkaConsumer, partitions: set[int]) -> None:
        """Loads the markers of those of `partitions` not loaded yet, all with one reader."""
        if partitions <= self._loaded:
            return
        async with self._lock:
            missing = partitions - self._loaded
            if not missing:
                return
            committed = {
                p: await consumer.committed(TopicPartition(topics.ANSWERS, p)) for p in sorted(missing)
            }
            kept = {p: at for p in missing if (at := self._fusing_since(p)) is not None}
            released = await released_requests(
                self._settings, committed, self._settings.judge_markers_margin_s, kept
            )
            self._adopt(released)
            self._loaded |= missing
            log.info(
                "answers partitions taken over",
                partitions=sorted(missing),
                already_released=sum(len(ids) for ids in released.values()),
            )

    def forget(self, partitions: set[int]) -> None:
        self._loaded -= partitions


async def released_requests(
    settings: Settings,
    committed: dict[int, int | None],
    margin_s: float,
    fusing_since: dict[int, datetime] | None = None,
) -> dict[int, set[str]]:
    """Per answers partition, the ids of requests already released among those whose messages lie
    past its committed offset (`None`: nothing committed, so every marker counts). Markers are read
    from `margin_s` before the oldest answer to be read again: the markers' and the answers'
    timestamps come from different clocks (the brokers', with LogAppendTime)."""
    if not committed:
        return {}
    consumer = _markers_reader(settings)
    await consumer.start()
    try:
        starts = await _marker_starts(consumer, committed, int(margin_s * 1000), fusing_since or {})
        return await _read_markers(consumer, starts)
    finally:
        await stop_consumer(consumer)


async def _marker_starts(
    consumer: AIOKafkaConsumer,
    committed: dict[int, int | None],
    margin_ms: int,
    fusing_since: dict[int, datetime],
) -> dict[int, int]:
    """Where to read each partition's markers from: markers older than the first answer to be read
    again cannot name a request that will be read again."""
    answers = [TopicPartition(topics.ANSWERS, p) for p in committed]
    answer_ends = await consumer.end_offsets(answers)
    oldest_ms: dict[int, int] = {}
    for tp in answers:
        offset = committed[tp.partition]
        if offset is None:
            oldest_ms[tp.partition] = 0
        elif offset < answer_ends[tp]:
            oldest_ms[tp.partition] = await _timestamp_at(consumer, tp, offset)
        if (since := fusing_since.get(tp.partition)) is not None:
            # a fusion kept across the rebalance: another judge may have released it since, even
            # with nothing left to read again on the partition
            since_ms = int(since.timestamp() * 1000)
            oldest_ms[tp.partition] = min(oldest_ms.get(tp.partition, since_ms), since_ms)
    markers = {p: TopicPartition(topics.RELEASED, p) for p in oldest_ms}
    if not markers:
        return {}
    found = await consumer.offsets_for_times(
        {tp: max(oldest_ms[p] - margin_ms, 0) for p, tp in markers.items()}
    )
    return {p: stamp.offset for p, tp in markers.items() if (stamp := found.get(tp)) is not None}


async def _timestamp_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> int:
    consumer.assign([tp])
    consumer.seek(tp, offset)
    records = await consumer.getmany(tp, timeout_ms=5_000, max_records=1)
    first = next(iter(records.get(tp, [])), None)
    return first.timestamp if first is not None else 0


async def _read_markers(consumer: AIOKafkaConsumer, starts: dict[int, int]) -> dict[int, set[str]]:
    released: dict[int, set[str]] = {p: set() for p in starts}
    if not starts:
        return released
    assigned = [TopicPartition(topics.RELEASED, p) for p in sorted(starts)]
    consumer.assign(assigned)
    for tp in assigned:
        consumer.seek(tp, starts[tp.partition])
    ends = await consumer.end_offsets(assigned)
    remaining = {tp for tp in assigned if ends[tp] > starts[tp.partition]}
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if request_id := _marker_id(record.key):
                    released[tp.partition].add(request_id)
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
    return released


def _markers_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of no group that sees committed markers only."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **client_options(settings),
    )


async def released_since(settings: Settings, partition: int, since_s: float) -> set[str]:
    """The ids of the markers on `partition` written since `since_s` (seconds since the epoch, by
    the brokers' clocks), as committed."""
    consumer = _markers_reader(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topics.RELEASED, partition)
        found = await consumer.offsets_for_times({tp: max(int(since_s * 1000), 0)})
        stamp = found.get(tp)
        if stamp is None:  # nothing written since
            return set()
        return (await _read_markers(consumer, {partition: stamp.offset}))[partition]
    finally:
        await stop_consumer(consumer)


def _marker_id(key: bytes | None) -> str | None:
    """A marker's request id; None for a key that no judge wrote (it names no request)."""
    if not key or len(key) > limits.MAX_ID_CHARS + 33:  # an id, or a duplicate's `id#digest`
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None
