"""The judge service: gathers `fusion.answers` by request id, releases, fuses, publishes the result."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from fusion_contracts import (
    Analysis,
    AnswerChunk,
    AnswersMessage,
    FusedResult,
    FusionProgress,
    PanelAnswer,
    PanelPlan,
    PanelRejection,
    ReleaseReason,
    limits,
    topics,
)
from pydantic import TypeAdapter

from fusion.catalog import Catalog
from fusion.clock import seconds_until, utc_now
from fusion.dispatcher.planning import rejected_result
from fusion.judge import progress
from fusion.judge.fusing import Judge, Stages, crashed_result
from fusion.judge.gathering import LATE_ANSWERS_S, Gathering, Gatherings
from fusion.judge.ledger import Ledger
from fusion.judge.output import GROUP, ReleasedMarkers, TransactionalResults
from fusion.judge.progress import ProgressSender
from fusion.judge.streaming import ChunkPublisher
from fusion.kafka.assignment import AssignmentListener
from fusion.kafka.batches import BatchSubscription, Fetched, each_record, rewind
from fusion.kafka.broker import Outbox, OwnProducer, build_broker
from fusion.kafka.dead_letters import Inbox, Invalid
from fusion.liveness import Progress
from fusion.models import CompletesChat, ModelRouter
from fusion.observability.metrics import FusionMetrics
from fusion.runtime import service_app
from fusion.settings import Settings

log = structlog.get_logger(__name__)

_ANSWERS: TypeAdapter[PanelPlan | PanelAnswer | PanelRejection] = TypeAdapter(AnswersMessage)

PREPARE_RETRY_S = 1.0


class ResultSink(Protocol):
    async def publish(
        self, plan: PanelPlan | PanelRejection, result: FusedResult, released_as: str | None = None
    ) -> bool:
        """Publishes the result, and marks `released_as` (the request id) released; False when the
        request's partition moved to another judge."""
        ...


