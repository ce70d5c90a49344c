"""The gateway's connection to Fusion over Kafka: it publishes requests and reads only its own replies.

Each gateway instance owns a reply topic, `fusion.replies.<instance>`, created when it connects; every
request it publishes names that topic in `reply_to`, so the judge sends the result (and the streamed
chunks) there and no other instance sees them. Replies are routed to the waiting HTTP request by
request id. The gateway starts without Kafka and keeps trying to connect; until it has, requests get
503.

While connected it writes a `GatewayPresence` to its topic every minute or so, and sweeps away the
reply topics of gateways that have been silent for `gateway_reply_topic_stale_s`
(`fusion.gateway.reply_topics`). At shutdown it deletes its own topic only when no result can still
come to it: none awaited, none of a request given up on (a client gone, a 504) still due, and none of
an earlier process of the same instance (one killed, whose topic this process found) still due.
"""

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from fusion_contracts import FusedResult, FusionRequest, GatewayPresence, ReplyTo, topics
from fusion_contracts.limits import MAX_DEADLINE_S

from fusion.gateway.errors import GatewayError
from fusion.gateway.reply_topics import PRESENCE_S, Sweeper, presence_interval, sweep_interval
from fusion.kafka.admin import BROKER_TIMESTAMPS, TopicPlan, create_topic, default_replication
from fusion.kafka.broker import Outbox, build_broker
from fusion.kafka.security import KafkaConnection, client_options
from fusion.kafka.tap import Reply, ReplyRouter
from fusion.settings import Settings

log = structlog.get_logger(__name__)

RETRY_S = 2.0
REPLY_RETENTION_MS = 3_600_000
LATE_S = 60.0
"""A result may still come this long past its request's deadline (a judge taking it over late)."""


def reply_topic_for(instance_id: str) -> str:
    return topics.REPLIES_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "-", instance_id)[:200]


class FusionLink:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.reply_topic = reply_topic_for(settings.instance_id)
        self._broker = build_broker(settings, "fusion-gateway")
        self._outbox = Outbox(self._broker)
        kafka = KafkaConnection.of(settings)
        self.replies = ReplyRouter(kafka, self.reply_topic, remember=0)
        self.ready = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._due: dict[str, float] = {}
        """Request id -> when its result stops being due (monotonic), for the requests awaited."""
        self._given_up_due = 0.0
        """The latest such time of the requests forgotten before their result came."""
        self.sweeper = Sweeper(kafka, self.reply_topic, settings.gateway_reply_topic_stale_s)

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
        self._adopt(await self._create_reply_topic())
        await self._broker.start()
        self._stack.push_async_callback(self._broker.stop)
        await self._stack.enter_async_context(self.replies)
        await self._present()  # before any request: a sweeper never finds this topic empty or silent
        stale_s = self._settings.gateway_reply_topic_stale_s
        # Present even when this gateway does not sweep: others may.
        self._background(self._keep_present(presence_interval(stale_s or PRESENCE_S)), "reply presence")
        if stale_s > 0:
            self._background(self._keep_sweeping(sweep_interval(stale_s)), "reply topic sweeps")
        self.ready.set()
        log.info("gateway connected to kafka", reply_topic=self.reply_topic)

    def _adopt(self, outcome: str) -> None:
        """A reply topic that already existed was left by an earlier process of this instance (one
        killed, then started again under its name): results of its requests may still come to it, so
        it is kept at shutdown until the longest deadline has passed, as for a request given up on."""
        if outcome == "exists":
            self._given_up_due = max(self._given_up_due, time.monotonic() + MAX_DEADLINE_S + LATE_S)
            log.info(
                "reply topic inherited; kept at shutdown while its results may still come",
                topic=self.reply_topic,
            )

    async def _create_reply_topic(self) -> str:
        # Replicated as the cluster replicates any topic: with a single replica, the replies (and the
        # judge's transactions that carry one) would wait whenever that replica's broker is down.
        # Stamped by the brokers, so a sweeper dates it by their clock, not by its writers'.
        config = {"retention.ms": str(REPLY_RETENTION_MS), **BROKER_TIMESTAMPS}
        plan = TopicPlan(self.reply_topic, 1, config)
        return await create_topic(self._settings, plan, await default_replication(self._settings))

    def _background(self, work: "Coroutine[Any, Any, None]", name: str) -> None:
        task = asyncio.create_task(work, name=name)

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop)

    async def _present(self) -> None:
        presence = GatewayPresence(instance_id=self._settings.instance_id)
        await asyncio.wait_for(
            self._outbox.send(self.reply_topic, presence, self._settings.instance_id.encode(), 0), timeout=30
        )

    async def _keep_present(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self._present()
            except Exception as error:  # noqa: BLE001 - the loop must outlive any failure
                # Kafka away, or the topic deleted (a sweeper that found it silent, after Kafka was
                # away from here for that long): created again, so the next presence gets through.
                log.warning("presence not written; creating the reply topic again", error=str(error))
                with contextlib.suppress(Exception):
                    await self._create_reply_topic()

    async def _keep_sweeping(self, every_s: float) -> None:
        while True:
            try:
                await self.sweeper.sweep()
            except Exception as error:  # noqa: BLE001 - the loop must outlive any failure
                log.warning("reply topics not swept", error=repr(error))
            await asyncio.sleep(every_s)

    def in_flight(self) -> int:
        """Requests whose result may still come to the reply topic: awaited ones, and one more while
        any request given up on is still due."""
        given_up = 1 if time.monotonic() < self._given_up_due else 0
        return len(self._due) + given_up

    async def close(self) -> None:
        await self._stack.aclose()
        if not self.ready.is_set():
            return
        if self.in_flight():
            log.warning(
                "reply topic kept: results may still come to it; a sweeper deletes it once silent",
                topic=self.reply_topic,
                awaited=len(self._due),
                due_for_s=round(max(0.0, self._given_up_due - time.monotonic())),
            )
            return
        await self._delete_reply_topic()

    async def _delete_reply_topic(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.kafka_bootstrap, **client_options(self._settings)
        )
        try:
            await admin.start()
            await admin.delete_topics([self.reply_topic])
        except KafkaError as error:
            log.warning("could not delete the reply topic", topic=self.reply_topic, error=str(error))
        finally:
            await admin.close()

    async def submit(
        self, request: FusionRequest, listener: "Callable[[Reply], None] | None" = None
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
            self.replies.listen(request.request_id, listener)
        self._due[request.request_id] = time.monotonic() + request.policy.deadline_s + LATE_S
        try:
            await asyncio.wait_for(
                self._outbox.send(topics.REQUESTS, request, topics.request_key(request.request_id)),
                timeout=10,
            )
        except (KafkaError, TimeoutError) as error:
            # Perhaps published after all (a timeout): still due, so the topic is not deleted under it.
            self.forget(request.request_id)
            raise GatewayError(
                503,
                f"Kafka did not accept the request: {type(error).__name__}",
                "api_error",
                "kafka_unavailable",
            ) from error
        return future

    def forget(self, request_id: str) -> None:
        """Stops routing replies of `request_id`; call once its result came or was given up on."""
        due = self._due.pop(request_id, None)
        if due is not None and not self.replies.answered(request_id):
            self._given_up_due = max(self._given_up_due, due)
        self.replies.forget(request_id)
