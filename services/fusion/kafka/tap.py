"""Listening to a topic from its end without a consumer group, so every listener sees every message.

This is how a client (the CLI, a test, later the gateway) receives results: it taps the results topic
*before* publishing its request, and routes each result to the future waiting for that request id.
FastStream's `broker.request()` works only on its in-memory test broker, so the correlation is ours.
"""

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Generic, Self, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from fusion_contracts import (
    AnswerChunk,
    FusedResult,
    FusionProgress,
    GatewayPresence,
    PanelAnswer,
    PanelPlan,
    ReplyMessage,
    limits,
    topics,
)
from pydantic import Discriminator, TypeAdapter

from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.security import KafkaConnection, connection
from fusion.kafka.stopping import stop_consumer

T = TypeVar("T")

log = structlog.get_logger(__name__)

RETRY_S = 1.0
"""How soon a tap fetches again after a fetch failed."""
FETCH_MAX_WAIT_MS = 500


class TopicTap:
    """Calls `on_record` for every record published to `topic` after `start()` returns."""

    def __init__(self, kafka: str | KafkaConnection, topic: str, on_record: Callable[[Any], None]) -> None:
        self._kafka = connection(kafka)
        self._topic = topic
        self._on_record = on_record
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self._kafka.client_args(),
            group_id=None,
            enable_auto_commit=False,
            # A waiting fetch is answered as soon as a transaction's commit marker lands, so a
            # long wait costs no latency, and an idle reader costs the broker few requests.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            isolation_level="read_committed",  # the judge publishes results in transactions
            max_partition_fetch_bytes=limits.MAX_MESSAGE_BYTES,
        )

    async def start(self, timeout_s: float = 15.0) -> None:
        consumer = self._consumer = self._new_consumer()
        await consumer.start()
        try:
            # Without a group, subscribing assigns every partition once the metadata has arrived.
            consumer.subscribe([self._topic])
            async with asyncio.timeout(timeout_s):
                while not consumer.assignment():  # noqa: ASYNC110 - aiokafka has no event for it
                    await asyncio.sleep(0.05)
            partitions = sorted(consumer.assignment())
            await consumer.seek_to_end(*partitions)
            for partition in partitions:  # resolve the end offsets now, before the caller publishes
                await consumer.position(partition)
        except TimeoutError:
            await stop_consumer(consumer)
            raise RuntimeError(
                f"topic {self._topic} has no partitions after {timeout_s:.0f} s; run `fusion topics create`"
            ) from None
        except BaseException:
            await stop_consumer(consumer)
            raise
        self._task = asyncio.create_task(self._run(consumer), name=f"tap:{self._topic}")

    @property
    def alive(self) -> bool:
        """Whether it is still reading (started, and its loop has not ended)."""
        return self._task is not None and not self._task.done()

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        """Reads for as long as it runs: a failed fetch is tried again, and a record its callback
        cannot take is logged and skipped, so one record never stops the replies behind it."""
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except KafkaError as error:
                log.warning("tapped topic not read; retrying", topic=self._topic, error=repr(error))
                await asyncio.sleep(RETRY_S)
                continue
            for records in batches.values():
                for record in records:
                    try:
                        self._on_record(record)
                    except Exception:
                        log.exception("tapped record not handled", topic=self._topic, offset=record.offset)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await stop_consumer(self._consumer)
            self._consumer = None


class Correlator(Generic[T]):
    """Routes decoded messages of a tapped topic to the listener registered for their request id."""

    def __init__(
        self,
        kafka: str | KafkaConnection,
        topic: str,
        adapter: TypeAdapter[T],
        request_id: Callable[[T], str],
    ):
        self._adapter = adapter
        self._request_id = request_id
        self._listeners: dict[str, Callable[[T], None]] = {}
        self._tap = TopicTap(kafka, topic, self._on_record)

    async def __aenter__(self) -> Self:
        await self._tap.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tap.stop()

    @property
    def alive(self) -> bool:
        """Whether its topic is still being read."""
        return self._tap.alive

    def _on_record(self, record: Any) -> None:
        message = self._read(record)
        if message is not None:
            self._deliver(self._request_id(message), message)

    def _read(self, record: Any) -> T | None:
        try:
            return decode(self._adapter, record.value)
        except DecodeError as error:
            log.debug("undecodable message on tapped topic", topic=record.topic, error=str(error))
            return None

    def _deliver(self, request_id: str, message: T) -> None:
        if listener := self._listeners.get(request_id):
            listener(message)

    def listen(self, request_id: str, listener: Callable[[T], None]) -> None:
        """Calls `listener` for every message for `request_id`; register before publishing."""
        self._listeners[request_id] = listener

    def forget(self, request_id: str) -> None:
        self._listeners.pop(request_id, None)


