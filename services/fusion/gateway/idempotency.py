"""`Idempotency-Key`: a retried POST gets the first attempt's response instead of a second fusion.

Kept in this gateway instance's memory for a time-to-live; a retry that reaches another instance is
not recognised (route by the key, or keep one instance, when that matters). Retries wait for an
attempt still running. Server errors (5xx) are not kept, so a retry after one runs again.
"""

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fusion.gateway.errors import GatewayError

Response = tuple[int, dict[str, Any]]
"""HTTP status and JSON body."""


@dataclass
class Entry:
    fingerprint: str
    created: float = field(default_factory=time.monotonic)
    response: "asyncio.Future[Response]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class IdempotencyCache:
    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.created < self._ttl_s:
                break
            del self._entries[key]

    def claim(self, key: str, body_fingerprint: str) -> tuple[Entry, bool]:
        """The entry for `key`, and whether this caller owns it (must run the request and settle it)."""
        self._expire()
        entry = self._entries.get(key)
        if entry is None:
            while len(self._entries) >= self._max:
                self._entries.popitem(last=False)
            entry = self._entries[key] = Entry(body_fingerprint)
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
        if response[0] >= 500 and self._entries.get(key) is entry:
            del self._entries[key]

    def abandon(self, key: str, entry: Entry, error: BaseException) -> None:
        if not entry.response.done():
            entry.response.set_exception(error)
            entry.response.exception()  # retrieved here, so an unawaited failure is not logged
        if self._entries.get(key) is entry:
            del self._entries[key]
