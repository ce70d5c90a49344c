"""A bounded set of background tasks: submitting waits while the set is full (backpressure)."""

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class BoundedPool:
    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self.limit = limit

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, work: Coroutine[Any, Any, None]) -> None:
        """Starts `work` once a slot is free; returns as soon as it has started."""
        await self._slots.acquire()
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background task failed", error=repr(error), exc_info=error)

    async def drain(self, timeout_s: float) -> int:
        """Waits for running work to finish; cancels what is left after `timeout_s`. Returns that count."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        return len(pending)
