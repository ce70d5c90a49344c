"""What a fusion is doing, told to requests that ask for it (`progress`): the events, and a sender
that keeps them in order ahead of the result."""

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka.errors import KafkaError
from fusion_contracts import Analysis, FusionProgress, PanelAnswer, PanelPlan

log = structlog.get_logger(__name__)


def members_added(plan: PanelPlan) -> list[FusionProgress]:
    return [
        FusionProgress(request_id=plan.request_id, event="panel.added", member_index=index, model=spec.model)
        for index, spec in enumerate(plan.members)
    ]


def member_answered(plan: PanelPlan, answer: PanelAnswer) -> FusionProgress:
    return FusionProgress(
        request_id=plan.request_id,
        event="panel.completed" if answer.status == "ok" else "panel.failed",
        member_index=answer.member_index,
        model=answer.model,
        status=answer.status,
        text=answer.text,
        error=answer.error,
        latency_ms=answer.latency_ms,
        usage=answer.usage,
        cost_usd=answer.cost_usd,
    )


def analysing(plan: PanelPlan) -> FusionProgress:
    return FusionProgress(request_id=plan.request_id, event="analysis.in_progress")


def analysed(plan: PanelPlan, analysis: Analysis | None) -> FusionProgress:
    return FusionProgress(request_id=plan.request_id, event="analysis.completed", analysis=analysis)


class ProgressSender:
    """Sends one request's events in the order they are told, one at a time. Best effort: an event
    the broker refuses is logged and dropped (the result, which says everything, still goes)."""

    def __init__(self, send: Callable[[FusionProgress], Awaitable[None]]) -> None:
        self._send = send
        self._queue: list[FusionProgress] = []
        self._flushing: asyncio.Task[None] | None = None

    def tell(self, *events: FusionProgress) -> None:
        self._queue.extend(events)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._queue:
            event = self._queue.pop(0)
            try:
                await self._send(event)
            except KafkaError:
                log.warning("progress event lost", request_id=event.request_id, progress=event.event)

    async def close(self) -> None:
        """Waits until every event told so far is sent (call before publishing the result)."""
        while self._flushing is not None and not self._flushing.done():
            await self._flushing
