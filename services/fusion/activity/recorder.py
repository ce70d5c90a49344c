"""`fusion serve activity`: records every request and every result in the activity database.

It reads `fusion.requests` (what was asked, how, with which key), and the results wherever they went:
`fusion.results` and every gateway's reply topic (`fusion.replies.*`, found as gateways create them).
Each record is written before its offset is committed, and writing is idempotent (`ActivityStore`),
so a record read twice (a restart, a rebalance) is recorded once. While the database is unreachable
the records are read again, never skipped; one the database refuses for good (a value it cannot
store) goes to the dead-letter topic with the reason. Old requests are purged by
`activity_retention_days`."""

import asyncio
import contextlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeAlias

import structlog
from aiokafka import ConsumerRecord
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from fusion_contracts import AnswerChunk, FusedResult, FusionProgress, FusionRequest, GatewayPresence, topics
from pydantic import Discriminator, TypeAdapter
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from fusion.activity.store import ActivityStore
from fusion.catalog import Catalog
from fusion.kafka.batches import BatchSubscription, Fetched, each_record
from fusion.kafka.broker import build_broker
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.dead_letters import Inbox
from fusion.liveness import Progress
from fusion.observability.metrics import FusionMetrics
from fusion.runtime import service_app
from fusion.settings import Settings

log = structlog.get_logger(__name__)

REPLY_TOPICS = "^" + re.escape(topics.REPLIES_PREFIX) + ".*"
DISCOVER_MS = 5_000
"""How soon a new reply topic is read: the consumers' metadata refresh (aiokafka's default: 5 min)."""
RETRY_S = 2.0
PURGE_EVERY_S = 3_600.0

_REQUEST: TypeAdapter[FusionRequest] = TypeAdapter(FusionRequest)
_OUTCOME: TypeAdapter[FusedResult | AnswerChunk | FusionProgress | GatewayPresence] = TypeAdapter(
    Annotated[FusedResult | AnswerChunk | FusionProgress | GatewayPresence, Discriminator("kind")]
)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class DatabaseAway(RuntimeError):
    """The database did not answer: the record is read again later."""


class Recorder:
    def __init__(self, store: ActivityStore, settings: Settings) -> None:
        self.store = store
        self.progress = Progress(settings.stuck_after_s)
        self.recorded = 0
        self.skipped = 0
        self._retention_days = settings.activity_retention_days

    async def on_request(self, record: Record) -> None:
        try:
            request = decode(_REQUEST, record.value)
        except DecodeError:
            self.skipped += 1  # the dispatcher dead-letters it, and answers it when it can
            return
        await self._write(self.store.record_request, request)

    async def on_result(self, record: Record) -> None:
        try:
            message = decode(_OUTCOME, record.value)
        except DecodeError as error:
            self.skipped += 1
            log.warning("unreadable result skipped", topic=record.topic, error=str(error)[:300])
            return
        if isinstance(message, FusedResult):
            await self._write(self.store.record_result, message, record.topic)

    async def _write(self, write: Callable[..., bool], *args: Any) -> None:
        try:
            if await asyncio.to_thread(write, *args):
                self.recorded += 1
        except OperationalError as error:
            raise DatabaseAway(str(error.orig)[:300]) from error

    async def handle(self, batch: Fetched, on_record: Callable[[Record], Any], inbox: Inbox) -> None:
        """Every record of the batch written, then its offsets committed; from the first one the
        database could not take (unreachable), the batch is read again after a pause."""

        async def give_up(record: Record, reason: str) -> None:
            if not await asyncio.to_thread(self.store.reachable):
                raise DatabaseAway(reason)
            await inbox.dead_letter(record, f"the activity database refused it: {reason}")

        with self.progress.watching("recording activity"):
            left = await each_record(batch, on_record, give_up)
            if batch.consumer is not None and batch.records[: len(batch.records) - len(left)]:
                await batch.consumer.commit()
        if left:
            log.warning("activity database unreachable; reading again", records=len(left))
            await asyncio.sleep(RETRY_S)

    async def purge(self) -> None:
        if self._retention_days <= 0:
            return
        before = datetime.now(UTC) - timedelta(days=self._retention_days)
        try:
            gone = await asyncio.to_thread(self.store.purge, before)
        except SQLAlchemyError as error:
            log.warning("activity not purged", error=type(error).__name__)
            return
        if gone:
            log.info("activity purged", requests=gone, before=before.isoformat())


def register(broker: KafkaBroker, recorder: Recorder, settings: Settings) -> None:
    inbox = Inbox(broker, "activity")
    subscriptions: list[tuple[BatchSubscription, Callable[[Record], Any]]] = [
        (
            BatchSubscription(broker, topics.REQUESTS, "fusion-activity-requests", settings),
            recorder.on_request,
        ),
        (BatchSubscription(broker, topics.RESULTS, "fusion-activity-results", settings), recorder.on_result),
        (
            BatchSubscription(broker, None, "fusion-activity-replies", settings, pattern=REPLY_TOPICS),
            recorder.on_result,
        ),
    ]
    for subscription, on_record in subscriptions:

        def handler(on_record: Callable[[Record], Any]) -> Callable[[Fetched], Any]:
            async def on_batch(batch: Fetched) -> None:
                await recorder.handle(batch, on_record, inbox)

            return on_batch

        subscription(handler(on_record))


def create_app(settings: Settings, _catalog: Catalog) -> AsgiFastStream:
    metrics = FusionMetrics()
    store = ActivityStore(settings.activity_database_url())
    broker = build_broker(settings, "fusion-activity", metrics, metadata_max_age_ms=DISCOVER_MS)
    recorder = Recorder(store, settings)
    register(broker, recorder, settings)
    purging: list[asyncio.Task[None]] = []

    async def start() -> None:
        await asyncio.to_thread(store.migrate)
        purging.append(asyncio.create_task(_keep_purging(recorder), name="activity purge"))
        log.info("activity recorder ready", database=store.engine.url.render_as_string(hide_password=True))

    async def stop() -> None:
        for task in purging:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        store.close()

    return service_app(broker, metrics, recorder.progress, on_startup=[start], on_shutdown=[stop])


async def _keep_purging(recorder: Recorder) -> None:
    while True:
        await recorder.purge()
        await asyncio.sleep(PURGE_EVERY_S)
