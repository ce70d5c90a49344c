"""Anthropic's Messages API <-> the gateway's chat completions. Pure functions, no I/O.

A Messages request becomes the gateway's canonical `ChatCompletionRequest`; a fused result, a passed-through
chat completion, or either one's stream, becomes Anthropic's `message` and its server-sent events; a
`GatewayError` becomes Anthropic's error body.
"""

import json
from collections.abc import Sequence
from typing import Any, Final, Literal

from fusion_contracts import FusedResult
from pydantic import BaseModel, ConfigDict, Field

from fusion.gateway import translate
from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import ChatCompletionRequest, FusionOptions
from fusion.gateway.sse import SseData

__all__ = [
    "PING",
    "MessageIn",
    "MessagesRequest",
    "PassthroughEvents",
    "error_body",
    "error_event",
    "error_type",
    "event",
    "invalid_body_message",
    "message_from_completion",
    "message_from_result",
    "result_usage",
    "stream_end",
    "stream_start",
    "text_delta",
    "to_chat_request",
]

BLOCK_SEPARATOR: Final = "\n\n"
"""Joins a message's text blocks into the one text a chat message carries: blocks are separate units
(a document, then the question about it), not pieces of one sentence."""


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    """The parts of Anthropic's Messages request the gateway reads; other fields are ignored
    (`metadata`, `top_k`, `thinking`, …), as a fused chat completion ignores what it does not use."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="`fusion`, `fusion/<preset>`, or any catalog model (passed through).")
    max_tokens: int = Field(ge=1, description="Required, as Anthropic's API requires it.")
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    fusion: FusionOptions | None = None


# --- the request -------------------------------------------------------------------------------


def _text(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    param = "system" if where == "system" else "messages"
    texts = []
    for index, block in enumerate(content):
        kind = block.get("type")
        text = block.get("text")
        if kind != "text":
            raise GatewayError.invalid(
                f"{where}[{index}]: {kind!r} content blocks are not supported; "
                "Fusion's Messages API takes text blocks only",
                param,
            )
        if not isinstance(text, str):
            raise GatewayError.invalid(f"{where}[{index}]: a text block needs a 'text' string", param)
        texts.append(text)
    return BLOCK_SEPARATOR.join(texts)


def to_chat_request(request: MessagesRequest) -> ChatCompletionRequest:
    """The chat completion the gateway runs for a Messages request: `system` first, then the turns
    (earlier assistant turns included), with the sampling settings and the `fusion` object."""
    if request.tools:
        raise GatewayError.invalid(
            "tools are not supported: Fusion's Messages API answers with text only", "tools"
        )
    messages = []
    if request.system is not None:
        system = _text(request.system, "system")
        if system:
            messages.append({"role": "system", "content": system})
    for index, message in enumerate(request.messages):
        messages.append(
            {"role": message.role, "content": _text(message.content, f"messages[{index}].content")}
        )
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "stream": request.stream,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        # Anthropic's stream has no event for the panel's progress: none is asked for.
        "fusion": request.fusion.model_copy(update={"progress": None}) if request.fusion else None,
    }
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.stream and not translate.is_fusion_model(request.model):
        body["stream_options"] = {"include_usage": True}  # so message_delta can count the tokens
    return ChatCompletionRequest.model_validate(body)


def invalid_body_message(problems: Sequence[Any]) -> str:
    """A body that does not validate, as Anthropic words it (`max_tokens: Field required`)."""
    described = []
    for problem in list(problems)[:5]:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
        described.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(described) or "invalid request body"


# --- the response ------------------------------------------------------------------------------


def result_usage(result: FusedResult) -> dict[str, Any]:
    """Anthropic's usage, summed over every call of the fusion; the panel's tool calls as
    `server_tool_use` (`web_search_requests`, `web_fetch_requests`, …) when there were any."""
    total = result.usage.total
    usage: dict[str, Any] = {"input_tokens": total.input_tokens, "output_tokens": total.output_tokens}
    if counts := translate.tool_counts(result):
        used = {"web_search_requests": 0, "web_fetch_requests": 0}
        used.update({f"{name}_requests": count for name, count in counts.items()})
        usage["server_tool_use"] = used
    return usage


def _message(
    message_id: str,
    model: str,
    text: str | None,
    stop: tuple[str, str | None],
    usage: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if text is None else [{"type": "text", "text": text}],
        "stop_reason": stop[0],
        "stop_sequence": stop[1],
        "usage": usage,
    }


def message_from_result(result: FusedResult, model: str) -> dict[str, Any]:
    """A fused answer as Anthropic's `message`, with the `fusion` object beside it."""
    message = _message(
        f"msg_{result.request_id}", model, result.answer or "", ("end_turn", None), result_usage(result)
    )
    message["fusion"] = translate.fusion_summary(result)
    return message


def _usage_of(usage: Any) -> dict[str, Any]:
    counted = usage if isinstance(usage, dict) else {}

    def tokens(key: str) -> int:
        value = counted.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    return {"input_tokens": tokens("prompt_tokens"), "output_tokens": tokens("completion_tokens")}


def _stop(choice: dict[str, Any], stop_sequences: Sequence[str] | None) -> tuple[str, str | None]:
    """Anthropic's stop reason for a chat completion's choice. OpenAI's `finish_reason` is `stop` for
    a stop sequence too; vLLM names the sequence in `stop_reason`, and then it is `stop_sequence`."""
    finish = choice.get("finish_reason")
    if finish == "length":
        return "max_tokens", None
    if finish == "content_filter":
        return "refusal", None
    matched = choice.get("stop_reason")
    if isinstance(matched, str) and matched in (stop_sequences or ()):
        return "stop_sequence", matched
    return "end_turn", None


