"""`Idempotency-Key`: a retried POST gets the first attempt's response instead of a second fusion.

Kept in this gateway instance's memory for a time-to-live; a retry that reaches another instance is
not recognised (route by the key, or keep one instance, when that matters). Retries wait for an
attempt still running. Server errors (5xx) and 429s are not kept, so a retry after one runs again.

Memory is bounded twice over: kept responses (their rendered bytes and their keys) by count and by
bytes, the oldest going first, and a response larger than the whole budget is not kept at all.
Attempts still running are never evicted, whatever their age: there are at most as many as requests
in flight, and a retry that arrives meanwhile must find them, or it would run the fusion again.
"""

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fusion.gateway.errors import GatewayError

Response = tuple[int, bytes]
"""HTTP status and the JSON body, rendered."""

ENTRY_OVERHEAD_BYTES = 512
"""What an entry costs beside its key and body: the objects, the fingerprint, the dict slots."""


@dataclass
class Entry:
    fingerprint: str
    created: float = field(default_factory=time.monotonic)
    response: "asyncio.Future[Response]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    settled: float = 0.0
    size: int = 0


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def kept(status: int) -> bool:
    """Whether a response of `status` is replayed to a retry (else the retry runs again)."""
    return status < 500 and status != 429


class IdempotencyCache:
    def __init__(self, ttl_s: float, max_entries: int = 100_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._running: dict[str, Entry] = {}
        self._kept: OrderedDict[str, Entry] = OrderedDict()
        """Settled responses, oldest settled first."""
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._running) + len(self._kept)

    @property
    def running(self) -> int:
        return len(self._running)

    def _drop_kept(self, key: str) -> None:
        entry = self._kept.pop(key)
        self.kept_bytes -= entry.size

    def _evict(self) -> None:
        now = time.monotonic()
        while self._kept:
            key, entry = next(iter(self._kept.items()))
            if (
                now - entry.settled < self._ttl_s
                and len(self._kept) <= self._max_entries
                and self.kept_bytes <= self._max_bytes
            ):
                break
            self._drop_kept(key)

    def claim(self, key: str, body_fingerprint: str) -> tuple[Entry, bool]:
        """The entry for `key`, and whether this caller owns it (must run the request and settle it)."""
        self._evict()
        entry = self._running.get(key) or self._kept.get(key)
        if entry is None:
            entry = self._running[key] = Entry(body_fingerprint)
            return entry, True
        if entry.fingerprint != body_fingerprint:
            raise GatewayError(
                409,
                "this Idempotency-Key was used with a different request body",
                "invalid_request_error",
                "idempotency_key_reused",
            )
        return entry, False

    def settle(self, key: str, entry: Entry, response: Response) -> None:
        if not entry.response.done():
            entry.response.set_result(response)
        if self._running.get(key) is not entry:
            return
        del self._running[key]
        status, body = response
        size = len(body) + len(key.encode()) + ENTRY_OVERHEAD_BYTES
        if not kept(status) or size > self._max_bytes:
            return
        entry.settled = time.monotonic()
        entry.size = size
        self._kept[key] = entry
        self.kept_bytes += size
        self._evict()

    def abandon(self, key: str, entry: Entry, error: BaseException) -> None:
        if not entry.response.done():
            entry.response.set_exception(error)
            entry.response.exception()  # retrieved here, so an unawaited failure is not logged
        if self._running.get(key) is entry:
            del self._running[key]
