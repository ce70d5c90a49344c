"""The judge service: gathers `fusion.answers` by request id, releases, fuses, publishes the result."""

import asyncio
import contextlib
from datetime import timedelta
from typing import Any, Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from fusion_contracts import (
    AnswerChunk,
    AnswersMessage,
    FusedResult,
    PanelAnswer,
    PanelPlan,
    ReleaseReason,
    topics,
)
from fusion_contracts.common import utc_now
from pydantic import TypeAdapter

from fusion.catalog import Catalog
from fusion.clock import seconds_until
from fusion.judge.fusing import Judge, crashed_result
from fusion.judge.gathering import Gathering, Gatherings
from fusion.judge.ledger import Ledger
from fusion.judge.output import GROUP, OwnedPartitions, ReleasedMarkers, TransactionalResults
from fusion.judge.streaming import ChunkPublisher
from fusion.kafka.batches import BatchSubscription, Fetched, each_record
from fusion.kafka.broker import Outbox, build_broker
from fusion.kafka.dead_letters import Inbox, Invalid
from fusion.models import CompletesChat, ModelRouter
from fusion.observability.metrics import FusionMetrics
from fusion.runtime import service_app
from fusion.settings import Settings

log = structlog.get_logger(__name__)

_ANSWERS: TypeAdapter[PanelPlan | PanelAnswer] = TypeAdapter(AnswersMessage)


class ResultSink(Protocol):
    async def publish(self, plan: PanelPlan, result: FusedResult) -> bool:
        """Publishes the result; False when the request's partition moved to another judge."""
        ...