class OutboxSink:
    """Publishes results without a transaction: for FastStream's in-memory test broker."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def publish(
        self, plan: PanelPlan | PanelRejection, result: FusedResult, released_as: str | None = None
    ) -> bool:
        reply_to = plan.reply_to
        await self._outbox.send(
            reply_to.topic if reply_to else topics.RESULTS,
            result,
            topics.request_key(plan.request_id),
            reply_to.partition if reply_to else None,
        )
        return True


class JudgeService:
    """Holds open requests in memory, rebuilt from `fusion.answers` after a crash or a rebalance (its
    offsets are committed only past released requests); a timer per request wakes it at its next
    release instant."""

    def __init__(
        self,
        models: CompletesChat,
        outbox: Outbox,
        concurrency: int,
        stale_after_s: float,
        *,
        metrics: FusionMetrics | None = None,
        sink: ResultSink | None = None,
        ledger: Ledger | None = None,
        max_open: int = 10_000,
        progress: Progress | None = None,
    ) -> None:
        self._judge = Judge(models)
        self._sink = sink or OutboxSink(outbox)
        self.ledger = ledger or Ledger()
        self.results: TransactionalResults | None = None
        self.progress = progress or Progress()
        """What `/health` watches: results waiting for their transaction."""
        self._max_open = max_open
        self._freed = asyncio.Event()
        self._metrics = metrics or FusionMetrics()
        self._metrics.in_flight.set_function(lambda: len(self._gatherings) + len(self._fusing))
        self._outbox = outbox
        self._gatherings = Gatherings()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._fusing: dict[str, asyncio.Task[None]] = {}
        self._released_at: dict[str, datetime] = {}
        self._revoked: set[int] = set()
        self._overdue: dict[str, int | None] = {}
        self._read_up_to: dict[int, int] = {}
        self.end_of: Callable[[int], int | None] = lambda _partition: None
        """The offset a partition's messages end at, as last fetched (None: unknown, or nothing to
        wait for, as on the in-memory broker)."""
        self._slots = asyncio.Semaphore(concurrency)
        self._stale_after = timedelta(seconds=stale_after_s)
        self._progress: dict[str, ProgressSender] = {}
        """Requests that asked for progress events, each with its sender, until its result goes."""

    @property
    def full(self) -> bool:
        """Requests held that will be released (planned or being fused) at `max_open`; answers
        waiting for a plan that never comes do not hold the judge up."""
        return self._gatherings.planned + len(self._fusing) >= self._max_open

    async def room(self) -> None:
        """Waits while the judge holds `max_open` requests (open or being fused): consumption pauses,
        lag grows on `fusion.answers`, memory does not. Deadlines keep releasing requests meanwhile."""
        while self.full:
            self._freed.clear()
            await self._freed.wait()

    async def on_message(
        self, message: PanelPlan | PanelAnswer | PanelRejection, partition: int = 0, offset: int = 0
    ) -> None:
        self._read_up_to[partition] = max(offset + 1, self._read_up_to.get(partition, 0))
        if isinstance(message, PanelRejection):
            self._on_rejection(message, partition, offset)
            return
        seen = self._gatherings.add(message, utc_now())
        if seen == "duplicate" and isinstance(message, PanelPlan) and message.request_digest:
            self._on_duplicate(message, partition, offset)
            return
        if isinstance(seen, str) and seen in {"foreign", "duplicate"}:
            self.ledger.record(partition, offset, None)
            log.warning("answer of another request with the same id ignored", request_id=message.request_id)
            return
        if seen == "done":
            self.ledger.record(partition, offset, None)
            log.debug("late message for a released request", request_id=message.request_id)
            return
        self.ledger.record(partition, offset, message.request_id)
        if isinstance(seen, Gathering):  # not "fusing": read again after a rebalance, it runs on
            self._tell_progress(seen, message)
            self._check(seen)

    def _tell_progress(self, gathering: Gathering, message: PanelPlan | PanelAnswer) -> None:
        """The progress events a message makes, for a request that asked for them: every member
        when the plan comes (and the answers that came before it), then each answer as it comes."""
        plan = gathering.plan
        if plan is None or not plan.progress:
            return
        if isinstance(message, PanelPlan):
            answers = [gathering.answers[i] for i in sorted(gathering.answers) if i < len(plan.members)]
            events = [*progress.members_added(plan), *(progress.member_answered(plan, a) for a in answers)]
        elif gathering.answers.get(message.member_index) is message and message.member_index < len(
            plan.members
        ):
            events = [progress.member_answered(plan, message)]
        else:
            return  # a repeat of an answer told already
        self._progress_sender(plan).tell(*events)

    def _progress_sender(self, plan: PanelPlan) -> ProgressSender:
        sender = self._progress.get(plan.request_id)
        if sender is None:
            sender = self._progress[plan.request_id] = ProgressSender(self._replier(plan))
        return sender

    def _replier(
        self, plan: PanelPlan
    ) -> Callable[[FusedResult | AnswerChunk | FusionProgress], Awaitable[None]]:
        """Sends a message where the request's result goes: its `reply_to`, or `fusion.results`."""
        reply_to = plan.reply_to
        key = topics.request_key(plan.request_id)

        async def reply(message: FusedResult | AnswerChunk | FusionProgress) -> None:
            await self._outbox.send(
                reply_to.topic if reply_to else topics.RESULTS,
                message,
                key,
                reply_to.partition if reply_to else None,
            )

        return reply

    def _on_rejection(self, rejection: PanelRejection, partition: int, offset: int) -> None:
        """The dispatcher refused the request: its `rejected` result goes out like any result, once,
        unless the request is known already (dispatched before, then redelivered: its plan wins)."""
        request_id = rejection.request_id
        gathering = self._gatherings.get(request_id)
        known = self._gatherings.is_fusing(request_id) or (gathering is not None and gathering.plan)
        if known or self._gatherings.add_rejection(request_id) is None:
            self.ledger.record(partition, offset, None)
            return
        self.ledger.record(partition, offset, request_id)
        task = asyncio.create_task(self._reject(rejection))
        self._fusing[request_id] = task
        task.add_done_callback(lambda _: self._fused(request_id, task))

    def _on_duplicate(self, plan: PanelPlan, partition: int, offset: int) -> None:
        """Another request with the id of one planned before: it is rejected, once, under a name of
        its own (`duplicate_key`), and the first request goes on unaffected."""
        assert plan.request_digest is not None
        name = self._gatherings.add_duplicate(plan.request_id, plan.request_digest)
        if name is None:
            self.ledger.record(partition, offset, None)
            return
        self.ledger.record(partition, offset, name)
        log.warning("duplicate request id", request_id=plan.request_id, digest=plan.request_digest)
        task = asyncio.create_task(self._reject_duplicate(plan, name))
        self._fusing[name] = task
        task.add_done_callback(lambda _: self._fused(name, task))

    async def _reject_duplicate(self, plan: PanelPlan, name: str) -> None:
        error = (
            f"duplicate request id {plan.request_id!r}: another request with this id came first; "
            "each request needs an id of its own"
        )
        result = rejected_result(plan.request_id, plan.submitted_at, error, utc_now())
        result = result.model_copy(update={"request_digest": plan.request_digest})
        published = await self._sink.publish(plan, result, released_as=name)
        if published:
            self._gatherings.published(name, _forget_after(plan.deadline_at))
            self._metrics.requests.labels(status="rejected").inc()
        else:
            self._gatherings.abandon(name)
        self.ledger.close(name)

    async def _reject(self, rejection: PanelRejection) -> None:
        result = rejected_result(
            rejection.request_id, rejection.submitted_at, rejection.error, utc_now(), rejection.failure_reason
        )
        result = result.model_copy(update={"request_digest": rejection.request_digest})
        if not await self._sink.publish(rejection, result):
            self._gatherings.abandon(rejection.request_id)
            self.ledger.close(rejection.request_id)
            return
        self._gatherings.published(rejection.request_id, _forget_after(utc_now()))
        self.ledger.close(rejection.request_id)
        self._metrics.requests.labels(status="rejected").inc()
        log.info("rejection published", request_id=rejection.request_id, error=rejection.error)

    async def revoked(self, partitions: set[int]) -> None:
        """A rebalance began: no result of these partitions is published until the new assignment
        is known. Requests still gathering are forgotten (read again from the last commit if the
        partitions come back); fusions under way run on, for the partitions may come back."""
        if partitions:
            log.info("answers partitions revoked", partitions=sorted(partitions))
        if self.results is not None:
            await self.results.hold(partitions)
        fusing = {r for r in self.ledger.requests_on(partitions) if self._gatherings.is_fusing(r)}
        for request_id in self.ledger.requests_on(partitions) - fusing:
            self._forget(request_id)
        self.ledger.resync(partitions, keep=fusing)
        for partition in partitions:
            self._read_up_to.pop(partition, None)
        self._revoked |= partitions
        self._freed.set()

    async def assigned(self, partitions: set[int]) -> None:
        """The new assignment: fusions of partitions gone to another judge stop (it fuses them
        again); those of partitions kept wait for the markers (`adopt`) before publishing."""
        lost = self._revoked - partitions
        self._revoked.clear()
        for request_id in self.ledger.requests_on(lost):
            self._forget(request_id)
        self.ledger.forget(lost)
        if self.results is not None:
            await self.results.assigned(partitions)

    def _forget(self, request_id: str) -> None:
        self._overdue.pop(request_id, None)
        if timer := self._timers.pop(request_id, None):
            timer.cancel()
        if task := self._fusing.get(request_id):
            task.cancel()
        self._gatherings.abandon(request_id)
        self._progress.pop(request_id, None)

    def adopt(self, released: dict[int, set[str]]) -> None:
        """Markers of requests some judge released: their fusions here stop, their messages are
        ignored."""
        forget_after = utc_now() + timedelta(seconds=limits.MAX_DEADLINE_S + LATE_ANSWERS_S)
        for ids in released.values():
            for request_id in self._gatherings.mark_released(ids, forget_after):
                if task := self._fusing.get(request_id):
                    task.cancel()
                self.ledger.close(request_id)
            for request_id in ids:
                if timer := self._timers.pop(request_id, None):
                    timer.cancel()

    def _check(self, gathering: Gathering) -> None:
        reason = gathering.release_reason(utc_now())
        if reason == "deadline" and not self._read_up_to_end(gathering.request_id):
            return  # its answers may be right behind it: released once they are read
        if reason is not None:
            self._release(gathering.request_id, reason)
            return
        wake_at = gathering.wake_at()
        if wake_at is not None:
            self._arm(gathering.request_id, seconds_until(wake_at))

    def _read_up_to_end(self, request_id: str) -> bool:
        """Whether everything its partition held when the request's deadline found it has been read
        (after a failover, a plan past its deadline comes before the answers already written)."""
        partition = self.ledger.partition_of(request_id)
        if partition is None or self.full:  # full, it reads no further: deadlines must free room
            self._overdue.pop(request_id, None)
            return True
        target = self._overdue.setdefault(request_id, self.end_of(partition))
        if target is None or self._read_up_to.get(partition, 0) >= target:
            self._overdue.pop(request_id, None)
            return True
        return False

    def release_overdue(self) -> None:
        """Releases the requests past their deadline whose partition has now been read far enough."""
        for request_id in list(self._overdue):
            if gathering := self._gatherings.get(request_id):
                self._check(gathering)
            else:
                self._overdue.pop(request_id, None)

    def _arm(self, request_id: str, delay_s: float) -> None:
        if timer := self._timers.pop(request_id, None):
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[request_id] = loop.call_later(max(delay_s, 0.0), self._on_timer, request_id)

    def _on_timer(self, request_id: str) -> None:
        self._timers.pop(request_id, None)
        if gathering := self._gatherings.get(request_id):
            self._check(gathering)

    def _release(self, request_id: str, reason: ReleaseReason) -> None:
        self._overdue.pop(request_id, None)
        if timer := self._timers.pop(request_id, None):
            timer.cancel()
        gathering = self._gatherings.release(request_id)
        if gathering is None or gathering.plan is None:
            return
        task = asyncio.create_task(self._fuse(gathering, reason))
        self._fusing[request_id] = task
        self._released_at[request_id] = utc_now()
        task.add_done_callback(lambda _: self._fused(request_id, task))

    def fusing_since(self, partition: int) -> datetime | None:
        """When the oldest fusion of `partition` still under way here was released: one kept across
        a rebalance may have been released again, and published, by another judge since."""
        instants = [
            at
            for request_id, at in self._released_at.items()
            if self.ledger.partition_of(request_id) == partition
        ]
        return min(instants, default=None)

    def _fused(self, request_id: str, task: "asyncio.Task[None]") -> None:
        if self._fusing.get(request_id) is task:
            self._released_at.pop(request_id, None)
            del self._fusing[request_id]
        self._freed.set()

    async def _fuse(self, gathering: Gathering, reason: ReleaseReason) -> None:
        plan = gathering.plan
        assert plan is not None
        released_at = utc_now()
        log.info(
            "request released", request_id=plan.request_id, reason=reason, answers=len(gathering.answers)
        )
        chunks = ChunkPublisher(plan.request_id, self._replier(plan)) if plan.stream else None
        told = self._progress_sender(plan) if plan.progress else None
        stages = None
        if told is not None:

            async def started() -> None:
                told.tell(progress.analysing(plan))

            async def analysed(analysis: Analysis | None) -> None:
                told.tell(progress.analysed(plan, analysis))
                await told.close()  # out before the answer's first chunk

            stages = Stages(started, analysed)
        self._metrics.releases.labels(reason=reason).inc()
        async with self._slots:
            try:
                result = await self._judge.fuse(
                    plan,
                    gathering.answers,
                    reason,
                    released_at,
                    chunks.push if chunks else None,
                    stages=stages,
                )
            except Exception as error:
                log.exception("fusion crashed", request_id=plan.request_id)
                result = crashed_result(plan, gathering.answers, reason, released_at, error)
        if told is not None:
            await told.close()  # its events go ahead of the result
            self._progress.pop(plan.request_id, None)
        if chunks is not None:
            try:
                await chunks.close()
            except (
                KafkaError
            ):  # the stream is cut short; the result, which holds the whole answer, still goes
                log.exception("answer chunks lost", request_id=plan.request_id)
        if not await self._sink.publish(plan, result):
            log.info("request moved to another judge before its result was committed")
            self._gatherings.abandon(plan.request_id)
            self.ledger.close(plan.request_id)
            return
        self._gatherings.published(plan.request_id, _forget_after(plan.deadline_at))
        self.ledger.close(plan.request_id)
        self._record(plan, result)
        log.info(
            "result published",
            request_id=plan.request_id,
            status=result.status,
            source=result.answer_source,
            strategy=result.strategy,
            failure_reason=result.failure_reason,
            judge_error=result.judge.error if result.judge else None,
            total_ms=round(result.timings.total_ms),
        )

    def _record(self, plan: PanelPlan, result: FusedResult) -> None:
        self._metrics.requests.labels(status=result.status).inc()
        if result.timings.completed_at > plan.deadline_at:
            self._metrics.deadline_misses.inc()
        if judge := result.judge:
            self._metrics.model_call(
                judge.model, judge.status, judge.latency_ms / 1000, judge.usage, judge.cost_usd
            )

    def sweep(self) -> None:
        now = utc_now()
        for request_id in self._gatherings.drop_stale(now - self._stale_after):
            self.ledger.close(request_id)
            log.warning("dropped answers whose plan never arrived", request_id=request_id)
        self._gatherings.expire(now)
        self._freed.set()

    async def drain(self, timeout_s: float) -> None:
        if self._fusing:
            await asyncio.wait(set(self._fusing.values()), timeout=timeout_s)


