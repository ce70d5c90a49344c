"""Server-sent events in OpenAI's streaming format."""

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
