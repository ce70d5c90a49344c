"""The dispatcher service: `fusion.requests` in; plan to `fusion.answers`, tasks to `fusion.tasks`."""

import asyncio
import json
from collections.abc import Callable
from datetime import datetime

import structlog
from aiokafka import ConsumerRecord
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from fusion_contracts import FailureReason, FusionRequest, PanelRejection, ReplyTo, topics
from fusion_contracts.common import RequestId, request_digest
from pydantic import TypeAdapter, ValidationError

from fusion.catalog import Catalog
from fusion.clock import utc_now
from fusion.concurrency import BoundedPool
from fusion.dispatcher.planning import Rejection, plan_request
from fusion.kafka.batches import BatchSubscription, Fetched, each_record
from fusion.kafka.broker import Outbox, OwnProducer, build_broker, publish_while_broker_away
from fusion.kafka.commits import OffsetCommitter, drain_and_commit
from fusion.kafka.dead_letters import Inbox, Invalid
from fusion.liveness import Progress
from fusion.observability.metrics import FusionMetrics
from fusion.runtime import service_app
from fusion.settings import Settings

log = structlog.get_logger(__name__)

_REQUEST: TypeAdapter[FusionRequest] = TypeAdapter(FusionRequest)


_ID: TypeAdapter[str] = TypeAdapter(RequestId)
_REPLY_TO: TypeAdapter[ReplyTo] = TypeAdapter(ReplyTo)


def _recoverable(raw: bytes | None) -> tuple[str, ReplyTo | None] | None:
    """The request id (and where to reply) of a message that failed validation, when still usable."""
    try:
        data = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: not worth answering
        return None
    if not isinstance(data, dict):
        return None
    try:
        request_id = _ID.validate_python(data.get("request_id"))
    except ValidationError:
        return None
    try:
        reply_to = (
            _REPLY_TO.validate_python(data["reply_to"], extra="ignore") if data.get("reply_to") else None
        )
    except ValidationError:
        reply_to = None
    return request_id, reply_to


class Dispatcher:
    def __init__(
        self,
        catalog: Catalog,
        outbox: Outbox,
        metrics: FusionMetrics,
        concurrency: int = 256,
        progress: Progress | None = None,
    ) -> None:
        self.progress = progress or Progress()
        self._catalog = catalog
        self._outbox = outbox
        self._metrics = metrics
        self.pool = BoundedPool(concurrency)
        self.committer = OffsetCommitter()

    async def accept(
        self, request: FusionRequest, done: Callable[[], None] | None = None, digest: str | None = None
    ) -> None:
        """Returns once the dispatch has started; `done` runs once it is published. `digest` tells
        the request from another that shares its id (`request_digest` of its raw message)."""
        await self.pool.submit(self._dispatch(request, done, digest))

    async def _dispatch(
        self, request: FusionRequest, done: Callable[[], None] | None, digest: str | None = None
    ) -> None:
        """Retries while the broker is away (a restart, say); a request that outlives its deadline
        meanwhile is rejected as expired on the next attempt."""
        with structlog.contextvars.bound_contextvars(request_id=request.request_id):
            await publish_while_broker_away(lambda: self.handle(request, digest), "request", self.progress)
        if done is not None:
            done()

    async def handle(self, request: FusionRequest, digest: str | None = None) -> None:
        now = utc_now()
        outcome = plan_request(request, self._catalog, now, digest)
        key = topics.request_key(request.request_id)
        if isinstance(outcome, Rejection):
            log.info("request rejected", request_id=request.request_id, error=outcome.error)
            await self._reject(
                request.request_id,
                request.submitted_at,
                outcome.error,
                request.reply_to,
                digest,
                reason=outcome.reason,
            )
            self._metrics.requests.labels(status="rejected").inc()
            return
        # Plan and tasks go out together (one round trip, not two). The plan nearly always reaches
        # the answers partition ahead of the answers, which need a model call first; when a retry
        # puts it behind one, the judge holds the answer until its plan comes.
        await asyncio.gather(
            self._outbox.send(topics.ANSWERS, outcome.plan, key),
            *(
                self._outbox.send(topics.TASKS, task, topics.task_key(task.request_id, task.member_index))
                for task in outcome.tasks
            ),
        )
        self._metrics.requests.labels(status="dispatched").inc()
        log.info("request dispatched", members=len(outcome.tasks))

    async def reject_invalid(self, raw: bytes | None, error: str) -> None:
        recovered = _recoverable(raw)
        if recovered is None:
            return
        request_id, reply_to = recovered
        self._metrics.requests.labels(status="invalid").inc()
        await self._reject(
            request_id, utc_now(), f"invalid request: {error}", reply_to, request_digest(raw or b"")
        )

    async def _reject(
        self,
        request_id: str,
        submitted_at: datetime,
        error: str,
        reply_to: ReplyTo | None,
        digest: str | None = None,
        *,
        reason: FailureReason = "invalid_request",
    ) -> None:
        """The rejection goes to the judge, on the request's answers partition, and the judge
        publishes the `rejected` result: exactly once, and not at all for a request dispatched
        before (a redelivery that finds it expired)."""
        rejection = PanelRejection(
            request_id=request_id,
            request_digest=digest,
            error=error[:4_000],
            failure_reason=reason,
            submitted_at=submitted_at,
            rejected_at=utc_now(),
            reply_to=reply_to,
        )
        await self._outbox.send(topics.ANSWERS, rejection, topics.request_key(request_id))


def register(
    broker: KafkaBroker,
    catalog: Catalog,
    metrics: FusionMetrics | None = None,
    settings: Settings | None = None,
    producer: OwnProducer | None = None,
) -> Dispatcher:
    settings = settings or Settings()
    metrics = metrics or FusionMetrics()
    inbox = Inbox(broker, "dispatcher")
    dispatcher = Dispatcher(
        catalog,
        Outbox(broker, producer, metrics),
        metrics,
        settings.dispatcher_concurrency,
        Progress(settings.stuck_after_s),
    )

    # Requests are dispatched side by side in the background. An offset is committed only once every
    # request before it on its partition is dispatched (plan and tasks acknowledged), so a dispatcher
    # that dies mid-way has those requests delivered again rather than lost.
    subscriber = BatchSubscription(broker, topics.REQUESTS, "fusion-dispatcher", settings)

    @subscriber
    async def on_requests(batch: Fetched) -> None:
        async def on_request(record: ConsumerRecord[bytes, bytes]) -> None:
            done = dispatcher.committer.started(record, batch.consumer)
            request = await inbox.decode(record, _REQUEST)
            if isinstance(request, Invalid):
                await dispatcher.reject_invalid(record.value, request.error)
                done()
                return
            await dispatcher.accept(request, done, request_digest(record.value or b""))

        async def give_up(record: ConsumerRecord[bytes, bytes], reason: str) -> None:
            await inbox.dead_letter(record, reason)
            dispatcher.committer.started(record, batch.consumer)()

        await each_record(batch, on_request, give_up)

    return dispatcher


def create_app(settings: Settings, catalog: Catalog) -> AsgiFastStream:
    metrics = FusionMetrics()
    broker = build_broker(settings, "fusion-dispatcher", metrics)
    producer = OwnProducer(settings, "fusion-dispatcher")
    dispatcher = register(broker, catalog, metrics, settings, producer)

    async def drain() -> None:
        await drain_and_commit(dispatcher.pool, dispatcher.committer, "dispatches")

    return service_app(
        broker, metrics, dispatcher.progress, on_startup=[producer.start], on_shutdown=[drain, producer.stop]
    )
