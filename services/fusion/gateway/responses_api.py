"""`POST /v1/responses`: OpenAI's Responses API in front of the gateway, for every model it serves.

A request is translated at the edge into the gateway's canonical `ChatCompletionRequest` (messages,
`fusion` options, sampling), answered by the Gateway's own paths (fusion or pass-through, plain or
streamed) and rendered in the Responses shape. OpenRouter's Fusion shapes (the slug, the plugin, the
server tool) are read by `fusion.gateway.openrouter`. `previous_response_id` continues a conversation
this instance keeps (`fusion.gateway.response_store`). The pure translation comes first; the routes
are at the end.
"""

import codecs
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from fusion_contracts import FusedResult, FusionProgress
from pydantic import BaseModel, ConfigDict, Field

from fusion.gateway import openrouter, translate
from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import ChatCompletionRequest, FusionOptions
from fusion.gateway.response_store import Message, ResponseStore
from fusion.gateway.updates import Failed, Finished, KeepAlive, Progress, TextDelta, Update
from fusion.models import ModelError, ModelResponseError

if TYPE_CHECKING:
    from fusion.gateway.app import Gateway

__all__ = [
    "ChunkReader",
    "ResponseEvents",
    "ResponseFrame",
    "Responses",
    "ResponsesRequest",
    "chat_request",
    "fused_response",
    "fusion_events",
    "fusion_item_id",
    "input_messages",
    "message_item",
    "passthrough_events",
    "passthrough_response",
    "previous_response_not_found",
    "responses_routes",
    "responses_usage",
]

Keep = Callable[[str], None]
"""Keeps a response's answer for `previous_response_id`, once it is complete."""

TEXT_PARTS: Final = frozenset({"input_text", "output_text"})
_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
"""Input roles, as chat messages: `developer` is sent as `system`, which every provider takes."""


class ResponsesRequest(BaseModel):
    """The fields of OpenAI's Responses request that the gateway reads. Others that do not change the
    answer (`user`, `include`, `truncation`, `reasoning`, `parallel_tool_calls`...) are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        description="`fusion`, `fusion/<preset>`, `openrouter/fusion`, or any catalog model (passed through)."
    )
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    plugins: list[dict[str, Any]] | None = Field(default=None, description="OpenRouter's `fusion` plugin.")
    fusion: FusionOptions | None = None
    store: bool = Field(default=True, description="Keep the response for `previous_response_id`.")
    metadata: dict[str, str] | None = None
    text: dict[str, Any] | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None


# --- the request ---------------------------------------------------------------------------------


def _refuse_unsupported(body: ResponsesRequest, tools: list[dict[str, Any]] | None) -> None:
    """What would change the answer and the gateway cannot do is a 400, never silently dropped."""
    if tools:
        kinds = ", ".join(sorted({str(tool.get("type")) for tool in tools}))
        raise GatewayError.invalid(
            f"tools of type {kinds} are not supported on /v1/responses; "
            f"only {openrouter.FUSION_SERVER_TOOL} is",
            "tools",
        )
    if body.background:
        raise GatewayError.invalid("background responses are not supported; send stream: true", "background")
    if body.conversation is not None:
        raise GatewayError.invalid(
            "conversation objects are not supported; continue with previous_response_id", "conversation"
        )
    if body.prompt is not None:
        raise GatewayError.invalid("prompt templates are not supported; send input", "prompt")
    text_format = (body.text or {}).get("format") or {"type": "text"}
    if text_format.get("type") != "text":
        raise GatewayError.invalid(
            f"text.format {text_format.get('type')!r} is not supported; only text answers", "text"
        )


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise GatewayError.invalid(f"{where}: content must be a string or a list of parts", "input")
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise GatewayError.invalid(
                f"{where}.content[{index}]: content of type {kind!r} is not supported; "
                "this gateway takes text (input_text, output_text)",
                "input",
            )
        texts.append(part["text"])
    return "".join(texts)


def input_messages(items: str | list[dict[str, Any]]) -> list[Message]:
    """`input` as chat messages: a string is one user message; a list holds message items (with or
    without `"type": "message"`) of role user, assistant, system or developer, with text content."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not items:
        raise GatewayError.invalid("input is empty: send a string or at least one message", "input")
    messages = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        kind = item.get("type", "message")
        if kind != "message":
            raise GatewayError.invalid(
                f"{where}: items of type {kind!r} are not supported; send messages with text", "input"
            )
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise GatewayError.invalid(
                f"{where}: role {item.get('role')!r} is not supported; "
                "use user, assistant, system or developer",
                "input",
            )
        messages.append({"role": role, "content": _content(item.get("content"), where)})
    return messages


