"""Anthropic's Messages API over httpx: system prompt apart, content blocks, its own usage and streams."""

import json
from collections.abc import AsyncIterator
from typing import Any

from fusion_contracts import Usage

from fusion.models.base import ModelCall, ModelReply, OnDelta, ToolCall, ToolRound
from fusion.models.errors import ModelConfigError, ModelResponseError
from fusion.models.http import HttpAdapter, tokens

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires `max_tokens`; this is used when the member sets none."""
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
"""Extended thinking budgets for `reasoning_effort`."""


def _input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's `tool_use` block holds ({} when not an object)."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _rounds(rounds: tuple[ToolRound, ...]) -> list[dict[str, Any]]:
    """Each tool round as Anthropic's messages: the assistant's `tool_use` blocks, then the user's
    `tool_result` blocks."""
    messages: list[dict[str, Any]] = []
    for round_ in rounds:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": round_.text}] if round_.text else []
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
            for c in round_.calls
        ]
        messages.append({"role": "assistant", "content": blocks})
        results = [
            {"type": "tool_result", "tool_use_id": c.id, "content": result}
            for c, result in zip(round_.calls, round_.results, strict=True)
        ]
        messages.append({"role": "user", "content": results})
    return messages


def _tool_calls(blocks: list[Any]) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(
            id=str(block.get("id") or f"call_{n}"),
            name=block["name"],
            arguments=json.dumps(block.get("input") or {}),
        )
        for n, block in enumerate(blocks)
        if isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(block.get("name"), str)
    )


class AnthropicModel(HttpAdapter):
    """Adapter for the `/messages` API shape."""

    def _payload(self, call: ModelCall) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in call.messages if m.role == "system")
        payload: dict[str, Any] = {
            "model": call.upstream_id,
            "max_tokens": call.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [
                {"role": m.role, "content": [{"type": "text", "text": m.content}]}
                for m in call.messages
                if m.role != "system"
            ],
        }
        if system:
            payload["system"] = system
        if call.json_schema is not None:
            # No schema-constrained output here: the prompt asks for JSON and the judge reads it leniently.
            payload["system"] = (system + "\n\n" if system else "") + "Reply with one JSON object only."
        if call.stop:
            payload["stop_sequences"] = list(call.stop)
        if call.tools:
            payload["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in call.tools
            ]
            payload["tool_choice"] = {"type": call.tool_choice}
        payload["messages"].extend(_rounds(call.rounds))
        if call.reasoning_effort is not None:
            budget = THINKING_BUDGET[call.reasoning_effort]
            payload["thinking"] = {"type": "enabled", "budget_tokens": budget}
            payload["max_tokens"] = max(payload["max_tokens"], budget + 1024)
        else:  # sampling settings are not accepted together with extended thinking
            payload.update(
                {
                    k: v
                    for k, v in {"temperature": call.temperature, "top_p": call.top_p}.items()
                    if v is not None
                }
            )
        return payload

    async def complete(self, call: ModelCall, on_delta: OnDelta | None = None) -> ModelReply:
        if on_delta is not None:
            return await self._stream(call, on_delta)
        response = await self._post("messages", self._payload(call))
        await self._raise_for_status(response)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelResponseError(f"{self._provider} answered with malformed JSON: {error}") from error
        blocks = body.get("content") if isinstance(body, dict) else None
        if not isinstance(blocks, list):
            raise ModelResponseError(f"{self._provider} reply has no content blocks")
        text = "".join(
            block.get("text", "")
            for block in blocks
            if isinstance(block, dict) and block.get("type") == "text"
        )
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return ModelReply(
            text=text,
            usage=Usage(
                input_tokens=tokens(usage.get("input_tokens")),
                output_tokens=tokens(usage.get("output_tokens")),
            ),
            tool_calls=_tool_calls(blocks),
        )

    async def _stream(self, call: ModelCall, on_delta: OnDelta) -> ModelReply:
        parts: list[str] = []
        input_tokens = output_tokens = 0
        async with self._post_streamed("messages", {**self._payload(call), "stream": True}) as response:
            await self._raise_for_status(response)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                try:
                    event = json.loads(line.removeprefix("data:").strip())
                except json.JSONDecodeError as error:
                    raise ModelResponseError(f"{self._provider} streamed malformed JSON: {error}") from error
                kind = event.get("type")
                if kind == "message_start":
                    input_tokens = tokens(
                        ((event.get("message") or {}).get("usage") or {}).get("input_tokens")
                    )
                elif kind == "content_block_delta" and (event.get("delta") or {}).get("type") == "text_delta":
                    text = event["delta"].get("text", "")
                    parts.append(text)
                    await on_delta(text)
                elif kind == "message_delta":
                    output_tokens = tokens((event.get("usage") or {}).get("output_tokens"))
                elif kind == "error":
                    message = (event.get("error") or {}).get("message", "stream error")
                    raise ModelResponseError(self._redact(f"{self._provider} stream error: {message}"))
        return ModelReply(
            text="".join(parts), usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        )

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]:
        raise ModelConfigError(
            f"{self._provider} speaks Anthropic's API: pass-through needs an OpenAI-compatible provider"
        )

    async def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        nothing: tuple[bytes, ...] = ()
        for piece in nothing:  # an async generator that fails when iterated, like a refused stream
            yield piece
        raise ModelConfigError(
            f"{self._provider} speaks Anthropic's API: pass-through needs an OpenAI-compatible provider"
        )
