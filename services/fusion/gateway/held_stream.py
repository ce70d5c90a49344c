"""Streamed responses that hold what they use (an in-flight slot, a fusion's reply route) until they
end, however they end: every API's streams go through `hold_stream`."""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

Releases = list[Callable[[], None]]


class HeldStream(StreamingResponse):
    """A stream that runs `release` once it is over, however it ends: finished, the client gone, the
    task cancelled, or the body never read at all (a client gone before it began, when no code of the
    body's generator ever runs)."""

    def __init__(self, events: AsyncIterator[Any], release: Releases) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._events = events
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                aclose = getattr(self._events, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                release_all(self._release)


def release_all(release: Releases) -> None:
    while release:
        release.pop()()


async def hold_stream(
    admission: contextlib.AbstractContextManager[Any],
    start: Callable[[Releases], Awaitable[AsyncIterator[Any]]],
) -> HeldStream:
    """Enters `admission` (the gateway's in-flight slot) and starts the events with `start`, which
    appends what else the stream holds to the releases it is given. The stream releases all of it
    when it ends; if starting fails, all is released at once and the error propagates."""
    exits = contextlib.ExitStack()
    exits.enter_context(admission)
    release: Releases = [exits.close]
    try:
        events = await start(release)
    except BaseException:
        release_all(release)
        raise
    return HeldStream(events, release)