def message_from_completion(
    completion: dict[str, Any], message_id: str, model: str, stop_sequences: Sequence[str] | None
) -> dict[str, Any]:
    """A passed-through model's chat completion as Anthropic's `message`."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    reply = choice.get("message")
    content = reply.get("content") if isinstance(reply, dict) else None
    text = content if isinstance(content, str) else ""
    return _message(
        message_id, model, text, _stop(choice, stop_sequences), _usage_of(completion.get("usage"))
    )


# --- errors ------------------------------------------------------------------------------------


def error_type(status: int, code: str | None) -> str:
    """Anthropic's error type for an HTTP status, one its SDK's `ErrorObject` knows
    (docs.claude.com/en/api/errors): other 4xx are `invalid_request_error`, other 5xx `api_error`,
    and a temporary 503 is `overloaded_error`, as Anthropic's own 529 is."""
    by_status = {
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
    if status in by_status:
        return by_status[status]
    if status == 503 and code != "provider_not_configured":
        return "overloaded_error"
    return "invalid_request_error" if status < 500 else "api_error"


_MESSAGES: Final = {
    "invalid_api_key": "missing or wrong API key: send x-api-key: <key> (or Authorization: Bearer <key>)",
}
"""Messages that name what an Anthropic client sends, where the gateway's name what OpenAI's does."""


def error_body(error: GatewayError) -> dict[str, Any]:
    """Anthropic's error body; a failed fusion's `fusion` object goes beside it, as on chat completions."""
    message = _MESSAGES.get(error.code or "", error.message)
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type(error.status, error.code), "message": message},
    }
    if error.fusion is not None:
        body["fusion"] = error.fusion
    return body


# --- server-sent events ------------------------------------------------------------------------


def event(payload: dict[str, Any]) -> str:
    """One server-sent event, named as Anthropic names them: `event: <type>`, then its data."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


PING: Final = event({"type": "ping"})


def stream_start(message_id: str, model: str) -> list[str]:
    """`message_start` (an empty message: usage comes at the end), the text block's start, a ping."""
    message = _message(message_id, model, None, ("", None), {"input_tokens": 0, "output_tokens": 0})
    message["stop_reason"] = None
    return [
        event({"type": "message_start", "message": message}),
        event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        PING,
    ]


def text_delta(text: str) -> str:
    return event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})


def stream_end(
    stop: tuple[str, str | None], usage: dict[str, Any], extra: dict[str, Any] | None = None
) -> list[str]:
    """The text block's end, `message_delta` (stop reason, usage, and `extra` such as the `fusion`
    object) and `message_stop`."""
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop[0], "stop_sequence": stop[1]},
        "usage": usage,
        **(extra or {}),
    }
    return [
        event({"type": "content_block_stop", "index": 0}),
        event(delta),
        event({"type": "message_stop"}),
    ]


def error_event(error: GatewayError) -> str:
    return event(error_body(error))


def _upstream(message: str) -> GatewayError:
    return GatewayError(502, message, "api_error", "upstream_error")


class PassthroughEvents:
    """A passed-through model's chat-completion stream (OpenAI's chunks as server-sent events, in
    bytes however the network cut them) as Anthropic's events. An error the provider streams, a chunk
    that is not JSON, or a stream that ends before its finish is an `error` event, the last one."""

    def __init__(self, message_id: str, model: str, stop_sequences: Sequence[str] | None) -> None:
        self.message_id = message_id
        self.model = model
        self.over = False
        """Ended, or failed: no more events."""
        self._stop_sequences = stop_sequences
        self._events = SseData()
        self._choice: dict[str, Any] | None = None
        self._usage: Any = None

    def start(self) -> list[str]:
        return stream_start(self.message_id, self.model)

    def feed(self, data: bytes) -> list[str]:
        return [] if self.over else self._translated(self._events.feed(data))

    def _translated(self, chunks: list[str]) -> list[str]:
        events = []
        for data in chunks:
            try:
                events.extend(self._chunk(data))
            except GatewayError as error:
                return [*events, *self.fail(error)]
        return events

    def end(self) -> list[str]:
        """The end of the message, once the provider's stream is over."""
        events = [] if self.over else self._translated(self._events.close())
        if self.over:
            return events
        if self._choice is None and not self._events.done:
            return [*events, *self.fail(_upstream("the model's stream ended before its answer did"))]
        self.over = True
        stop = _stop(self._choice or {}, self._stop_sequences)
        return [*events, *stream_end(stop, _usage_of(self._usage))]

    def fail(self, error: GatewayError) -> list[str]:
        """The stream failed (the provider's, or reading it): an `error` event, unless it is over."""
        if self.over:
            return []
        self.over = True
        return [error_event(error)]

    def _chunk(self, data: str) -> list[str]:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise _upstream("the model streamed a chunk that is not JSON") from None
        if not isinstance(chunk, dict):
            raise _upstream("the model streamed a chunk that is not an object")
        if isinstance(chunk.get("error"), dict):
            message = chunk["error"].get("message")
            raise _upstream(f"the model's stream failed: {message or 'no reason given'}")
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self._choice = choice
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        return [text_delta(text)] if isinstance(text, str) and text else []
