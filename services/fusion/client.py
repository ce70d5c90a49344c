"""Submitting requests and receiving their results over Kafka: for the CLI, tests and other services."""

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

from fusion_contracts import FusedResult, FusionRequest, PanelAnswer, PanelPlan, topics

from fusion.kafka.broker import Outbox, build_broker
from fusion.kafka.security import KafkaConnection
from fusion.kafka.tap import Reply, answer_watcher, result_waiter
from fusion.settings import Settings

RESULT_MARGIN_S = 10.0
"""How long past a request's deadline a client waits before it gives up on the result."""


class FusionClient:
    """`async with FusionClient(settings) as client: result = await client.fuse(request)`."""

    def __init__(self, settings: Settings, watch_answers: bool = False) -> None:
        self._broker = build_broker(settings, "fusion-client")
        self._outbox = Outbox(self._broker)
        kafka = KafkaConnection.of(settings)
        self.results = result_waiter(kafka)
        self._answers = answer_watcher(kafka) if watch_answers else None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> "FusionClient":
        async with contextlib.AsyncExitStack() as stack:
            await self._broker.start()
            stack.push_async_callback(self._broker.stop)
            await stack.enter_async_context(self.results)
            if self._answers is not None:
                await stack.enter_async_context(self._answers)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def submit(
        self,
        request: FusionRequest,
        on_progress: Callable[[PanelPlan | PanelAnswer], None] | None = None,
        on_reply: Callable[[Reply], None] | None = None,
    ) -> "asyncio.Future[FusedResult]":
        """Publishes the request; the future completes with its result. With `watch_answers`,
        `on_progress` sees the request's plan and each member's answer as they pass on
        `fusion.answers`; `on_reply` sees what comes for it on `fusion.results` (its `AnswerChunk`s with
        `stream`, its `FusionProgress` events with `progress`, then its result)."""
        future = self.results.expect(request.request_id)
        if on_progress is not None and self._answers is not None:
            self._answers.listen(request.request_id, on_progress)
        if on_reply is not None:
            self.results.listen(request.request_id, on_reply)
        await self._outbox.send(topics.REQUESTS, request, topics.request_key(request.request_id))
        return future

    async def fuse(
        self,
        request: FusionRequest,
        on_progress: Callable[[PanelPlan | PanelAnswer], None] | None = None,
        timeout_s: float | None = None,
        on_reply: Callable[[Reply], None] | None = None,
    ) -> FusedResult:
        await self.submit(request, on_progress, on_reply)
        wait_s = timeout_s if timeout_s is not None else request.policy.deadline_s + RESULT_MARGIN_S
        try:
            return await self.results.wait(request.request_id, wait_s)
        finally:
            if self._answers is not None:
                self._answers.forget(request.request_id)
