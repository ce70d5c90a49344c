"""Server-sent events in OpenAI's streaming format: written, and read from a provider's stream."""

import codecs
import json
from collections.abc import AsyncIterator
from typing import Any


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def completion_as_sse(completion: dict[str, Any]) -> AsyncIterator[str]:
    """A finished `chat.completion` as a stream: role, content, tool calls, finish with usage, [DONE]."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    yield event({"role": "assistant", "content": ""})
    if message.get("content"):
        yield event({"content": message["content"]})
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield event({"tool_calls": calls})
    extra = {key: completion[key] for key in ("usage", "fusion") if key in completion}
    yield event({}, choice.get("finish_reason") or "stop", **extra)
    yield "data: [DONE]\n\n"


class SseData:
    """The `data` of a provider's server-sent events, from its bytes however the network cut them
    (a UTF-8 character included): one string per event, comments and blank events skipped; `done`
    once `data: [DONE]` came, after which nothing more is read."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self.done = False

    def feed(self, data: bytes) -> list[str]:
        self._buffer += self._decoder.decode(data).replace("\r\n", "\n")
        *blocks, self._buffer = self._buffer.split("\n\n")
        return self._data(blocks)

    def close(self) -> list[str]:
        """The last event, when the stream ended without a blank line after it."""
        rest, self._buffer = self._buffer + self._decoder.decode(b"", final=True), ""
        return self._data([rest])

    def _data(self, blocks: list[str]) -> list[str]:
        found = []
        for block in blocks:
            data = "\n".join(
                line.removeprefix("data:").strip() for line in block.split("\n") if line.startswith("data:")
            )
            if not data or self.done:
                continue
            if data == "[DONE]":
                self.done = True
                continue
            found.append(data)
        return found
