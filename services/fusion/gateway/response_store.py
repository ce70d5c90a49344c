"""The conversations behind `previous_response_id` (OpenAI's Responses API).

Each completed response is kept as its conversation: the input messages it answered (those of the
response it continued included) and its own answer, as chat messages. A request that names it in
`previous_response_id` continues that conversation. Kept in this gateway instance's memory for a
time-to-live, bounded by count and by bytes, the oldest going first; a conversation larger than the
whole budget is not kept. Another instance does not know it: route a conversation to one instance,
or send its messages in `input`. No I/O: the caller gives the time.
"""

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["ENTRY_OVERHEAD_BYTES", "Message", "ResponseStore"]

Message = dict[str, Any]
"""A chat message: `role` and text `content`."""

ENTRY_OVERHEAD_BYTES = 256
"""What an entry costs beside its messages: the objects and the dict slots."""


@dataclass(frozen=True, slots=True)
class _Entry:
    messages: tuple[Message, ...]
    kept_at: float
    size: int


class ResponseStore:
    def __init__(self, ttl_s: float, max_entries: int = 100_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        """Oldest kept first."""
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def keep(self, response_id: str, messages: list[Message], answer: str, now: float) -> None:
        """Keeps the conversation of a completed response: the messages it answered and its answer."""
        conversation = (*messages, {"role": "assistant", "content": answer})
        size = (
            len(json.dumps(conversation, ensure_ascii=False).encode())
            + len(response_id)
            + ENTRY_OVERHEAD_BYTES
        )
        if size > self._max_bytes:
            return
        if response_id in self._entries:
            self._drop(response_id)
        self._entries[response_id] = _Entry(conversation, now, size)
        self.kept_bytes += size
        self._evict(now)

    def conversation(self, response_id: str, now: float) -> list[Message] | None:
        """The conversation up to and with the response `response_id`; None when it is not kept (never
        here, expired or evicted)."""
        self._evict(now)
        entry = self._entries.get(response_id)
        return [dict(message) for message in entry.messages] if entry else None

    def _drop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id)
        self.kept_bytes -= entry.size

    def _evict(self, now: float) -> None:
        while self._entries:
            response_id, oldest = next(iter(self._entries.items()))
            if (
                now - oldest.kept_at < self.ttl_s
                and len(self._entries) <= self._max_entries
                and self.kept_bytes <= self._max_bytes
            ):
                return
            self._drop(response_id)
