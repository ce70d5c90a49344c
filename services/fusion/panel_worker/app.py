"""The panel worker service: `fusion.tasks` in, `fusion.answers` out, many model calls at once."""

from collections.abc import Callable

import structlog
from aiokafka import ConsumerRecord
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from fusion_contracts import PanelAnswer, PanelTask, topics
from pydantic import TypeAdapter

from fusion.catalog import Catalog
from fusion.clock import utc_now
from fusion.concurrency import BoundedPool
from fusion.kafka.batches import BatchSubscription, Fetched, each_record
from fusion.kafka.broker import Outbox, OwnProducer, build_broker, publish_while_broker_away
from fusion.kafka.commits import OffsetCommitter, drain_and_commit
from fusion.kafka.dead_letters import Inbox, Invalid
from fusion.liveness import Progress
from fusion.models import ModelRouter, UsesTools
from fusion.observability.metrics import FusionMetrics
from fusion.panel_worker.calls import Researcher, answer_task
from fusion.research.toolkit import Toolkit
from fusion.runtime import service_app
from fusion.settings import Settings

log = structlog.get_logger(__name__)

_TASK: TypeAdapter[PanelTask] = TypeAdapter(PanelTask)


class PanelWorker:
    def __init__(
        self,
        models: UsesTools,
        outbox: Outbox,
        concurrency: int,
        worker: str,
        metrics: FusionMetrics,
        *,
        progress: Progress | None = None,
        researcher: Researcher | None = None,
    ) -> None:
        self.progress = progress or Progress()
        self._models = models
        self._researcher = researcher
        self._outbox = outbox
        self._worker = worker
        self._metrics = metrics
        self.pool = BoundedPool(concurrency)
        self.committer = OffsetCommitter()
        metrics.in_flight.set_function(lambda: self.pool.in_flight)

    async def accept(self, task: PanelTask, done: Callable[[], None] | None = None) -> None:
        """Returns once the call has started, so one partition's tasks run side by side; `done` runs
        once the answer is published (the offset may then be committed)."""
        with structlog.contextvars.bound_contextvars(request_id=task.request_id, member=task.member_index):
            await self.pool.submit(self._run(task, done))

    async def _run(self, task: PanelTask, done: Callable[[], None] | None = None) -> None:
        try:
            answer = await answer_task(task, self._models, self._worker, self._researcher)
        except Exception as error:
            log.exception("panel call crashed", request_id=task.request_id, member=task.member_index)
            answer = _crashed(task, self._worker, error)
        self._metrics.model_call(
            answer.model, answer.status, answer.latency_ms / 1000, answer.usage, answer.cost_usd
        )
        log.info(
            "member answered",
            model=task.member.model,
            error=answer.error,
            status=answer.status,
            latency_ms=round(answer.latency_ms),
            tool_calls=answer.tool_calls or None,
            sources=len(answer.sources) or None,
        )
        await self._publish(answer)
        if done is not None:
            done()

    async def _publish(self, answer: PanelAnswer) -> None:
        """Retries while the broker is away (a restart, say): an answer is only dropped once it is
        useless, well past its request's deadline, when the judge has released without it."""
        key = topics.request_key(answer.request_id)
        await publish_while_broker_away(
            lambda: self._outbox.send(topics.ANSWERS, answer, key), "answer", self.progress
        )


def _crashed(task: PanelTask, worker: str, error: Exception) -> PanelAnswer:
    return PanelAnswer(
        request_id=task.request_id,
        request_digest=task.request_digest,
        member_index=task.member_index,
        model=task.member.model,
        status="error",
        error=f"internal error in the panel worker: {type(error).__name__}",
        latency_ms=0.0,
        finished_at=utc_now(),
        worker=worker,
    )


def register(
    broker: KafkaBroker,
    models: UsesTools,
    settings: Settings,
    metrics: FusionMetrics | None = None,
    producer: OwnProducer | None = None,
    *,
    catalog: Catalog | None = None,
) -> PanelWorker:
    """`catalog` gives the members' research tools their search backends and MCP servers; without
    it, members answer without tools."""
    metrics = metrics or FusionMetrics()
    inbox = Inbox(broker, "panel-worker")
    researcher = (
        Researcher(Toolkit(catalog, settings), settings.tool_result_chars, metrics.tool_call)
        if catalog is not None
        else None
    )
    worker = PanelWorker(
        models,
        Outbox(broker, producer, metrics),
        settings.worker_concurrency,
        settings.instance_id,
        metrics,
        progress=Progress(settings.stuck_after_s),
        researcher=researcher,
    )

    # Offsets are committed by hand, each once every earlier task of its partition is answered: a
    # worker killed mid-call leaves its tasks to another worker (the judge keeps one answer per member).
    subscriber = BatchSubscription(broker, topics.TASKS, "fusion-panel-workers", settings)

    @subscriber
    async def on_tasks(batch: Fetched) -> None:
        async def on_task(record: ConsumerRecord[bytes, bytes]) -> None:
            done = worker.committer.started(record, batch.consumer)
            task = await inbox.decode(record, _TASK)
            if isinstance(task, Invalid):
                done()
                return
            await worker.accept(task, done)

        async def give_up(record: ConsumerRecord[bytes, bytes], reason: str) -> None:
            await inbox.dead_letter(record, reason)
            worker.committer.started(record, batch.consumer)()

        await each_record(batch, on_task, give_up)

    return worker


def create_app(settings: Settings, catalog: Catalog) -> AsgiFastStream:
    metrics = FusionMetrics()
    broker = build_broker(settings, "fusion-panel-worker", metrics)
    models = ModelRouter(catalog)
    producer = OwnProducer(settings, "fusion-panel-worker")
    worker = register(broker, models, settings, metrics, producer, catalog=catalog)

    async def drain() -> None:
        await drain_and_commit(worker.pool, worker.committer, "calls")
        await models.aclose()
        await producer.stop()

    return service_app(broker, metrics, worker.progress, on_startup=[producer.start], on_shutdown=[drain])
