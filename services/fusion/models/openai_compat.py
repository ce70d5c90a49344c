"""OpenAI-compatible chat completions over httpx: OpenRouter, OpenAI, vLLM, Ollama, llama.cpp, ..."""

import json
from typing import Any

import httpx
from fusion_contracts import Usage

from fusion.models.base import ModelCall, ModelReply
from fusion.models.errors import ModelHTTPError, ModelResponseError, ModelUnavailable

_ERROR_BODY_CHARS = 300


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        return str(message)[:_ERROR_BODY_CHARS]
    except ValueError:
        return response.text[:_ERROR_BODY_CHARS]


class OpenAICompatModel:
    """Adapter for the `/chat/completions` API shape."""

    def __init__(self, client: httpx.AsyncClient, provider_name: str, structured_output: str = "json_schema"):
        self._client = client
        self._provider = provider_name
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
        }
        payload.update({key: value for key, value in optional.items() if value is not None})
        if call.stop:
            payload["stop"] = list(call.stop)
        if call.json_schema is not None and self._structured_output == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": call.json_schema},
            }
        elif call.json_schema is not None and self._structured_output == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": call.json_schema}
        return payload

    async def complete(self, call: ModelCall) -> ModelReply:
        try:
            response = await self._client.post("chat/completions", json=self._payload(call))
        except httpx.TimeoutException as error:
            raise TimeoutError(f"{self._provider}: no answer in time") from error
        except httpx.TransportError as error:
            raise ModelUnavailable(
                f"{self._provider} unreachable: {type(error).__name__}: {error}"
            ) from error
        if response.status_code >= 400:
            raise ModelHTTPError(
                f"{self._provider} answered HTTP {response.status_code}: {_error_detail(response)}",
                status_code=response.status_code,
                retry_after_s=_retry_after(response),
            )
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> ModelReply:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelResponseError(f"{self._provider} answered with malformed JSON: {error}") from error
        try:
            text = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise ModelResponseError(f"{self._provider} reply has no choices[0].message.content") from error
        if not isinstance(text, str):
            raise ModelResponseError(f"{self._provider} reply content is not text")
        usage = body.get("usage") or {}
        return ModelReply(
            text=text,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