def chat_request(
    body: ResponsesRequest, history: list[Message]
) -> tuple[ChatCompletionRequest, list[Message]]:
    """The gateway's canonical request for a Responses request, and the conversation it answers (what a
    later `previous_response_id` continues: `instructions` are not carried over, as OpenAI does)."""
    routed = openrouter.route(body.model, body.fusion, body.plugins, body.tools)
    _refuse_unsupported(body, routed.tools)
    conversation = [*history, *input_messages(body.input)]
    instructions = [{"role": "system", "content": body.instructions}] if body.instructions else []
    fields: dict[str, Any] = {
        "model": routed.model,
        "messages": [*instructions, *conversation],
        "stream": body.stream,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.max_output_tokens,
        "fusion": routed.fusion.model_dump(exclude_none=True) if routed.fusion else None,
    }
    if body.stream and not translate.is_fusion_model(routed.model):
        fields["stream_options"] = {"include_usage": True}  # the provider's usage, in its last chunk
    return ChatCompletionRequest.model_validate(fields), conversation


def previous_response_not_found(response_id: str, ttl_s: float, instance_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"previous response {response_id!r} not found: responses are kept for {ttl_s:g} s, in the memory "
        f"of the gateway instance that answered them (this one is {instance_id!r}); send the conversation "
        "in `input` instead, or keep a conversation on one instance",
        "invalid_request_error",
        "previous_response_not_found",
        param="previous_response_id",
    )


# --- the response --------------------------------------------------------------------------------


def responses_usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    """A chat completion's usage in the Responses shape; `cost` and `server_tool_use`, when there, kept."""
    counted = chat_usage or {}
    input_tokens = int(counted.get("prompt_tokens") or 0)
    output_tokens = int(counted.get("completion_tokens") or 0)
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": int((counted.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int(
                (counted.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
            )
        },
        "total_tokens": int(counted.get("total_tokens") or input_tokens + output_tokens),
    }
    usage.update({key: counted[key] for key in ("cost", "server_tool_use") if key in counted})
    return usage


def _annotations(result: FusedResult, text: str) -> list[dict[str, Any]]:
    """The sources `text` cites, as the Responses API's `url_citation` annotations (flat, unlike chat)."""
    cited = translate.annotations(result.model_copy(update={"answer": text}))
    return [{"type": "url_citation", **note["url_citation"]} for note in cited]


def message_item(
    item_id: str, text: str, status: str = "completed", annotations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [_text_part(text, annotations or [])],
    }


def _text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """What every rendering of one response shares: its ids and what the request asked for."""

    id: str
    created_at: int
    body: ResponsesRequest

    @classmethod
    def start(cls, body: ResponsesRequest, key: str, now: float) -> "ResponseFrame":
        return cls(f"resp_{key}", int(now), body)

    @property
    def message_id(self) -> str:
        return "msg_" + self.id.removeprefix("resp_")

    def render(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": body.model,
            "output": output,
            "parallel_tool_calls": False,
            "previous_response_id": body.previous_response_id,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "tool_choice": body.tool_choice or "auto",
            "tools": body.tools or [],
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "store": body.store,
            "metadata": body.metadata or {},
            "usage": usage,
            **extra,
        }


def fusion_item_id(request_id: str) -> str:
    return f"fusion_{request_id}"


def fused_response(frame: ResponseFrame, result: FusedResult, text: str) -> dict[str, Any]:
    """A fusion's response: OpenRouter's fusion item (the panel, as OpenRouter puts its tool call ahead
    of the answer), then the answer `text`; usage and the `fusion` object as chat completions give
    them."""
    output = [
        openrouter.fusion_output_item(result, fusion_item_id(result.request_id)),
        message_item(frame.message_id, text, annotations=_annotations(result, text)),
    ]
    usage = responses_usage(translate.usage(result))
    return frame.render("completed", output, usage, fusion=translate.fusion_summary(result))


