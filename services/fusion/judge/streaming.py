"""Publishing the judge's final answer while it is written, as ordered `AnswerChunk`s."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from fusion_contracts import AnswerChunk


class ChunkPublisher:
    """Sends deltas in order, one message at a time; deltas that arrive while one is being sent are
    joined into the next message, so a fast model does not produce a message per token. Every
    publisher is one attempt at the answer, with a `stream_id` of its own: a judge that takes the
    request over streams it again from `seq` 0 under another id, and readers never join the two."""

    def __init__(self, request_id: str, send: Callable[[AnswerChunk], Awaitable[None]]) -> None:
        self._request_id = request_id
        self._send = send
        self._pending: list[str] = []
        self._seq = 0
        self.stream_id = uuid.uuid4().hex
        self._flushing: asyncio.Task[None] | None = None

    async def push(self, delta: str) -> None:
        self._pending.append(delta)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            await self._send(
                AnswerChunk(request_id=self._request_id, seq=self._seq, delta=text, stream_id=self.stream_id)
            )
            self._seq += 1

    async def close(self) -> None:
        """Waits until every delta pushed so far is sent (call before publishing the result)."""
        if self._flushing is not None:
            await self._flushing