Reply = FusedResult | AnswerChunk | FusionProgress

SEEN_REQUESTS = 100_000
"""How many request ids a `ReplyRouter` counts results of, by default (the oldest are forgotten)."""


class BoundedCounter(Counter[str]):
    """A `Counter` of at most `limit` keys: adding one more forgets the key added first."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: str, value: int) -> None:
        if key not in self:
            if self.limit <= 0:
                return
            while len(self) >= self.limit:
                del self[next(iter(self))]
        super().__setitem__(key, value)


class ReplyRouter(Correlator[Reply]):
    """Replies by request id: a future per request completes with its `FusedResult`, and listeners
    also see the `AnswerChunk`s and `FusionProgress` events ahead of it. `seen` counts results per
    request id, for the last `remember` request ids that had one (0: none are counted). Futures and
    listeners stay until their request is forgotten: their number is the caller's in-flight requests.
    A gateway's `GatewayPresence` on the topic is skipped."""

    def __init__(self, kafka: str | KafkaConnection, topic: str, remember: int = SEEN_REQUESTS) -> None:
        super().__init__(kafka, topic, _REPLIES, lambda message: message.request_id)
        self._futures: dict[str, asyncio.Future[FusedResult]] = {}
        self.seen: Counter[str] = BoundedCounter(remember)

    def _read(self, record: Any) -> Reply | None:
        try:
            message = decode(_REPLY_TOPIC, record.value)
        except DecodeError as error:
            log.debug("undecodable message on tapped topic", topic=record.topic, error=str(error))
            return None
        return None if isinstance(message, GatewayPresence) else message

    def answered(self, request_id: str) -> bool:
        """Whether the result for `request_id`, expected and not yet forgotten, has come."""
        future = self._futures.get(request_id)
        return future is not None and future.done() and not future.cancelled()

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        for future in self._futures.values():
            future.cancel()

    def _deliver(self, request_id: str, message: Reply) -> None:
        super()._deliver(request_id, message)
        if isinstance(message, FusedResult):
            self.seen[request_id] += 1
            future = self._futures.get(request_id)
            if future is not None and not future.done():
                future.set_result(message)

    def expect(self, request_id: str) -> "asyncio.Future[FusedResult]":
        """Registers interest in the result for `request_id`; call before publishing."""
        future = self._futures.get(request_id)
        if future is None:
            future = self._futures[request_id] = asyncio.get_running_loop().create_future()
        return future

    def forget(self, request_id: str) -> None:
        super().forget(request_id)
        self._futures.pop(request_id, None)

    async def wait(self, request_id: str, timeout_s: float) -> FusedResult:
        try:
            return await asyncio.wait_for(asyncio.shield(self.expect(request_id)), timeout_s)
        finally:
            self.forget(request_id)


_REPLIES: TypeAdapter[Reply] = TypeAdapter(
    Annotated[FusedResult | AnswerChunk | FusionProgress, Discriminator("kind")]
)
_REPLY_TOPIC: TypeAdapter[FusedResult | AnswerChunk | FusionProgress | GatewayPresence] = TypeAdapter(
    ReplyMessage
)
_PROGRESS: TypeAdapter[PanelPlan | PanelAnswer] = TypeAdapter(
    Annotated[PanelPlan | PanelAnswer, Discriminator("kind")]
)
"""What a watcher shows of `fusion.answers`; the judge's other messages there are skipped."""


def result_waiter(kafka: str | KafkaConnection) -> ReplyRouter:
    return ReplyRouter(kafka, topics.RESULTS)


def answer_watcher(kafka: str | KafkaConnection) -> Correlator[PanelPlan | PanelAnswer]:
    """Plans and answers of requests, for showing progress."""
    return Correlator(kafka, topics.ANSWERS, _PROGRESS, lambda message: message.request_id)
