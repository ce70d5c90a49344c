"""Retries and per-provider limits around model calls.

Retries: exponential backoff with full jitter on 429, 5xx and connection errors, waiting at least what
`Retry-After` asks, and never sleeping past the caller's deadline (the last error is raised instead,
so the outcome says why the call failed rather than just "timeout").

Limits: each provider has a concurrency limit and an optional request rate, shared by every call in
the process (all panel members and judges of all requests).
"""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fusion.models.errors import ModelError, ModelHTTPError, ModelUnavailable

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0

    def backoff(self, attempt: int, draw: float) -> float:
        """Full jitter: a uniform share (`draw` in [0, 1)) of the exponential step."""
        return float(draw * min(self.cap_s, self.base_s * 2**attempt))


def retryable(error: ModelError) -> bool:
    if isinstance(error, ModelUnavailable):
        return True
    return isinstance(error, ModelHTTPError) and (
        error.status_code in RETRYABLE_STATUS or error.status_code >= 500
    )


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    deadline: float | None = None,
) -> T:
    """Runs `call`, retrying what `retryable` allows. `deadline` is a `time.monotonic()` instant."""
    for attempt in range(policy.attempts):
        try:
            return await call()
        except ModelError as error:
            if not retryable(error) or attempt == policy.attempts - 1:
                raise
            wait = policy.backoff(attempt, random.random())
            if isinstance(error, ModelHTTPError) and error.retry_after_s is not None:
                wait = max(wait, error.retry_after_s)
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise
            await asyncio.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


class RateLimiter:
    """At most `per_second` starts per second, smoothed (a token bucket of one)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


class ProviderLimits:
    """One provider's shared concurrency slots and request rate."""

    def __init__(self, max_concurrency: int, rate_per_s: float | None) -> None:
        self._slots = asyncio.Semaphore(max_concurrency)
        self._rate = RateLimiter(rate_per_s) if rate_per_s else None

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        async with self._slots:
            if self._rate is not None:
                await self._rate.wait()
            return await call()
