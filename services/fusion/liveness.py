"""Whether a service still makes progress: work that must finish soon (a message to publish, a
result's transaction) is watched, and the oldest still unfinished past `stuck_after_s` makes the
service stuck. `/health` then fails, so an orchestrator restarts it. Pure bookkeeping."""

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STUCK_AFTER_S = 120.0


class Progress:
    def __init__(
        self, stuck_after_s: float = STUCK_AFTER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stuck_after_s = stuck_after_s
        self._clock = clock
        self._open: dict[int, tuple[float, str]] = {}  # insertion order is start order
        self._ids = itertools.count()

    def begin(self, what: str) -> int:
        token = next(self._ids)
        self._open[token] = (self._clock(), what)
        return token

    def end(self, token: int) -> None:
        self._open.pop(token, None)

    @contextmanager
    def watching(self, what: str) -> Iterator[None]:
        token = self.begin(what)
        try:
            yield
        finally:
            self.end(token)

    def stuck(self) -> str | None:
        """Why the service is stuck (its oldest unfinished work and for how long), or None."""
        oldest = next(iter(self._open.values()), None)
        if oldest is None:
            return None
        waited_s = self._clock() - oldest[0]
        if waited_s < self._stuck_after_s:
            return None
        return f"{oldest[1]} unfinished for {waited_s:.0f} s ({len(self._open)} waiting)"
