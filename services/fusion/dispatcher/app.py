"""The dispatcher service: `fusion.requests` in; plan to `fusion.answers`, tasks to `fusion.tasks`."""

import asyncio
import json

import structlog
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from fusion_contracts import FusedResult, FusionRequest, ReplyTo, limits, topics
from fusion_contracts.common import RequestId, utc_now
from pydantic import TypeAdapter, ValidationError

from fusion.catalog import Catalog
from fusion.dispatcher.planning import Rejection, plan_request, rejected_result
from fusion.kafka.broker import Outbox, build_broker
from fusion.kafka.dead_letters import Inbox, Invalid
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
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        request_id = _ID.validate_python(data.get("request_id"))
    except ValidationError:
        return None
    try:
        reply_to = _REPLY_TO.validate_python(data["reply_to"]) if data.get("reply_to") else None
    except ValidationError:
        reply_to = None
    return request_id, reply_to


class Dispatcher:
    def __init__(self, catalog: Catalog, outbox: Outbox, metrics: FusionMetrics) -> None:
        self._catalog = catalog
        self._outbox = outbox
        self._metrics = metrics

    async def handle(self, request: FusionRequest) -> None:
        now = utc_now()
        outcome = plan_request(request, self._catalog, now)
        key = topics.request_key(request.request_id)
        if isinstance(outcome, Rejection):
            log.info("request rejected", request_id=request.request_id, error=outcome.error)
            result = rejected_result(request.request_id, request.submitted_at, outcome.error, now)
            await self._reply(result, request.reply_to)
            self._metrics.requests.labels(status="rejected").inc()
            return
        # The plan goes first, and is acknowledged, before any task exists: so on the request's
        # answers partition the judge always reads the plan ahead of the answers.
        await self._outbox.send(topics.ANSWERS, outcome.plan, key)
        await asyncio.gather(
            *(
                self._outbox.send(topics.TASKS, task, topics.task_key(task.request_id, task.member_index))
                for task in outcome.tasks
            )
        )
        self._metrics.requests.labels(status="dispatched").inc()
        log.info("request dispatched", members=len(outcome.tasks))

    async def reject_invalid(self, raw: bytes | None, error: str) -> None:
        recovered = _recoverable(raw)
        if recovered is None:
            return
        request_id, reply_to = recovered
        self._metrics.requests.labels(status="invalid").inc()
        now = utc_now()
        await self._reply(rejected_result(request_id, now, f"invalid request: {error}", now), reply_to)

    async def _reply(self, result: FusedResult, reply_to: ReplyTo | None) -> None:
        await self._outbox.send(
            reply_to.topic if reply_to else topics.RESULTS,
            result,
            topics.request_key(result.request_id),
            reply_to.partition if reply_to else None,
        )


def register(broker: KafkaBroker, catalog: Catalog, metrics: FusionMetrics | None = None) -> Dispatcher:
    inbox = Inbox(broker, "dispatcher")
    dispatcher = Dispatcher(catalog, Outbox(broker), metrics or FusionMetrics())

    # The offset is committed only after the plan and tasks are published; a failure to publish (the
    # broker restarting, say) seeks back, so the request is dispatched again rather than lost.
    @broker.subscriber(
        topics.REQUESTS,
        group_id="fusion-dispatcher",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",  # requests that arrive before the first commit are not skipped
        session_timeout_ms=6_000,  # a dead dispatcher's partitions move after 6 s, not 10
        heartbeat_interval_ms=1_500,
        max_partition_fetch_bytes=limits.MAX_MESSAGE_BYTES,
    )
    async def on_request(message: KafkaMessage) -> None:
        request = await inbox.decode(message, _REQUEST)
        if isinstance(request, Invalid):
            await dispatcher.reject_invalid(message.raw_message.value, request.error)  # type: ignore[union-attr]
            return
        with structlog.contextvars.bound_contextvars(request_id=request.request_id):
            await dispatcher.handle(request)

    return dispatcher


def create_app(settings: Settings, catalog: Catalog) -> AsgiFastStream:
    metrics = FusionMetrics()
    broker = build_broker(settings, "fusion-dispatcher", metrics)
    register(broker, catalog, metrics)
    return service_app(broker, metrics)
