"""The gateway's connection to Fusion over Kafka: it publishes requests and reads only its own replies.

Each gateway instance owns a reply topic, `fusion.replies.<instance>`, created at start-up and deleted
at shutdown; every request it publishes names that topic in `reply_to`, so the judge sends the
result (and the streamed chunks) there and no other instance sees them. Replies are routed to the
waiting HTTP request by request id. The gateway starts without Kafka and keeps trying to connect;
until it has, requests get 503.
"""

import asyncio
import contextlib
import re

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from fusion_contracts import FusedResult, FusionRequest, ReplyTo, topics

from fusion.gateway.errors import GatewayError
from fusion.kafka.admin import TopicPlan, create_topic
from fusion.kafka.broker import Outbox, build_broker
from fusion.kafka.tap import Reply, ReplyRouter
from fusion.settings import Settings

log = structlog.get_logger(__name__)

RETRY_S = 2.0
REPLY_RETENTION_MS = 3_600_000


def reply_topic_for(instance_id: str) -> str:
    return topics.REPLIES_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "-", instance_id)[:200]


class FusionLink:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.reply_topic = reply_topic_for(settings.instance_id)
        self._broker = build_broker(settings, "fusion-gateway")
        self._outbox = Outbox(self._broker)
        self.replies = ReplyRouter(settings.kafka_bootstrap, self.reply_topic)
        self.ready = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()

    @property
    def reply_to(self) -> ReplyTo:
        return ReplyTo(topic=self.reply_topic, partition=0)

    async def connect_forever(self) -> None:
        """Connects, retrying every few seconds while Kafka is unreachable."""
        while not self.ready.is_set():
            try:
                await self._connect()
            except (KafkaError, OSError, RuntimeError) as error:
                log.warning(
                    "kafka unreachable; retrying", bootstrap=self._settings.kafka_bootstrap, error=str(error)
                )
                await self._stack.aclose()
                await asyncio.sleep(RETRY_S)

    async def _connect(self) -> None:
        plan = TopicPlan(self.reply_topic, 1, {"retention.ms": str(REPLY_RETENTION_MS)})
        await create_topic(self._settings, plan)
        await self._broker.start()
        self._stack.push_async_callback(self._broker.stop)
        await self._stack.enter_async_context(self.replies)
        self.ready.set()
        log.info("gateway connected to kafka", reply_topic=self.reply_topic)

    async def close(self) -> None:
        await self._stack.aclose()
        if self.ready.is_set():
            await self._delete_reply_topic()

    async def _delete_reply_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap)
        try:
            await admin.start()
            await admin.delete_topics([self.reply_topic])
        except KafkaError as error:
            log.warning("could not delete the reply topic", topic=self.reply_topic, error=str(error))
        finally:
            await admin.close()

    async def submit(
        self, request: FusionRequest, listener: "asyncio.Queue[Reply] | None" = None
    ) -> "asyncio.Future[FusedResult]":
        """Publishes the request; the future completes with its result. Raises a 503 `GatewayError`
        when Kafka is unreachable."""
        if not self.ready.is_set():
            raise GatewayError(
                503,
                f"Kafka is unreachable at {self._settings.kafka_bootstrap}",
                "api_error",
                "kafka_unavailable",
            )
        future = self.replies.expect(request.request_id)
        if listener is not None:
            self.replies.listen(request.request_id, listener.put_nowait)
        try:
            await asyncio.wait_for(
                self._outbox.send(topics.REQUESTS, request, topics.request_key(request.request_id)),
                timeout=10,
            )
        except (KafkaError, TimeoutError) as error:
            self.replies.forget(request.request_id)
            raise GatewayError(
                503,
                f"Kafka did not accept the request: {type(error).__name__}",
                "api_error",
                "kafka_unavailable",
            ) from error
        return future

    def forget(self, request_id: str) -> None:
        self.replies.forget(request_id)