class OutboxSink:
    """Publishes results without a transaction: for FastStream's in-memory test broker."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def publish(self, plan: PanelPlan, result: FusedResult) -> bool:
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
    ) -> None:
        self._judge = Judge(models)
        self._sink = sink or OutboxSink(outbox)
        self.ledger = ledger or Ledger()
        self.results: TransactionalResults | None = None
        self._max_open = max_open
        self._freed = asyncio.Event()
        self._metrics = metrics or FusionMetrics()
        self._metrics.in_flight.set_function(lambda: len(self._gatherings) + len(self._fusing))
        self._outbox = outbox
        self._gatherings = Gatherings()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._fusing: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._stale_after = timedelta(seconds=stale_after_s)

    async def room(self) -> None:
        """Waits while the judge holds `max_open` requests (open or being fused): consumption pauses,
        lag grows on `fusion.answers`, memory does not. Deadlines keep releasing requests meanwhile."""
        while len(self._gatherings) + len(self._fusing) >= self._max_open:
            self._freed.clear()
            await self._freed.wait()

    async def on_message(self, message: PanelPlan | PanelAnswer, partition: int = 0, offset: int = 0) -> None:
        gathering = self._gatherings.add(message, utc_now())
        if gathering is None:
            self.ledger.record(partition, offset, None)
            log.debug("late message for a released request", request_id=message.request_id)
            return
        self.ledger.record(partition, offset, message.request_id)
        self._check(gathering)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Partitions revoked: their open requests now belong to another judge."""
        for request_id in self.ledger.forget(partitions):
            if timer := self._timers.pop(request_id, None):
                timer.cancel()
            self._gatherings.drop(request_id)
        self._freed.set()

    def adopt(self, released: set[str]) -> None:
        self._gatherings.mark_released(released)

    def _check(self, gathering: Gathering) -> None:
        reason = gathering.release_reason(utc_now())
        if reason is not None:
            self._release(gathering.request_id, reason)
            return
        wake_at = gathering.wake_at()
        if wake_at is not None:
            self._arm(gathering.request_id, seconds_until(wake_at))

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
        if timer := self._timers.pop(request_id, None):
            timer.cancel()
        gathering = self._gatherings.release(request_id)
        if gathering is None or gathering.plan is None:
            return
        task = asyncio.create_task(self._fuse(gathering, reason))
        self._fusing.add(task)
        task.add_done_callback(self._fused)

    def _fused(self, task: "asyncio.Task[None]") -> None:
        self._fusing.discard(task)
        self._freed.set()

    async def _fuse(self, gathering: Gathering, reason: ReleaseReason) -> None:
        plan = gathering.plan
        assert plan is not None
        released_at = utc_now()
        log.info(
            "request released", request_id=plan.request_id, reason=reason, answers=len(gathering.answers)
        )
        reply_to = plan.reply_to
        key = topics.request_key(plan.request_id)

        async def reply(message: FusedResult | AnswerChunk) -> None:
            await self._outbox.send(
                reply_to.topic if reply_to else topics.RESULTS,
                message,
                key,
                reply_to.partition if reply_to else None,
            )

        chunks = ChunkPublisher(plan.request_id, reply) if plan.stream else None
        self._metrics.releases.labels(reason=reason).inc()
        async with self._slots:
            try:
                result = await self._judge.fuse(
                    plan, gathering.answers, reason, released_at, chunks.push if chunks else None
                )
            except Exception as error:
                log.exception("fusion crashed", request_id=plan.request_id)
                result = crashed_result(plan, gathering.answers, reason, released_at, error)
        if chunks is not None:
            try:
                await chunks.close()
            except (
                KafkaError
            ):  # the stream is cut short; the result, which holds the whole answer, still goes
                log.exception("answer chunks lost", request_id=plan.request_id)
        if not await self._sink.publish(plan, result):
            log.info("request moved to another judge before its result was committed")
            return
        self.ledger.close(plan.request_id)
        self._record(plan, result)
        log.info(
            "result published",
            request_id=plan.request_id,
            status=result.status,
            source=result.answer_source,
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
        for request_id in self._gatherings.drop_stale(utc_now() - self._stale_after):
            self.ledger.close(request_id)
            log.warning("dropped answers whose plan never arrived", request_id=request_id)
        self._freed.set()

    async def drain(self, timeout_s: float) -> None:
        if self._fusing:
            await asyncio.wait(set(self._fusing), timeout=timeout_s)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions revoked: forget their open requests (and their markers, loaded again if they come
    back). Markers of assigned partitions are loaded before their first message is handled."""

    def __init__(self, service: JudgeService, markers: ReleasedMarkers) -> None:
        self._service = service
        self._markers = markers

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = {tp.partition for tp in revoked if tp.topic == topics.ANSWERS}
        self._markers.forget(partitions)
        self._service.drop_partitions(partitions)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # Loaded here in one go, so the first messages do not each pay for a reader of their own.
        await self._markers.ensure({tp.partition for tp in assigned if tp.topic == topics.ANSWERS})


def register(
    broker: KafkaBroker,
    models: CompletesChat,
    settings: Settings,
    metrics: FusionMetrics | None = None,
    exactly_once: bool = False,
) -> JudgeService:
    """With `exactly_once` (a real broker), results and released markers go out in transactions;
    without, results are published plainly (FastStream's in-memory test broker has no transactions)."""
    inbox = Inbox(broker, "judge")
    ledger = Ledger()
    owned = OwnedPartitions(ledger)
    sink = TransactionalResults(settings, ledger, owned) if exactly_once else None
    service = JudgeService(
        models,
        Outbox(broker),
        settings.judge_concurrency,
        settings.judge_stale_s,
        metrics=metrics or FusionMetrics(),
        sink=sink,
        ledger=ledger,
        max_open=settings.judge_max_open,
    )
    service.results = sink
    markers = ReleasedMarkers(settings, service.adopt)

    # Offsets are committed by hand after each result's transaction, only past the requests already
    # released (see `fusion.judge.output`). The handler itself never waits on a model call.
    subscriber = BatchSubscription(
        broker,
        topics.ANSWERS,
        GROUP,
        settings,
        isolation_level="read_committed",
        listener=_Rebalance(service, markers) if exactly_once else None,
    )

    @subscriber
    async def on_answers(batch: Fetched) -> None:
        if exactly_once:
            owned.consumer = batch.consumer
            await markers.ensure({record.partition for record in batch.records})
        await each_record(batch, on_answer)

    async def on_answer(record: ConsumerRecord[bytes, bytes]) -> None:
        partition, offset = record.partition, record.offset
        decoded = await inbox.decode(record, _ANSWERS)
        if isinstance(decoded, Invalid):
            service.ledger.record(partition, offset, None)
            return
        await service.room()
        with structlog.contextvars.bound_contextvars(request_id=decoded.request_id):
            await service.on_message(decoded, partition, offset)

    return service


def create_app(settings: Settings, catalog: Catalog) -> AsgiFastStream:
    metrics = FusionMetrics()
    broker = build_broker(settings, "fusion-judge", metrics)
    models = ModelRouter(catalog)
    service = register(broker, models, settings, metrics, exactly_once=True)
    sweeper: list[asyncio.Task[None]] = []

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(60)
            service.sweep()

    async def start() -> None:
        if service.results is not None:
            await service.results.start()
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

    return service_app(broker, metrics, on_startup=[start], on_shutdown=[stop])