def passthrough_response(frame: ResponseFrame, reply: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A provider's chat completion as a response, and its text."""
    try:
        choice = reply["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise GatewayError(
            502, "the provider's reply has no message", "api_error", "upstream_error"
        ) from error
    incomplete = choice.get("finish_reason") == "length"
    status = "incomplete" if incomplete else "completed"
    output = [message_item(frame.message_id, str(text), status)]
    body = frame.render(status, output, responses_usage(reply.get("usage")))
    if incomplete:
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    return body, str(text)


# --- the stream ----------------------------------------------------------------------------------


@dataclass
class ResponseEvents:
    """One response's server-sent events, numbered in order (OpenAI's Responses streaming events):
    `opening()` until the first text, `delta()` for each piece, then `closing()` or `failure()`.

    `lead` are output items ahead of the message, as they are while the text streams (a fusion's
    `openrouter:fusion` item, in progress); `closing()` gives them whole."""

    frame: ResponseFrame
    lead: list[dict[str, Any]] = field(default_factory=list)
    sequence: int = 0
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.frame.message_id, "output_index": len(self.lead), "content_index": 0}

    def opening(self) -> list[str]:
        started = self.frame.render("in_progress", [])
        message = {**message_item(self.frame.message_id, "", "in_progress"), "content": []}
        return [
            self._event("response.created", response=started),
            self._event("response.in_progress", response=started),
            *(
                self._event("response.output_item.added", output_index=index, item=item)
                for index, item in enumerate([*self.lead, message])
            ),
            self._event("response.content_part.added", **self._where(), part=_text_part("", [])),
        ]

    def progress(self, event: FusionProgress) -> list[str]:
        """A fusion's progress as OpenRouter names it, on its `openrouter:fusion` item: a member's
        answer comes as `panel.delta` (the whole text: members do not stream) then `panel.completed`."""
        where = {"item_id": self.lead[0]["id"], "output_index": 0} if self.lead else {}
        fields = event.model_dump(mode="json", exclude_none=True, exclude={"kind", "schema_version", "event"})
        kind = f"response.fusion_call.{event.event}"
        if event.event == "panel.completed" and event.text:
            delta = self._event(
                "response.fusion_call.panel.delta",
                **where,
                member_index=event.member_index,
                model=event.model,
                delta=event.text,
            )
            return [delta, self._event(kind, **where, **fields)]
        return [self._event(kind, **where, **fields)]

    def fusion_call(self, stage: str) -> str:
        """`response.fusion_call.in_progress` or `.completed`, around the fusion's progress."""
        where = {"item_id": self.lead[0]["id"], "output_index": 0} if self.lead else {}
        return self._event(f"response.fusion_call.{stage}", **where)

    def delta(self, text: str) -> str:
        self.parts.append(text)
        return self._event("response.output_text.delta", **self._where(), delta=text, logprobs=[])

    def closing(
        self,
        usage: dict[str, Any],
        annotations: list[dict[str, Any]] | None = None,
        lead: list[dict[str, Any]] | None = None,
        status: str = "completed",
        **extra: Any,
    ) -> list[str]:
        """The lead items whole (`lead`, in their order), the text's end, then the response."""
        text, notes, done = self.text, annotations or [], lead or []
        item = message_item(self.frame.message_id, text, status, notes)
        events = [
            *(
                self._event("response.output_item.done", output_index=i, item=led)
                for i, led in enumerate(done)
            ),
            self._event("response.output_text.done", **self._where(), text=text, logprobs=[]),
            self._event("response.content_part.done", **self._where(), part=_text_part(text, notes)),
            self._event("response.output_item.done", output_index=len(self.lead), item=item),
        ]
        final = self.frame.render(status, [*done, item], usage, **extra)
        if status == "incomplete":
            final["incomplete_details"] = {"reason": "max_output_tokens"}
            return [*events, self._event("response.incomplete", response=final)]
        return [*events, self._event("response.completed", response=final)]

    def failure(self, error: GatewayError) -> list[str]:
        """An `error` event for clients that watch for it, then `response.failed`, the last event: its
        response carries the error, and the items so far, incomplete."""
        items = [*self.lead, message_item(self.frame.message_id, self.text)] if self.parts else self.lead
        output = [{**item, "status": "incomplete"} for item in items]
        extra = {"fusion": error.fusion} if error.fusion is not None else {}
        failed = self.frame.render("failed", output, **extra)
        failed["error"] = {"code": error.code, "message": error.message}
        return [
            self._event("error", code=error.code, message=error.message, param=error.param),
            self._event("response.failed", response=failed),
        ]


