"""OpenAI-compatible chat completions: OpenRouter, OpenAI, vLLM, Ollama, llama.cpp, ..."""

import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import httpx
from fusion_contracts import Usage

from fusion.models.base import ModelCall, ModelReply, OnDelta, ToolCall, ToolRound
from fusion.models.errors import ModelResponseError
from fusion.models.http import Endpoint, HttpAdapter, reported_cost, tokens


def _cost(usage: object) -> Decimal | None:
    return reported_cost(usage.get("cost")) if isinstance(usage, dict) else None


def _rounds(rounds: tuple[ToolRound, ...]) -> list[dict[str, Any]]:
    """Each tool round as chat messages: the assistant's calls, then one `tool` message per call."""
    messages: list[dict[str, Any]] = []
    for round_ in rounds:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in round_.calls
        ]
        # Content "" rather than null: some servers (llama.cpp's) refuse a null content.
        messages.append({"role": "assistant", "content": round_.text, "tool_calls": calls})
        messages.extend(
            {"role": "tool", "tool_call_id": c.id, "content": result}
            for c, result in zip(round_.calls, round_.results, strict=True)
        )
    return messages


def _tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The calls of a reply's message; a call without an id gets one (some servers send none)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return ()
    found: list[ToolCall] = []
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send an object
            arguments = json.dumps(arguments) if arguments is not None else "{}"
        call_id = call.get("id")
        found.append(
            ToolCall(
                id=call_id if isinstance(call_id, str) and call_id else f"call_{number}",
                name=function["name"],
                arguments=arguments,
            )
        )
    return tuple(found)


def _usage(usage: object) -> Usage:
    """Token counts as reported; a malformed usage block counts as zero rather than losing the reply."""
    if not isinstance(usage, dict):
        return Usage()
    return Usage(
        input_tokens=tokens(usage.get("prompt_tokens")), output_tokens=tokens(usage.get("completion_tokens"))
    )


class OpenAICompatModel(HttpAdapter):
    """Adapter for the `/chat/completions` API shape."""

    def __init__(
        self,
        endpoint: Endpoint,
        provider_name: str,
        structured_output: str = "json_schema",
        secrets: Sequence[str] = (),
    ) -> None:
        super().__init__(endpoint, provider_name, secrets)
        self._structured_output = structured_output

    def _payload(self, call: ModelCall) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": call.upstream_id,
            "messages": [message.model_dump(exclude_none=True) for message in call.messages],
            "stream": False,
        }
        optional = {
            "temperature": call.temperature,
            "top_p": call.top_p,
            "max_tokens": call.max_tokens,
            "seed": call.seed,
            "reasoning_effort": call.reasoning_effort,
        }
        payload.update({key: value for key, value in optional.items() if value is not None})
        if call.stop:
            payload["stop"] = list(call.stop)
        if call.tools:
            payload["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in call.tools
            ]
            payload["tool_choice"] = call.tool_choice
        payload["messages"].extend(_rounds(call.rounds))
        if call.json_schema is not None and self._structured_output == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": call.json_schema},
            }
        elif call.json_schema is not None and self._structured_output == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": call.json_schema}
        return payload

    async def complete(self, call: ModelCall, on_delta: OnDelta | None = None) -> ModelReply:
        if on_delta is not None:
            return await self._stream(call, on_delta)
        response = await self._post("chat/completions", self._payload(call))
        await self._raise_for_status(response)
        return self._parse(response)

    async def _stream(self, call: ModelCall, on_delta: OnDelta) -> ModelReply:
        payload = {**self._payload(call), "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        usage = Usage()
        cost: Decimal | None = None
        async with self._post_streamed("chat/completions", payload) as response:
            await self._raise_for_status(response)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    break
                delta, reported = self._parse_chunk(data)
                if reported is not None:
                    usage, cost = _usage(reported), _cost(reported)
                if delta:
                    parts.append(delta)
                    await on_delta(delta)
        return ModelReply(text="".join(parts), usage=usage, cost_usd=cost)

    def _parse_chunk(self, data: str) -> tuple[str, dict[str, Any] | None]:
        """A chunk's text, and its usage block when it carries one."""
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as error:
            raise ModelResponseError(f"{self._provider} streamed malformed JSON: {error}") from error
        if not isinstance(chunk, dict):
            raise ModelResponseError(f"{self._provider} streamed a chunk that is not an object")
        usage = chunk["usage"] if isinstance(chunk.get("usage"), dict) else None
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise ModelResponseError(f"{self._provider} streamed a chunk whose choices are not a list")
        delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        return (content if isinstance(content, str) else ""), usage

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sends an OpenAI request body as is (the gateway's pass-through and tool loop)."""
        response = await self._post("chat/completions", {**body, "stream": False})
        await self._raise_for_status(response)
        try:
            reply = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelResponseError(f"{self._provider} answered with malformed JSON: {error}") from error
        if not isinstance(reply, dict):
            raise ModelResponseError(f"{self._provider} answered with JSON that is not an object")
        return reply

    async def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """Sends a streaming OpenAI request body as is and yields the provider's SSE bytes."""
        async with self._post_streamed("chat/completions", {**body, "stream": True}) as response:
            await self._raise_for_status(response)
            async for chunk in response.aiter_bytes():
                yield chunk

    def _parse(self, response: httpx.Response) -> ModelReply:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelResponseError(f"{self._provider} answered with malformed JSON: {error}") from error
        try:
            message = body["choices"][0]["message"]
            calls = _tool_calls(message)
            text = "" if calls and message.get("content") is None else message["content"]
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise ModelResponseError(f"{self._provider} reply has no choices[0].message.content") from error
        if not isinstance(text, str):
            raise ModelResponseError(f"{self._provider} reply content is not text")
        return ModelReply(
            text=text, usage=_usage(body.get("usage")), cost_usd=_cost(body.get("usage")), tool_calls=calls
        )