def _forget_after(deadline_at: datetime) -> datetime:
    return max(deadline_at, utc_now()) + timedelta(seconds=LATE_ANSWERS_S)


class _Owned:
    """The consumer the judge reads with, and what must be ready before a partition's records are
    handled: its output open and its markers loaded (then its results may go out)."""

    def __init__(self, service: JudgeService, markers: ReleasedMarkers) -> None:
        self._service = service
        self._markers = markers
        self.consumer: AIOKafkaConsumer | None = None

    async def revoked(self, partitions: set[int]) -> None:
        """Results of those partitions wait until the assignment is known."""
        self._markers.forget(partitions)
        await self._service.revoked(partitions)

    async def assigned(self, partitions: set[int]) -> None:
        """Outputs reopened (fencing any earlier holder), then the markers loaded; the handler repeats
        what failed here before it reads."""
        await self._service.assigned(partitions)
        if self.consumer is not None:
            with contextlib.suppress(KafkaError):
                await self.prepare(self.consumer, partitions)

    async def prepare(self, consumer: AIOKafkaConsumer, partitions: set[int]) -> None:
        results = self._service.results
        assert results is not None
        await results.ensure_open(partitions)
        await self._markers.ensure(consumer, partitions)
        results.resume(partitions)


def register(
    broker: KafkaBroker,
    models: CompletesChat,
    settings: Settings,
    metrics: FusionMetrics | None = None,
    *,
    exactly_once: bool = False,
    producer: OwnProducer | None = None,
) -> JudgeService:
    """With `exactly_once` (a real broker), results and released markers go out in transactions;
    without, results are published plainly (FastStream's in-memory test broker has no transactions).
    `producer` publishes the streamed chunks (see `fusion.kafka.broker.Outbox`)."""
    inbox = Inbox(broker, "judge")
    ledger = Ledger()
    progress = Progress(settings.stuck_after_s)
    sink = TransactionalResults(settings, ledger, progress) if exactly_once else None
    service = JudgeService(
        models,
        Outbox(broker, producer, metrics),
        settings.judge_concurrency,
        settings.judge_stale_s,
        metrics=metrics or FusionMetrics(),
        sink=sink,
        ledger=ledger,
        max_open=settings.judge_max_open,
        progress=progress,
    )
    service.results = sink
    markers = ReleasedMarkers(settings, service.adopt, service.fusing_since)
    owned = _Owned(service, markers)

    # Offsets are committed by hand after each result's transaction, only past the requests already
    # released (see `fusion.judge.output`). The handler itself never waits on a model call.
    subscriber = BatchSubscription(
        broker,
        topics.ANSWERS,
        GROUP,
        settings,
        isolation_level="read_committed",
        listener=AssignmentListener(topics.ANSWERS, owned.revoked, owned.assigned) if exactly_once else None,
    )

    @subscriber
    async def on_answers(batch: Fetched) -> None:
        consumer = batch.consumer
        if sink is not None and consumer is not None:
            owned.consumer = sink.consumer = consumer
            service.end_of = lambda p: _end_of(consumer, p)
            partitions = {record.partition for record in batch.records}
            try:
                await owned.prepare(consumer, partitions)
            except KafkaError as error:
                # Nothing of these partitions is handled before their markers are in: read again.
                log.warning("answers partitions not ready; reading again", error=repr(error))
                rewind(consumer, batch.records)
                await asyncio.sleep(PREPARE_RETRY_S)
                return
        full = (lambda: service.full) if consumer is not None else None
        if await each_record(batch, on_answer, give_up, stop=full) and consumer is not None:
            pause_until_room(consumer)
        service.release_overdue()
        if sink is not None:  # messages that opened nothing (dead letters, late answers) count too
            for partition in {record.partition for record in batch.records}:
                sink.commit_soon(partition)

    async def give_up(record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        await inbox.dead_letter(record, reason)
        service.ledger.record(record.partition, record.offset, None)

    resuming: list[asyncio.Task[None]] = []

    def pause_until_room(consumer: AIOKafkaConsumer) -> None:
        """Full: its partitions pause (the consumer keeps polling, so the judge stays in its group)
        until fusions finish; what was left of the batch is read again then."""
        paused = consumer.assignment()
        consumer.pause(*paused)
        if resuming and not resuming[-1].done():
            return

        async def resume() -> None:
            await service.room()
            consumer.resume(*(tp for tp in paused if tp in consumer.assignment()))

        resuming[:] = [asyncio.create_task(resume())]

    async def on_answer(record: ConsumerRecord[bytes, bytes]) -> None:
        partition, offset = record.partition, record.offset
        decoded = await inbox.decode(record, _ANSWERS)
        if isinstance(decoded, Invalid):
            service.ledger.record(partition, offset, None)
            return
        if not exactly_once:  # the in-memory broker: no consumer to pause, so wait here
            await service.room()
        with structlog.contextvars.bound_contextvars(request_id=decoded.request_id):
            await service.on_message(decoded, partition, offset)

    return service


def _end_of(consumer: AIOKafkaConsumer, partition: int) -> int | None:
    tp = TopicPartition(topics.ANSWERS, partition)
    if tp not in consumer.assignment():
        return None
    end: int | None = consumer.last_stable_offset(tp)
    return end if end is not None else consumer.highwater(tp)


def create_app(settings: Settings, catalog: Catalog) -> AsgiFastStream:
    metrics = FusionMetrics()
    broker = build_broker(settings, "fusion-judge", metrics)
    models = ModelRouter(catalog)
    producer = OwnProducer(settings, "fusion-judge")
    service = register(broker, models, settings, metrics, exactly_once=True, producer=producer)
    sweeper: list[asyncio.Task[None]] = []

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(60)
            service.sweep()

    async def start() -> None:
        await producer.start()
        sweeper.append(asyncio.create_task(sweep_forever()))

    async def stop() -> None:
        for task in sweeper:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await service.drain(timeout_s=25.0)
        if service.results is not None:
            await service.results.stop()
        await models.aclose()
        await producer.stop()

    return service_app(broker, metrics, service.progress, on_startup=[start], on_shutdown=[stop])