class ChunkReader:
    """A provider's streamed chat completion (OpenAI's chunk format, server-sent events) as its JSON
    chunks. `done` once `data: [DONE]` came."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self.done = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += self._decoder.decode(data).replace("\r\n", "\n")
        *blocks, self._buffer = self._buffer.split("\n\n")
        return self._chunks(blocks)

    def close(self) -> list[dict[str, Any]]:
        """The last event, when the stream ended without a blank line after it."""
        rest, self._buffer = self._buffer + self._decoder.decode(b"", final=True), ""
        return self._chunks([rest])

    def _chunks(self, blocks: list[str]) -> list[dict[str, Any]]:
        chunks = []
        for block in blocks:
            data = "\n".join(
                line.removeprefix("data:").strip() for line in block.split("\n") if line.startswith("data:")
            )
            if not data or self.done:
                continue
            if data == "[DONE]":
                self.done = True
                continue
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as error:
                raise ModelResponseError(f"the provider streamed malformed JSON: {error}") from error
            if isinstance(chunk, dict):
                chunks.append(chunk)
        return chunks


def _chunk_error(chunk: dict[str, Any]) -> GatewayError | None:
    """An error the provider sent in its stream (as OpenRouter does), as the gateway's error."""
    error = chunk.get("error")
    if error is None:
        return None
    message = error.get("message") if isinstance(error, dict) else str(error)
    return GatewayError(502, f"the provider failed mid-stream: {message}", "api_error", "upstream_error")


def _chunk_delta(chunk: dict[str, Any]) -> tuple[str, str | None]:
    """A chunk's text and finish reason."""
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return "", None
    delta = choices[0].get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else ""), choices[0].get("finish_reason")


async def fusion_events(
    updates: AsyncIterator[Update], events: ResponseEvents, keep: Keep
) -> AsyncIterator[str]:
    """A fusion's updates as a response's events; `keep` gets the answer once it is complete."""
    for event in events.opening():
        yield event
    yield events.fusion_call("in_progress")
    async for update in updates:
        if isinstance(update, KeepAlive):
            yield ": keep-alive\n\n"
        elif isinstance(update, Progress):
            for event in events.progress(update.event):
                yield event
        elif isinstance(update, TextDelta):
            yield events.delta(update.text)
        elif isinstance(update, Failed):
            for event in events.failure(update.error):
                yield event
            return
        elif isinstance(update, Finished):
            yield events.fusion_call("completed")
            result = update.result
            closing = events.closing(
                responses_usage(translate.usage(result)),
                _annotations(result, events.text),
                [openrouter.fusion_output_item(result, fusion_item_id(result.request_id))],
                fusion=translate.fusion_summary(result),
            )
            for event in closing:
                yield event
            keep(result.answer or "")
            return


async def _chunks(stream: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    reader = ChunkReader()
    async for piece in stream:
        for chunk in reader.feed(piece):
            yield chunk
        if reader.done:
            return
    for chunk in reader.close():
        yield chunk


async def passthrough_events(
    stream: AsyncIterator[bytes], events: ResponseEvents, keep: Keep
) -> AsyncIterator[str]:
    """A provider's streamed chat completion as a response's events."""
    for event in events.opening():
        yield event
    usage, finish, failure = None, None, None
    try:
        async for chunk in _chunks(stream):
            if failure := _chunk_error(chunk):
                break
            text, finished = _chunk_delta(chunk)
            finish = finished or finish
            usage = chunk["usage"] if isinstance(chunk.get("usage"), dict) else usage
            if text:
                yield events.delta(text)
    except TimeoutError as error:
        failure = GatewayError(504, str(error), "api_error", "upstream_timeout")
    except ModelError as error:
        failure = GatewayError(502, str(error), "api_error", "upstream_error")
    if failure is not None:
        for event in events.failure(failure):
            yield event
        return
    status = "incomplete" if finish == "length" else "completed"
    for event in events.closing(responses_usage(usage), status=status):
        yield event
    keep(events.text)


# --- the routes ----------------------------------------------------------------------------------


class Responses:
    """The Responses API on a gateway: its routes' work, and the store of this instance's responses
    for `previous_response_id`."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        settings = gateway.settings
        self.store = ResponseStore(
            settings.gateway_idempotency_ttl_s, max_bytes=settings.gateway_idempotency_max_bytes
        )

    def history(self, body: ResponsesRequest) -> list[Message]:
        if body.previous_response_id is None:
            return []
        found = self.store.conversation(body.previous_response_id, time.monotonic())
        if found is None:
            raise previous_response_not_found(
                body.previous_response_id, self.store.ttl_s, self.gateway.settings.instance_id
            )
        return found

    def keeper(self, body: ResponsesRequest, frame: ResponseFrame, conversation: list[Message]) -> Keep:
        def keep(answer: str) -> None:
            if body.store:
                self.store.keep(frame.id, conversation, answer, time.monotonic())

        return keep

    async def create(self, body: ResponsesRequest) -> Response:
        chat, conversation = chat_request(body, self.history(body))
        kind = "fusion" if translate.is_fusion_model(chat.model) else "model"
        self.gateway.metrics.requests.labels(kind=kind, stream=str(body.stream).lower()).inc()
        if body.stream:
            return await self.streamed(body, chat, conversation)
        with self.gateway.admitted():
            return await self.plain(body, chat, conversation)

    async def plain(
        self, body: ResponsesRequest, chat: ChatCompletionRequest, conversation: list[Message]
    ) -> Response:
        gateway, now = self.gateway, time.time()
        if translate.is_fusion_model(chat.model):
            result = await gateway.fuse(gateway.fusion_request(chat, stream=False))
            if error := translate.result_error(result):
                raise error
            frame = ResponseFrame.start(body, result.request_id, now)
            answer = result.answer or ""
            rendered = fused_response(frame, result, answer)
        else:
            frame = ResponseFrame.start(body, uuid.uuid4().hex, now)
            rendered, answer = passthrough_response(frame, await gateway.complete(chat))
        self.keeper(body, frame, conversation)(answer)
        return JSONResponse(rendered)

    async def streamed(
        self, body: ResponsesRequest, chat: ChatCompletionRequest, conversation: list[Message]
    ) -> Response:
        """Streams, holding an in-flight slot (and, for a fusion, its reply route) until the stream
        ends, however it ends (see `HeldStream`)."""
        from fusion.gateway.app import HeldStream, release_all  # app.py imports this module

        gateway = self.gateway
        admission = gateway.admitted()
        admission.__enter__()
        release: list[Callable[[], None]] = [lambda: _exit(admission)]
        events: AsyncIterator[str]
        try:
            if translate.is_fusion_model(chat.model):
                # The panel's progress comes as OpenRouter's response.fusion_call.* events.
                request = gateway.fusion_request(chat, stream=True).model_copy(update={"progress": True})
                updates, request_id = await gateway.fusion_updates(request)
                release.append(lambda: gateway.link.forget(request_id))
                frame = ResponseFrame.start(body, request_id, time.time())
                keep = self.keeper(body, frame, conversation)
                started = openrouter.fusion_item_started(fusion_item_id(request_id))
                events = fusion_events(updates, ResponseEvents(frame, [started]), keep)
            else:
                chunks = await gateway.stream_passthrough(chat)
                frame = ResponseFrame.start(body, uuid.uuid4().hex, time.time())
                keep = self.keeper(body, frame, conversation)
                events = passthrough_events(chunks, ResponseEvents(frame), keep)
        except BaseException:
            release_all(release)
            raise
        return HeldStream(events, release)


def _exit(context: Any) -> None:
    context.__exit__(None, None, None)


def responses_routes(gateway: "Gateway") -> APIRouter:
    responses = Responses(gateway)
    router = APIRouter()

    @router.post("/v1/responses", response_model=None)
    async def create_response(body: ResponsesRequest) -> Response:
        return await responses.create(body)

    return router
